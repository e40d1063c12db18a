package schedule

import (
	"context"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
)

// The tick file remembers the last tick across claimers (a restart), and a
// tick is claimed once.
func TestFileClaimer(t *testing.T) {
	ctx := context.Background()
	eng := memory.New(memory.Options{})
	defer eng.Close()
	q, err := eng.Open(ctx, engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tick := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	a := &FileClaimer{Dir: dir, Queue: q}
	if last, err := a.Last(ctx, "s"); err != nil || !last.IsZero() {
		t.Fatalf("Last before any tick = %s, %v", last, err)
	}
	if ok, err := a.Claim(ctx, "s", tick, engines.Message{Body: []byte("x")}); !ok || err != nil {
		t.Fatalf("first claim: %v %v", ok, err)
	}
	b := &FileClaimer{Dir: dir, Queue: q} // the next process
	if ok, err := b.Claim(ctx, "s", tick, engines.Message{Body: []byte("x")}); ok || err != nil {
		t.Fatalf("second claim of the tick: %v %v", ok, err)
	}
	if last, err := b.Last(ctx, "s"); err != nil || !last.Equal(tick) {
		t.Fatalf("Last = %s, %v; want %s", last, err, tick)
	}
	if st, _ := q.Stats(ctx); st.Depth() != 1 {
		t.Fatalf("%d messages, want 1", st.Depth())
	}
}

// EngineClaimer on the memory engine: one message per tick.
func TestEngineClaimerOnMemory(t *testing.T) {
	ctx := context.Background()
	eng := memory.New(memory.Options{})
	defer eng.Close()
	q, err := eng.Open(ctx, engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	c := EngineClaimer{TC: eng, Queue: q}
	tick := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	for i, want := range []bool{true, false} {
		if ok, err := c.Claim(ctx, "s", tick, engines.Message{}); ok != want || err != nil {
			t.Fatalf("claim %d: %v %v", i, ok, err)
		}
	}
	if last, _ := c.Last(ctx, "s"); !last.Equal(tick) {
		t.Fatalf("Last = %s", last)
	}
}
