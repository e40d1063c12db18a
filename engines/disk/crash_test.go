package disk_test

import (
	"os"
	"testing"

	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/engines/enginetest"
)

// The crash cases (a child process SIGKILLed while it produces and
// consumes, or while it holds a lease) are the conformance suite's:
// enginetest re-executes this test binary as the child, which Child runs.
func TestMain(m *testing.M) {
	enginetest.Child(harness(disk.SyncAlways), harness(disk.SyncBatch))
	os.Exit(m.Run())
}

// TestSoakCrashRecovery is the long form of the suite's
// crash_loses_nothing_enqueued case: 40 kills per sync mode.
func TestSoakCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: run with make soak")
	}
	for _, mode := range []disk.SyncMode{disk.SyncAlways, disk.SyncBatch} {
		t.Run("sync="+mode.String(), func(t *testing.T) {
			t.Parallel()
			enginetest.SoakCrash(t, harness(mode), 40)
		})
	}
}
