package dispatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/clock"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/internal/throttle"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// A delivery over the rate limit waits for its token: handled once the
// clock allows, on its first attempt, acked, never nacked or expired.
func TestThrottledDeliveryWaitsWithoutFailing(t *testing.T) {
	clk := clock.NewFake(time.Now())
	th := throttle.New(throttle.Config{Rate: 1.0 / 3600, Burst: 1, Clock: clk}) // one an hour
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result { return plugin.Result{Verdict: engines.Ack} },
		func(c *dispatch.Config) { c.Throttle = th; c.Concurrency = 1 })
	fx.send(t, "first", "second")
	fx.c.Start()
	if s := fx.next(t); s.body != "first" || s.attempt != 1 {
		t.Fatalf("first settled %+v", s)
	}
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if st, ok := fx.c.ThrottleStats(); !ok || st.Waiting != 1 {
		t.Fatalf("throttle stats %+v, %v; want one waiting", st, ok)
	}
	clk.Advance(time.Hour)
	if s := fx.next(t); s.body != "second" || s.attempt != 1 || s.verdict != engines.Ack {
		t.Fatalf("second settled %+v, want acked on attempt 1", s)
	}
	st := fx.c.Stats()
	if st.Nacked != 0 || st.LeaseLost != 0 || st.Acked != 2 {
		t.Fatalf("consumer stats %+v", st)
	}
	if ts, _ := fx.c.ThrottleStats(); ts.Throttled != 1 || ts.ThrottledSeconds != 3600 || ts.Waiting != 0 {
		t.Fatalf("throttle stats %+v", ts)
	}
}

// throttledWait starts a one-worker consumer limited to one delivery an
// hour on a fake clock, sends two messages and returns once the first is
// handled and the second's worker waits for its token.
func throttledWait(t *testing.T) (*fixture, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(time.Now())
	th := throttle.New(throttle.Config{Rate: 1.0 / 3600, Burst: 1, Clock: clk})
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result { return plugin.Result{Verdict: engines.Ack} },
		func(c *dispatch.Config) { c.Throttle = th; c.Concurrency = 1 })
	fx.send(t, "first", "second")
	fx.c.Start()
	fx.next(t)
	if err := clk.BlockUntil(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	return fx, clk
}

// Stopping a consumer whose worker waits on the throttle hands the
// delivery back without a failure.
func TestStopWhileThrottledReleases(t *testing.T) {
	fx, _ := throttledWait(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fx.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(t, fx.q)
	if string(d.Body) != "second" || d.Failures != 0 {
		t.Fatalf("after stop got %q with %d failures, want second with none", d.Body, d.Failures)
	}
}

// Per-key caps hold across a consumer's workers: with four workers and a
// cap of one, two messages of one key are never handled at once.
func TestMaxInFlightPerKeyAcrossWorkers(t *testing.T) {
	th := throttle.New(throttle.Config{MaxInFlightPerKey: 1, ConcurrencyKey: "tenant"})
	inside := make(chan string, 10)
	proceed := make(chan struct{})
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result {
		inside <- string(d.Body)
		<-proceed
		return plugin.Result{Verdict: engines.Ack}
	}, func(c *dispatch.Config) { c.Throttle = th; c.Concurrency = 4; c.Batch = 1 })
	for _, m := range []engines.Message{
		{Body: []byte("a1"), Attributes: map[string]string{"tenant": "a"}},
		{Body: []byte("a2"), Attributes: map[string]string{"tenant": "a"}},
		{Body: []byte("b1"), Attributes: map[string]string{"tenant": "b"}},
	} {
		if err := fx.q.Enqueue(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	// A test that fails must not leave handlers blocked for the fixture's
	// cleanup to wait on forever.
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(proceed) }) })
	fx.c.Start()
	// Workers race for the key: either of a1 and a2 may hold it, and the
	// other must wait for it, while b1 goes straight in.
	first, second := <-inside, <-inside
	got := map[string]bool{first: true, second: true}
	var holder, waiter string
	switch {
	case got["a1"] && got["b1"]:
		holder, waiter = "a1", "a2"
	case got["a2"] && got["b1"]:
		holder, waiter = "a2", "a1"
	default:
		t.Fatalf("first two in the handler: %v, want b1 and one of a1, a2 (the other waits for the key)", got)
	}
	// Wait until the waiter is held by the throttle, then let the first two finish.
	for {
		if st, _ := fx.c.ThrottleStats(); st.Waiting == 1 {
			break
		}
		select {
		case b := <-inside:
			t.Fatalf("%s entered the handler while %s was in it", b, holder)
		case <-time.After(time.Millisecond):
		}
	}
	proceed <- struct{}{}
	proceed <- struct{}{}
	if b := <-inside; b != waiter {
		t.Fatalf("third in the handler %s, want %s", b, waiter)
	}
	release.Do(func() { close(proceed) })
	for range 3 {
		fx.next(t)
	}
}

// A pause ends a throttled wait: the delivery goes back without a failure
// and Pause returns; after Resume it is handled.
func TestPauseEndsAThrottledWait(t *testing.T) {
	fx, clk := throttledWait(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fx.c.Pause(ctx); err != nil {
		t.Fatalf("Pause with a throttled wait: %v", err)
	}
	if st := fx.c.Stats(); st.Released != 1 || st.Nacked != 0 {
		t.Fatalf("stats after pause %+v, want the waiting delivery released", st)
	}
	fx.c.Resume()
	if err := clk.BlockUntil(t.Context(), 1); err != nil { // waiting again for its token
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	if s := fx.next(t); s.body != "second" || s.verdict != engines.Ack {
		t.Fatalf("after resume %+v", s)
	}
}
