package disk

import (
	"context"
	"errors"
	"testing"

	"github.com/qrun-dev/qrun/engines"
)

// TestFailedCommitStopsTheEngine: after a commit fails, every operation
// that needs the disk reports it (the engine cannot know what reached the
// file), and nothing more is written; the file as last committed is what a
// restart finds.
func TestFailedCommitStopsTheEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	e, err := Open(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.Open(ctx, engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, engines.Message{ID: "kept"}); err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected: no space left on device")
	e.fail(injected)
	if err := q.Enqueue(ctx, engines.Message{ID: "lost"}); !errors.Is(err, injected) {
		t.Fatalf("Enqueue after a failed commit: %v, want the failure", err)
	}
	if err := ds[0].Ack(ctx); !errors.Is(err, injected) {
		t.Fatalf("Ack after a failed commit: %v, want the failure", err)
	}
	if err := e.Close(); !errors.Is(err, injected) {
		t.Fatalf("Close after a failed commit: %v, want the failure", err)
	}
	e, err = Open(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	q, err = e.Open(ctx, engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err = engines.ReceiveN(ctx, q, 2)
	if err != nil || len(ds) != 1 || ds[0].ID != "kept" || ds[0].Failures != 1 {
		t.Fatalf("after restarting: %d deliveries (%v), want only %q, its lease counted as a failure", len(ds), err, "kept")
	}
}
