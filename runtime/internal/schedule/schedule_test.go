package schedule

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/clock"
)

// memClaimer records claims as an engine would and signals each claim.
type memClaimer struct {
	mu     sync.Mutex
	last   map[string]time.Time
	fired  []time.Time
	claims chan time.Time
}

func newMemClaimer() *memClaimer {
	return &memClaimer{last: map[string]time.Time{}, claims: make(chan time.Time, 100)}
}

func (m *memClaimer) Claim(ctx context.Context, s string, tick time.Time, msg engines.Message) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ok := tick.After(m.last[s])
	if ok {
		m.last[s] = tick
		m.fired = append(m.fired, tick)
	}
	if msg.Attributes[AttrSchedule] != s || msg.Attributes[AttrTick] != tick.UTC().Format(time.RFC3339Nano) {
		return false, fmt.Errorf("message attributes %v for tick %s of %s", msg.Attributes, tick, s)
	}
	m.claims <- tick
	return ok, nil
}

func (m *memClaimer) Last(ctx context.Context, s string) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[s], nil
}

func (m *memClaimer) firedTicks() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Time(nil), m.fired...)
}

func every(t *testing.T, d time.Duration) Timing {
	tm, err := Every(d)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func waitClaim(t *testing.T, c *memClaimer) time.Time {
	t.Helper()
	select {
	case tick := <-c.claims:
		return tick
	case <-time.After(30 * time.Second):
		t.Fatal("no claim")
		return time.Time{}
	}
}

var t0 = time.Date(2026, 6, 1, 12, 0, 30, 0, time.UTC)

func TestSchedulerFiresEachTickOnce(t *testing.T) {
	ctx := t.Context()
	clk := clock.NewFake(t0)
	c := newMemClaimer()
	s := New(clk, nil)
	defer s.Stop()
	s.Set([]Job{{Spec: Spec{Name: "m", Queue: "q", Timing: every(t, time.Minute)}, Claimer: c}})
	// Never fired before: nothing at start, the first tick at 12:01.
	for i := 1; i <= 3; i++ {
		if err := clk.BlockUntil(ctx, 1); err != nil {
			t.Fatal(err)
		}
		next, _ := clk.Next()
		clk.Set(next)
		want := time.Date(2026, 6, 1, 12, i, 0, 0, time.UTC)
		if got := waitClaim(t, c); !got.Equal(want) {
			t.Fatalf("tick %d = %s, want %s", i, got, want)
		}
	}
	// The claim reaches the claimer before the job counts it: the status
	// is complete once the job sleeps until its next tick.
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if st := s.List(); len(st) != 1 || st[0].Fired != 3 || !st[0].LastTick.Equal(time.Date(2026, 6, 1, 12, 3, 0, 0, time.UTC)) {
		t.Fatalf("status %+v", st)
	}
}

// A clock that jumps over several ticks fires the latest once.
func TestSchedulerCollapsesTicksAfterAJump(t *testing.T) {
	ctx := t.Context()
	clk := clock.NewFake(t0)
	c := newMemClaimer()
	s := New(clk, nil)
	defer s.Stop()
	s.Set([]Job{{Spec: Spec{Name: "m", Timing: every(t, time.Minute)}, Claimer: c}})
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Minute) // 12:10:30
	if got, want := waitClaim(t, c), time.Date(2026, 6, 1, 12, 10, 0, 0, time.UTC); !got.Equal(want) {
		t.Fatalf("fired %s, want %s", got, want)
	}
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := len(c.firedTicks()); n != 1 {
		t.Fatalf("%d ticks fired, want 1", n)
	}
}

// A restart after downtime fires the latest missed tick once, or skips it.
func TestSchedulerMissedTicks(t *testing.T) {
	for _, skip := range []bool{false, true} {
		ctx := t.Context()
		clk := clock.NewFake(t0)
		c := newMemClaimer()
		c.last["m"] = time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC) // last fired at 9:00; down since
		s := New(clk, nil)
		s.Set([]Job{{Spec: Spec{Name: "m", Timing: every(t, time.Hour), SkipMissed: skip}, Claimer: c}})
		if err := clk.BlockUntil(ctx, 1); err != nil { // asleep until 13:00
			t.Fatal(err)
		}
		s.Stop()
		got := c.firedTicks()
		switch {
		case skip && len(got) != 0:
			t.Errorf("skip: fired %v", got)
		case !skip && (len(got) != 1 || !got[0].Equal(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))):
			t.Errorf("fire: fired %v, want the 12:00 tick once", got)
		}
		if next := s.List(); len(next) != 1 || !next[0].Next.Equal(time.Date(2026, 6, 1, 13, 0, 0, 0, time.UTC)) {
			t.Errorf("status %+v", next)
		}
	}
}

// Two schedulers sharing one claimer (two nodes on one engine) fire each
// tick once between them.
func TestSchedulerTwoNodesOneClaim(t *testing.T) {
	ctx := t.Context()
	clk := clock.NewFake(t0)
	c := newMemClaimer()
	a, b := New(clk, nil), New(clk, nil)
	defer a.Stop()
	defer b.Stop()
	spec := Spec{Name: "m", Timing: every(t, time.Minute)}
	a.Set([]Job{{Spec: spec, Claimer: c}})
	b.Set([]Job{{Spec: spec, Claimer: c}})
	for range 5 {
		if err := clk.BlockUntil(ctx, 2); err != nil {
			t.Fatal(err)
		}
		next, _ := clk.Next()
		clk.Set(next)
		waitClaim(t, c)
		waitClaim(t, c)
	}
	// A job counts its claim's outcome after Claim returns and before it
	// sleeps again: wait for both to sleep, then read the counts.
	if err := clk.BlockUntil(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got := c.firedTicks(); len(got) != 5 {
		t.Fatalf("fired %d ticks, want 5: %v", len(got), got)
	}
	sa, sb := a.List()[0], b.List()[0]
	if sa.Fired+sb.Fired != 5 || sa.Skipped+sb.Skipped != 5 {
		t.Fatalf("a %+v b %+v", sa, sb)
	}
}

// After Close, Set starts nothing.
func TestSchedulerClosedStartsNothing(t *testing.T) {
	clk := clock.NewFake(t0)
	s := New(clk, nil)
	s.Close()
	s.Set([]Job{{Spec: Spec{Name: "m", Timing: every(t, time.Minute)}, Claimer: newMemClaimer()}})
	if n := len(s.List()); n != 0 {
		t.Fatalf("%d jobs after Close", n)
	}
}
