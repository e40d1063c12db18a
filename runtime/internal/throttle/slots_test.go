package throttle

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/internal/clock"
)

// sharedSlots stands in for an engine's slots shared by every node
// (engines.SlotKeeper): n per key.
type sharedSlots struct {
	mu   sync.Mutex
	n    int
	held map[string]int
	fail error // returned by the next take, once
}

func (s *sharedSlots) take(_ context.Context, key string) (func(), bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail; err != nil {
		s.fail = nil
		return nil, false, err
	}
	if s.held[key] >= s.n {
		return nil, false, nil
	}
	s.held[key]++
	return sync.OnceFunc(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.held[key]--
	}), true, nil
}

func (s *sharedSlots) inUse(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[key]
}

func newShared(n int) *sharedSlots { return &sharedSlots{n: n, held: map[string]int{}} }

// Two nodes sharing one slot per key: the second waits, its lease kept,
// and takes the slot at its next poll after the first releases it.
func TestSharedSlotHoldsTwoNodes(t *testing.T) {
	clk := clock.NewFake(t0)
	sh := newShared(1)
	cfg := Config{MaxInFlightPerKey: 1, ConcurrencyKey: "acct", Slot: sh.take, SlotPoll: time.Second, Clock: clk}
	a, b := New(cfg), New(cfg)
	k := map[string]string{"acct": "x"}

	relA := mustAdmitNow(t, a, k)
	mustAdmitNow(t, b, map[string]string{"acct": "y"})() // another key is free
	var kept int
	ch := admitAsync(t.Context(), b, k, func(time.Time) time.Duration { kept++; return 0 })
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Waiting != 1 {
		t.Fatalf("waiting %d, want 1", st.Waiting)
	}
	clk.Advance(time.Second) // polls again: still held
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if !pending(ch) {
		t.Fatal("admitted while the other node holds the key's slot")
	}
	relA()
	if n := sh.inUse("x"); n != 0 {
		t.Fatalf("%d shared slots held after the release", n)
	}
	clk.Advance(time.Second)
	r := got(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if kept < 2 {
		t.Fatalf("keep called %d times, want once per pause", kept)
	}
	r.release()
	r.release() // once only
	if n := sh.inUse("x"); n != 0 {
		t.Fatalf("%d shared slots held after the release", n)
	}
	if st := b.Stats(); st.Keys != 0 || st.Waiting != 0 {
		t.Fatalf("stats %+v, want nothing held", st)
	}
}

// A local delivery of the key ending wakes a delivery waiting for the
// key's shared slot at once, without waiting for the poll.
func TestSharedSlotLocalReleaseWakes(t *testing.T) {
	clk := clock.NewFake(t0)
	sh := newShared(1)
	th := New(Config{MaxInFlightPerKey: 2, ConcurrencyKey: "acct", Slot: sh.take, SlotPoll: time.Hour, Clock: clk})
	k := map[string]string{"acct": "x"}
	rel := mustAdmitNow(t, th, k)
	ch := admitAsync(t.Context(), th, k, nil)
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	rel()
	gotAdmitted(t, ch)()
}

// A failed take is counted and retried after a second; the delivery
// waits rather than running without its slot.
func TestSharedSlotTakeErrorRetries(t *testing.T) {
	clk := clock.NewFake(t0)
	sh := newShared(1)
	sh.fail = errors.New("database away")
	th := New(Config{MaxInFlightPerKey: 1, ConcurrencyKey: "acct", Slot: sh.take, SlotPoll: time.Hour, Clock: clk})
	ch := admitAsync(t.Context(), th, map[string]string{"acct": "x"}, nil)
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if st := th.Stats(); st.TakeErrors != 1 {
		t.Fatalf("take errors %d, want 1", st.TakeErrors)
	}
	if d, ok := clk.Next(); !ok || d.Sub(t0) != time.Second {
		t.Fatalf("retry at %v, want a second after the failure", d)
	}
	clk.Advance(time.Second)
	gotAdmitted(t, ch)()
}

// A wait for a shared slot ended by its context holds nothing: neither the
// local place nor a shared slot.
func TestSharedSlotCancelledHoldsNothing(t *testing.T) {
	clk := clock.NewFake(t0)
	sh := newShared(1)
	cfg := Config{MaxInFlightPerKey: 1, ConcurrencyKey: "acct", Slot: sh.take, Clock: clk}
	a, b := New(cfg), New(cfg)
	k := map[string]string{"acct": "x"}
	rel := mustAdmitNow(t, a, k)
	ctx, cancel := context.WithCancel(t.Context())
	ch := admitAsync(ctx, b, k, nil)
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if r := got(t, ch); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", r.err)
	}
	if st := b.Stats(); st.Keys != 0 {
		t.Fatalf("%d keys held after a cancelled wait", st.Keys)
	}
	rel()
	if n := sh.inUse("x"); n != 0 {
		t.Fatalf("%d shared slots held", n)
	}
	mustAdmitNow(t, b, k)()
}

// Without SlotPoll a delivery waiting for a shared slot asks again after
// DefaultSlotPoll, 100 ms (docs/schedules.md).
func TestSharedSlotDefaultPoll(t *testing.T) {
	clk := clock.NewFake(t0)
	sh := newShared(1)
	cfg := Config{MaxInFlightPerKey: 1, ConcurrencyKey: "acct", Slot: sh.take, Clock: clk}
	a, b := New(cfg), New(cfg)
	k := map[string]string{"acct": "x"}
	rel := mustAdmitNow(t, a, k)
	ch := admitAsync(t.Context(), b, k, nil)
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if next, ok := clk.Next(); !ok || next.Sub(t0) != 100*time.Millisecond {
		t.Fatalf("next try at %v, want 100ms after the first", next.Sub(t0))
	}
	rel()
	clk.Advance(100 * time.Millisecond)
	gotAdmitted(t, ch)()
}
