package enginetest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Schedule ticks (engines.TickClaimer): a tick is claimed once, its record
// and message are stored together, and both survive a restart and, on a
// durable engine, a SIGKILL at any moment.

// tickEpoch is tick 0 of the ticks the cases claim; tick n is n seconds on.
var tickEpoch = time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC)

func tickAt(n int) time.Time { return tickEpoch.Add(time.Duration(n) * time.Second) }

func tickMsg(n int) engines.Message {
	id := "tick-" + strconv.Itoa(n)
	return engines.Message{ID: id, Body: []byte(id)}
}

func (s *storage) tickClaimer() engines.TickClaimer {
	s.t.Helper()
	tc, ok := s.e.(engines.TickClaimer)
	if !ok {
		s.t.Skip("engine does not implement engines.TickClaimer: the runtime records its ticks in a file")
	}
	return tc
}

func (s *storage) claim(tc engines.TickClaimer, q engines.Queue, schedule string, n int) bool {
	s.t.Helper()
	ok, err := tc.ClaimTick(s.ctx(wait), q, schedule, tickAt(n), tickMsg(n))
	if err != nil {
		s.t.Fatalf("ClaimTick %d: %v", n, err)
	}
	return ok
}

func (s *storage) lastTick(tc engines.TickClaimer, schedule string) time.Time {
	s.t.Helper()
	t, err := tc.LastTick(s.ctx(wait), schedule)
	if err != nil {
		s.t.Fatalf("LastTick: %v", err)
	}
	return t
}

// testTicksClaimedOnce: a tick enqueues once, an earlier tick never, racing
// claims of one tick enqueue once between them, and a restart remembers.
func testTicksClaimedOnce(t *testing.T, s *storage) {
	s.start()
	tc := s.tickClaimer()
	q := s.open(engines.QueueSpec{Name: s.name()})
	if last := s.lastTick(tc, "nightly"); !last.IsZero() {
		t.Fatalf("LastTick before any claim = %s, want zero", last)
	}
	if !s.claim(tc, q, "nightly", 2) {
		t.Fatal("first claim of tick 2 refused")
	}
	if s.claim(tc, q, "nightly", 2) || s.claim(tc, q, "nightly", 1) {
		t.Fatal("tick 2 again, or an earlier tick, claimed")
	}
	if !s.claim(tc, q, "other", 1) {
		t.Fatal("another schedule's tick refused")
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ok, err := tc.ClaimTick(s.ctx(wait), q, "nightly", tickAt(3), tickMsg(3))
			if err != nil {
				t.Errorf("racing ClaimTick: %v", err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d of 8 racing claims of one tick won, want 1", wins.Load())
	}
	if got := s.lastTick(tc, "nightly"); !got.Equal(tickAt(3)) {
		t.Fatalf("LastTick = %s, want %s", got, tickAt(3))
	}
	ds := s.receiveN(q, 3, wait)
	if got := strings.Join(bodies(ds), ","); got != "tick-2,tick-1,tick-3" {
		t.Fatalf("queue holds %s, want tick-2,tick-1,tick-3", got)
	}
	if s.r == nil {
		return
	}
	s.stop()
	s.start()
	tc = s.tickClaimer()
	q = s.open(engines.QueueSpec{Name: q.Name()})
	if got := s.lastTick(tc, "nightly"); !got.Equal(tickAt(3)) {
		t.Fatalf("LastTick after a restart = %s, want %s", got, tickAt(3))
	}
	if s.claim(tc, q, "nightly", 3) {
		t.Fatal("tick 3 claimed again after a restart")
	}
}

// testCrashTicksExactlyOnce SIGKILLs a child claiming tick after tick and
// checks, from a fresh engine, that the queue holds every tick up to the
// last one recorded, each once, and nothing after it: the record and the
// message were stored together. Three kills, each run continuing from the
// last tick.
func testCrashTicksExactlyOnce(t *testing.T, s *storage) {
	s.needCrash()
	s.start()
	s.tickClaimer()
	s.stop()
	spec := engines.QueueSpec{Name: s.name(), VisibilityTimeout: time.Minute}
	for round := range 3 {
		cmd, out := s.child("ticks", spec, "")
		reported := 0
		for reported < 20*(round+1) {
			l, err := out.ReadString('\n')
			if err != nil {
				t.Fatalf("round %d: reading the child: %v", round, err)
			}
			if n, ok := strings.CutPrefix(strings.TrimSpace(l), "T "); ok {
				reported, _ = strconv.Atoi(n)
			}
		}
		s.kill(cmd, out, fmt.Sprintf("round %d", round), func(l string) {
			if n, ok := strings.CutPrefix(strings.TrimSpace(l), "T "); ok {
				reported, _ = strconv.Atoi(n)
			}
		})
		s.start()
		tc := s.tickClaimer()
		last := s.lastTick(tc, "crash")
		n := int(last.Sub(tickEpoch) / time.Second)
		if n < reported {
			t.Fatalf("round %d: last tick %d, but the child reported claiming %d", round, n, reported)
		}
		q := s.open(engines.QueueSpec{Name: spec.Name})
		st, err := q.Stats(s.ctx(wait))
		if err != nil {
			t.Fatal(err)
		}
		if int(st.Depth()) != n {
			t.Fatalf("round %d: last tick %d but %d messages stored", round, n, st.Depth())
		}
		s.stop()
	}
	// Every message once, in tick order.
	s.start()
	q := s.open(engines.QueueSpec{Name: spec.Name})
	st, _ := q.Stats(s.ctx(wait))
	ds := s.receiveN(q, int(st.Depth()), wait)
	for i := range ds {
		if want := "tick-" + strconv.Itoa(i+1); ds[i].ID != want {
			t.Fatalf("message %d is %s, want %s", i, ds[i].ID, want)
		}
	}
}

// childTicks claims tick after tick of schedule "crash", from the one after
// the last claimed, and reports "T n" after each claim returned.
func childTicks(ctx context.Context, e engines.Engine, q engines.Queue) error {
	tc, ok := e.(engines.TickClaimer)
	if !ok {
		return fmt.Errorf("engine is no TickClaimer")
	}
	last, err := tc.LastTick(ctx, "crash")
	if err != nil {
		return err
	}
	for n := int(last.Sub(tickEpoch)/time.Second) + 1; ; n++ {
		if last.IsZero() && n <= 0 {
			n = 1
		}
		ok, err := tc.ClaimTick(ctx, q, "crash", tickAt(n), tickMsg(n))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("tick %d refused", n)
		}
		fmt.Printf("T %d\n", n)
	}
}
