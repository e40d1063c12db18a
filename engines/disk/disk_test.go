package disk_test

import (
	"context"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/engines/enginetest"
)

func harness(mode disk.SyncMode) enginetest.Harness {
	return enginetest.Harness{New: func(t testing.TB) engines.Engine {
		e, err := disk.Open(context.Background(), disk.Options{Dir: t.TempDir(), Sync: mode})
		if err != nil {
			t.Fatalf("disk.Open: %v", err)
		}
		return e
	}}
}

func TestConformance(t *testing.T) {
	t.Run("sync=always", func(t *testing.T) { enginetest.Run(t, harness(disk.SyncAlways)) })
	t.Run("sync=batch", func(t *testing.T) { enginetest.Run(t, harness(disk.SyncBatch)) })
}
