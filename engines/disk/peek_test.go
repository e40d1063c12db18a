package disk_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/engines/enginetest"
)

// scan pages through q, max messages a page, and returns their bodies.
func scan(t *testing.T, q engines.Queue, max int, inFlight bool) []string {
	t.Helper()
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10_000 {
			t.Fatal("scan does not end")
		}
		pg, err := q.(engines.Peeker).PeekPage(context.Background(), engines.PeekOptions{Max: max, After: after, InFlight: inFlight})
		if err != nil {
			t.Fatal(err)
		}
		if len(pg.Messages) > max {
			t.Fatalf("page of %d messages, max %d", len(pg.Messages), max)
		}
		for _, m := range pg.Messages {
			got = append(got, string(m.Body))
		}
		if after = pg.Next; after == "" {
			return got
		}
	}
}

func bodies(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

// TestPeekPageScan: a paged scan returns every message in the queue once,
// in enqueue order, past acked ones (stale entries of the seq list, and
// enough of them to be trimmed), leased ones only when asked, and the same
// after a restart rebuilt the list from the file.
func TestPeekPageScan(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	dir := t.TempDir()
	e := openEngine(t, dir)
	q := openQueue(t, e, engines.QueueSpec{Name: "q"})
	enqueue := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := q.Enqueue(ctx, engines.Message{Body: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueue(0, 300)
	ds, err := engines.ReceiveN(ctx, q, 250)
	if err != nil || len(ds) != 250 {
		t.Fatalf("received %d, %v", len(ds), err)
	}
	for _, d := range ds[:200] {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	enqueue(300, 350) // trims the 200 stale entries
	want := bodies(250, 350)
	if got := scan(t, q, 7, false); !slices.Equal(got, want) {
		t.Fatalf("scan without in-flight: %d messages %v..., want %d", len(got), got[:min(len(got), 10)], len(want))
	}
	want = bodies(200, 350)
	if got := scan(t, q, 7, true); !slices.Equal(got, want) {
		t.Fatalf("scan with in-flight: %d messages %v..., want %d", len(got), got[:min(len(got), 10)], len(want))
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	defer e.Close()
	q = openQueue(t, e, engines.QueueSpec{Name: "q"})
	// The 50 leased when the engine closed are back, and waiting again.
	if got := scan(t, q, 100, false); !slices.Equal(got, want) {
		t.Fatalf("scan after the restart: %d messages %v..., want %d", len(got), got[:min(len(got), 10)], len(want))
	}
}

// BenchmarkPeekPageScan: the cost of a page of a paged scan, for queues of
// growing length (see enginetest.BenchPeekScan).
func BenchmarkPeekPageScan(b *testing.B) {
	enginetest.BenchPeekScan(b, func(b *testing.B) engines.Queue {
		ctx := context.Background()
		e, err := disk.Open(ctx, disk.Options{Dir: b.TempDir(), Sync: disk.SyncBatch})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = e.Close() })
		q, err := e.Open(ctx, engines.QueueSpec{Name: "q"})
		if err != nil {
			b.Fatal(err)
		}
		return q
	})
}
