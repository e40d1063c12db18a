package memory

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/qrun-dev/qrun/engines"
)

// newQueueHandle opens queue "q" on an engine that closes with the test.
func newQueueHandle(t *testing.T) engines.Queue {
	t.Helper()
	e := New(Options{})
	t.Cleanup(func() { _ = e.Close() })
	h, err := e.Open(context.Background(), engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestPeekPageAcrossRecycling: records acked, some recycled under new
// sequence numbers, leave stale entries in the seq list; a paged scan skips
// them and returns every message in the queue once, in enqueue order.
func TestPeekPageAcrossRecycling(t *testing.T) {
	ctx := context.Background()
	h := newQueueHandle(t)
	body := func(i int) engines.Message { return engines.Message{Body: []byte(fmt.Sprint(i))} }
	var want []string
	enqueue := func(from, to int) {
		for i := from; i < to; i++ {
			if err := h.Enqueue(ctx, body(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueue(0, 300)
	// Ack the first 100: their records go to the free list, their entries
	// stay (too few to trim).
	ds, err := engines.ReceiveN(ctx, h, 100)
	if err != nil || len(ds) != 100 {
		t.Fatalf("received %d, %v", len(ds), err)
	}
	for _, d := range ds {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	enqueue(300, 350) // reuses half of those records under new seqs
	for i := 100; i < 350; i++ {
		want = append(want, fmt.Sprint(i))
	}
	q := h.(*handle).q
	q.mu.Lock()
	n, depth := q.bySeq.Len(), q.depth()
	q.mu.Unlock()
	if n != 350 || n > 2*depth {
		t.Errorf("seq list holds %d entries for %d messages, want all 350 (stale ones untrimmed) and at most twice as many", n, depth)
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > len(want) {
			t.Fatal("scan does not end")
		}
		pg, err := h.(engines.Peeker).PeekPage(ctx, engines.PeekOptions{Max: 7, After: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range pg.Messages {
			got = append(got, string(m.Body))
		}
		if after = pg.Next; after == "" {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("scan returned %d messages %v..., want the %d in the queue in enqueue order", len(got), got[:min(len(got), 10)], len(want))
	}
}

// TestSeqLogTrim: once stale entries are half the list, the next insert
// drops them, keeping the live ones in order.
func TestSeqLogTrim(t *testing.T) {
	ctx := context.Background()
	h := newQueueHandle(t)
	for i := range 1000 {
		if err := h.Enqueue(ctx, engines.Message{Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := engines.ReceiveN(ctx, h, 900)
	if err != nil || len(ds) != 900 {
		t.Fatalf("received %d, %v", len(ds), err)
	}
	for _, d := range ds {
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Enqueue(ctx, engines.Message{Body: []byte("1000")}); err != nil {
		t.Fatal(err)
	}
	q := h.(*handle).q
	q.mu.Lock()
	defer q.mu.Unlock()
	es := q.bySeq.After(0)
	if len(es) != 101 {
		t.Fatalf("seq list holds %d entries for 101 messages", len(es))
	}
	for i, x := range es {
		if !live(x) || (i > 0 && x.Seq <= es[i-1].Seq) {
			t.Fatalf("entry %d: seq %d live %v after the trim", i, x.Seq, live(x))
		}
	}
}
