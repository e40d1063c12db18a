package throttle

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/internal/clock"
)

var t0 = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

type admitted struct {
	release func()
	err     error
}

// admitAsync starts an Admit and returns where its result arrives.
func admitAsync(ctx context.Context, th *Throttle, attrs map[string]string, keep Keep) <-chan admitted {
	ch := make(chan admitted, 1)
	go func() {
		r, err := th.Admit(ctx, attrs, keep)
		ch <- admitted{r, err}
	}()
	return ch
}

func mustAdmitNow(t *testing.T, th *Throttle, attrs map[string]string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := admitAsync(ctx, th, attrs, nil)
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatal(a.err)
		}
		return a.release
	case <-time.After(30 * time.Second):
		t.Fatalf("Admit(%v) waited; want it admitted at once", attrs)
		return nil
	}
}

func got(t *testing.T, ch <-chan admitted) admitted {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("Admit did not return")
		return admitted{}
	}
}

// gotAdmitted waits for ch's Admit, fails the test on its error and
// returns its release.
func gotAdmitted(t *testing.T, ch <-chan admitted) func() {
	t.Helper()
	a := got(t, ch)
	if a.err != nil {
		t.Fatal(a.err)
	}
	return a.release
}

func pending(ch <-chan admitted) bool {
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

func TestRateLimitWaitsForATokenNotAFailure(t *testing.T) {
	clk := clock.NewFake(t0)
	th := New(Config{Rate: 1, Burst: 2, Clock: clk})
	mustAdmitNow(t, th, nil)
	mustAdmitNow(t, th, nil)
	ch := admitAsync(t.Context(), th, nil, nil)
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if st := th.Stats(); st.Waiting != 1 {
		t.Fatalf("waiting %d, want 1", st.Waiting)
	}
	clk.Advance(999 * time.Millisecond)
	if !pending(ch) {
		t.Fatal("admitted before its token")
	}
	clk.Advance(time.Millisecond)
	if a := got(t, ch); a.err != nil {
		t.Fatal(a.err)
	}
	st := th.Stats()
	if st.Waiting != 0 || st.Throttled != 1 || st.ThrottledSeconds != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// The keep callback runs before each pause and bounds it, so a wait far
// longer than a lease keeps extending it.
func TestWaitKeepsTheLeaseAlive(t *testing.T) {
	clk := clock.NewFake(t0)
	th := New(Config{Rate: 1.0 / 60, Burst: 1, Clock: clk}) // one a minute
	mustAdmitNow(t, th, nil)
	keeps := make(chan time.Time, 100)
	ch := admitAsync(t.Context(), th, nil, func(now time.Time) time.Duration {
		keeps <- now
		return 10 * time.Second
	})
	for i := range 6 {
		if err := clk.BlockUntil(t.Context(), 1); err != nil {
			t.Fatal(err)
		}
		if now := <-keeps; !now.Equal(t0.Add(time.Duration(i) * 10 * time.Second)) {
			t.Fatalf("keep %d at %s", i, now)
		}
		clk.Advance(10 * time.Second)
	}
	if a := got(t, ch); a.err != nil {
		t.Fatal(a.err)
	}
}

func TestRatePerKey(t *testing.T) {
	clk := clock.NewFake(t0)
	th := New(Config{Rate: 1, Burst: 1, RateKey: "tenant", Clock: clk})
	a, b := map[string]string{"tenant": "a"}, map[string]string{"tenant": "b"}
	mustAdmitNow(t, th, a)
	ch := admitAsync(t.Context(), th, a, nil)
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	// Tenant a is out of tokens; b is not held back by it.
	mustAdmitNow(t, th, b)
	clk.Advance(time.Second)
	got(t, ch)
}

// Keys seen once are forgotten once their buckets are full again, so a
// stream of distinct keys holds memory for the keys of the last
// burst/rate, not for every key ever seen.
func TestManyKeysDoNotLeak(t *testing.T) {
	clk := clock.NewFake(t0)
	th := New(Config{Rate: 10, Burst: 5, RateKey: "k", Clock: clk}) // full again 0.5s after use
	const keys = 100_000
	for i := range keys {
		if i%1000 == 0 {
			clk.Advance(time.Second)
		}
		r, err := th.Admit(t.Context(), map[string]string{"k": fmt.Sprint(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		r()
	}
	if n := th.Stats().Keys; n > 4*minSweep {
		t.Fatalf("%d keys held after %d distinct keys, each idle after 0.5s", n, keys)
	}
}

func TestMaxInFlightPerKey(t *testing.T) {
	clk := clock.NewFake(t0)
	th := New(Config{MaxInFlightPerKey: 2, ConcurrencyKey: "tenant", Clock: clk})
	a := map[string]string{"tenant": "a"}
	r1 := mustAdmitNow(t, th, a)
	r2 := mustAdmitNow(t, th, a)
	ch := admitAsync(t.Context(), th, a, nil)
	mustAdmitNow(t, th, map[string]string{"tenant": "b"})() // another key is free
	if !pending(ch) {
		t.Fatal("third delivery of key a admitted with two in flight")
	}
	r1()
	r1() // a second release is a no-op
	r3 := got(t, ch).release
	ch4 := admitAsync(t.Context(), th, a, nil)
	if !pending(ch4) { // two in flight again (r2, r3)
		t.Fatal("fourth delivery of key a admitted with two in flight")
	}
	r2()
	r4 := got(t, ch4).release
	r3()
	r4()
	if n := th.Stats().Keys; n != 0 {
		t.Fatalf("%d keys held with nothing in flight", n)
	}
}

// Many goroutines over few keys never exceed the cap, and every one gets
// through.
func TestMaxInFlightPerKeyUnderContention(t *testing.T) {
	th := New(Config{MaxInFlightPerKey: 3, ConcurrencyKey: "k"})
	var mu sync.Mutex
	inFlight := map[string]int{}
	done := make(chan error, 200)
	for i := range 200 {
		go func() {
			key := fmt.Sprint(i % 4)
			r, err := th.Admit(t.Context(), map[string]string{"k": key}, nil)
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			inFlight[key]++
			n := inFlight[key]
			mu.Unlock()
			runtime.Gosched()
			mu.Lock()
			inFlight[key]--
			mu.Unlock()
			r()
			if n > 3 {
				done <- fmt.Errorf("key %s had %d in flight", key, n)
				return
			}
			done <- nil
		}()
	}
	for range 200 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := th.Stats().Keys; n != 0 {
		t.Fatalf("%d keys held after all released", n)
	}
}

// A wait that ends with its context holds nothing: the token goes back and
// the place is freed.
func TestCancelledWaitHoldsNothing(t *testing.T) {
	clk := clock.NewFake(t0)
	th := New(Config{Rate: 1, Burst: 1, MaxInFlightPerKey: 1, ConcurrencyKey: "k", Clock: clk})
	mustAdmitNow(t, th, map[string]string{"k": "x"})() // spends the token
	ctx, cancel := context.WithCancel(t.Context())
	ch := admitAsync(ctx, th, map[string]string{"k": "y"}, nil)
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if a := got(t, ch); a.err == nil {
		t.Fatal("cancelled Admit succeeded")
	}
	if n := th.Stats().Keys; n != 0 {
		t.Fatalf("%d places held after a cancelled wait", n)
	}
	clk.Advance(time.Second)
	mustAdmitNow(t, th, map[string]string{"k": "z"})
}

func TestNoLimitsIsNil(t *testing.T) {
	if New(Config{}) != nil {
		t.Fatal("a throttle without limits")
	}
}

// sharedBucket is a token bucket on the fake clock standing for the one
// the nodes share in the database.
type sharedBucket struct {
	mu     sync.Mutex
	clk    *clock.Fake
	rate   float64
	burst  float64
	tokens float64
	at     time.Time
	takes  int
}

func (b *sharedBucket) take(_ context.Context, n int) (int, time.Duration, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.takes++
	now := b.clk.Now()
	b.tokens = min(b.burst, b.tokens+b.rate*now.Sub(b.at).Seconds())
	b.at = now
	got := min(n, int(b.tokens))
	b.tokens -= float64(got)
	if got == 0 {
		return 0, time.Duration((1 - b.tokens) / b.rate * float64(time.Second)), nil
	}
	return got, 0, nil
}

// Two nodes drawing on one shared bucket are held to its rate between
// them: over a window they start no more than burst + rate × window.
func TestSharedBucketHoldsTwoNodes(t *testing.T) {
	clk := clock.NewFake(t0)
	b := &sharedBucket{clk: clk, rate: 100, burst: 10, tokens: 10, at: t0}
	nodes := []*Throttle{
		New(Config{Rate: 100, Burst: 10, Take: b.take, Clock: clk}),
		New(Config{Rate: 100, Burst: 10, Take: b.take, Clock: clk}),
	}
	var admitted atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, th := range nodes {
		for range 3 { // three workers per node
			wg.Go(func() {
				for {
					r, err := th.Admit(ctx, nil, nil)
					if err != nil {
						return
					}
					r()
					admitted.Add(1)
				}
			})
		}
	}
	// Ten seconds of fake time in 10ms steps, each once all six workers
	// wait on the clock.
	for range 1000 {
		if err := clk.BlockUntil(t.Context(), 6); err != nil {
			t.Fatal(err)
		}
		clk.Advance(10 * time.Millisecond)
	}
	if err := clk.BlockUntil(t.Context(), 6); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	// 10 s at 100/s plus the burst, and the chunks the nodes hold (5 each).
	if n := admitted.Load(); n > 1000+10 || n < 1000-20 {
		t.Fatalf("%d admitted in 10 s at 100/s with burst 10 across two nodes", n)
	}
}
