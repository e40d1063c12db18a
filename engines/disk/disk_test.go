package disk_test

import (
	"context"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/engines/enginetest"
)

// harness builds engines on a data directory of their own; its Restart
// reopens the directory, in this process or in a crash child.
func harness(mode disk.SyncMode) enginetest.Harness {
	open := func(ctx context.Context, dir string) (engines.Engine, error) {
		return disk.Open(ctx, disk.Options{Dir: dir, Sync: mode})
	}
	return enginetest.Harness{
		Waiting: disk.Waiting,
		New: func(t testing.TB) engines.Engine {
			e, err := open(context.Background(), t.TempDir())
			if err != nil {
				t.Fatalf("disk.Open: %v", err)
			}
			return e
		},
		Restart: &enginetest.Restart{
			Name:    "disk-" + mode.String(),
			Storage: func(t testing.TB) string { return t.TempDir() },
			Open:    open,
			// sync = "batch" trades exactly that: a lease or an Ack that
			// returned may not be on disk yet when the process dies.
			SyncCommits: mode == disk.SyncAlways,
		},
	}
}

func TestConformance(t *testing.T) {
	t.Run("sync=always", func(t *testing.T) { enginetest.Run(t, harness(disk.SyncAlways)) })
	t.Run("sync=batch", func(t *testing.T) { enginetest.Run(t, harness(disk.SyncBatch)) })
}
