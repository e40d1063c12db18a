package dispatch_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

func TestPauseHoldsDeliveriesUntilResume(t *testing.T) {
	t.Parallel()
	var whilePaused atomic.Int64
	var paused atomic.Bool
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result {
		if paused.Load() {
			whilePaused.Add(1)
		}
		return plugin.Result{Verdict: engines.Ack}
	}, nil)
	ctx := context.Background()
	fx.c.Start()
	fx.send(t, "before")
	fx.next(t)

	if err := fx.c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	paused.Store(true)
	if !fx.c.Paused() {
		t.Fatal("Paused() = false after Pause")
	}
	if err := fx.c.Pause(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	fx.send(t, "a", "b", "c")
	// Nothing may settle while paused. Absence cannot be awaited, so the
	// test gives a would-be delivery a generous moment to show up.
	select {
	case s := <-fx.settled:
		t.Fatalf("%q settled while the consumer was paused", s.body)
	case <-time.After(200 * time.Millisecond):
	}
	st, err := fx.q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready != 3 || st.InFlight != 0 {
		t.Fatalf("paused queue: ready %d in flight %d, want 3 and 0", st.Ready, st.InFlight)
	}
	paused.Store(false)
	fx.c.Resume()
	fx.c.Resume() // idempotent
	for range 3 {
		if s := fx.next(t); s.verdict != engines.Ack {
			t.Fatalf("after resume: %v", s)
		}
	}
	if n := whilePaused.Load(); n != 0 {
		t.Fatalf("the handler ran %d times while paused", n)
	}
	if fx.c.Paused() {
		t.Fatal("Paused() = true after Resume")
	}
}

func TestPauseWaitsForTheDeliveryInHand(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result {
		if string(d.Body) == "slow" {
			close(started)
			<-release
		}
		return plugin.Result{Verdict: engines.Ack}
	}, func(c *dispatch.Config) { c.Concurrency = 1 })
	fx.c.Start()
	fx.send(t, "slow")
	<-started
	done := make(chan error, 1)
	go func() { done <- fx.c.Pause(context.Background()) }()
	// Pause cannot return while the handler is blocked on release.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := fx.c.Pause(ctx); err == nil {
		t.Fatal("Pause returned while a delivery was being handled")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := fx.next(t); s.body != "slow" || s.verdict != engines.Ack {
		t.Fatalf("the delivery in hand: %+v, want it acked", s)
	}
}

func TestPauseBeforeStart(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, byBody, nil)
	if err := fx.c.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	fx.c.Start()
	fx.send(t, "ack")
	select {
	case s := <-fx.settled:
		t.Fatalf("%q settled although the consumer was paused before Start", s.body)
	case <-time.After(100 * time.Millisecond):
	}
	fx.c.Resume()
	if s := fx.next(t); s.verdict != engines.Ack {
		t.Fatalf("%+v", s)
	}
}

func TestLatencyHistogramCountsEveryCall(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, byBody, func(c *dispatch.Config) { c.RecordLatency = true })
	fx.c.Start()
	fx.send(t, "ack", "ack", "dead", "requeue-once")
	for range 5 { // requeue-once settles twice
		fx.next(t)
	}
	l := fx.c.Latency()
	if l.Count != 5 || l.Sum <= 0 || len(l.Counts) != len(l.Bounds)+1 {
		t.Fatalf("latency %+v, want 5 calls", l)
	}
	var sum uint64
	for _, n := range l.Counts {
		sum += n
	}
	if sum != 5 {
		t.Fatalf("buckets add up to %d, want 5", sum)
	}

	off := newFixture(t, byBody, nil)
	off.c.Start()
	off.send(t, "ack")
	off.next(t)
	if n := off.c.Latency().Count; n != 0 {
		t.Fatalf("RecordLatency off recorded %d calls", n)
	}
}

func TestFailureLogLinesCarryTheDelivery(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	// Each attempt fails differently, so the rate limiter lets every line
	// through: one line per attempt, no more.
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result {
		return plugin.Result{Verdict: engines.Nack, Err: fmt.Errorf("%w: attempt %d", plugin.ErrTrap, d.Attempt)}
	}, func(c *dispatch.Config) { c.Logger = zap.New(core); c.Name = "logs" })
	fx.c.Start()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := fx.q.Enqueue(context.Background(), engines.Message{ID: "m1", Body: []byte("x"), Attributes: map[string]string{"traceparent": tp}}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		fx.next(t)
	}
	// A failure is logged after its verdict is applied, and the retry may
	// be handled by another worker first: stop the consumer so that every
	// line is written, and read them in attempt order.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fx.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	lines := logs.FilterMessage("handler failed").AllUntimed()
	slices.SortFunc(lines, func(a, b observer.LoggedEntry) int {
		return cmp.Compare(a.ContextMap()["attempt"].(int64), b.ContextMap()["attempt"].(int64))
	})
	if len(lines) != 3 {
		t.Fatalf("%d failure lines for 3 failed attempts, want 3: %v", len(lines), lines)
	}
	for i, l := range lines {
		m := l.ContextMap()
		want := map[string]any{"consumer": "logs", "queue": "q", "message_id": "m1", "attempt": int64(i + 1),
			"verdict": "nack", "traceparent": tp, "error": fmt.Sprintf("%v: attempt %d", plugin.ErrTrap, i+1)}
		for k, v := range want {
			if fmt.Sprint(m[k]) != fmt.Sprint(v) {
				t.Errorf("line %d: %s = %v, want %v (%v)", i, k, m[k], v, m)
			}
		}
	}
	// Recent errors are kept in the order they were recorded, after each
	// verdict was applied: like the log lines, attempt 2's record may come
	// after attempt 3's when another worker handled the retry first.
	rec := fx.c.RecentErrors()
	attempts := make([]int, 0, len(rec))
	for _, r := range rec {
		if r.MessageID != "m1" || r.Kind != "handler" {
			t.Fatalf("recent error %+v, want a handler error of m1", r)
		}
		attempts = append(attempts, r.Attempt)
	}
	slices.Sort(attempts)
	if !slices.Equal(attempts, []int{1, 2, 3}) {
		t.Fatalf("recent errors %+v, want one per attempt 1..3", rec)
	}
}

func TestIdenticalFailuresAreRateLimited(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	fx := newFixture(t, byBody, func(c *dispatch.Config) { c.Logger = zap.New(core) })
	fx.c.Start()
	bodies := make([]string, 20)
	for i := range bodies {
		bodies[i] = "dead"
	}
	fx.send(t, bodies...)
	for range bodies {
		fx.next(t)
	}
	if n := logs.FilterMessage("dead-lettered by handler").Len(); n != 1 {
		t.Fatalf("%d lines for 20 identical dead letters, want 1 within the window", n)
	}
	if st := fx.c.Stats(); st.DeadLettered != 20 {
		t.Fatalf("counted %d dead letters, want 20", st.DeadLettered)
	}
	// Stop writes the pending count.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fx.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var suppressed int64
	for _, l := range logs.FilterMessage("dead-lettered by handler").AllUntimed() {
		if n, ok := l.ContextMap()["suppressed"].(int64); ok {
			suppressed += n
		}
	}
	if suppressed != 19 {
		t.Fatalf("suppressed count %d, want 19", suppressed)
	}
}

// TestGuestReasonReachesTheDeadLetter: the reason a handler gives with
// set_reason (plugin.Result.Reason) is the dead letter's reason as given,
// whether it dead-letters at once or nacks until max_attempts, and is
// logged; without one the defaults stand.
func TestGuestReasonReachesTheDeadLetter(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result {
		switch string(d.Body) {
		case "dead":
			return plugin.Result{Verdict: engines.DeadLetter, Reason: "webhook: 404 Not Found"}
		case "nack":
			return plugin.Result{Verdict: engines.Nack, Reason: fmt.Sprintf("busy at attempt %d", d.Attempt)}
		}
		return plugin.Result{Verdict: engines.DeadLetter}
	}, func(c *dispatch.Config) { c.Logger = zap.New(core); c.Concurrency = 1 })
	fx.c.Start()
	for _, tc := range []struct{ body, reason string }{
		{"dead", "webhook: 404 Not Found"},
		{"nack", "max attempts (3) reached: busy at attempt 3"}, // the queue's max_attempts is 3
		{"plain", "dead-lettered by handler"},
	} {
		fx.send(t, tc.body)
		d := receiveOne(t, fx.dlq)
		if string(d.Body) != tc.body || d.Attributes[engines.AttrDeadLetterReason] != tc.reason {
			t.Errorf("dead letter %q has reason %q, want %q", d.Body, d.Attributes[engines.AttrDeadLetterReason], tc.reason)
		}
	}
	lines := logs.FilterMessage("dead-lettered by handler").FilterField(zap.String("reason", "webhook: 404 Not Found"))
	if lines.Len() != 1 {
		t.Errorf("no dead-letter line with the guest's reason: %v", logs.All())
	}
	if n := logs.FilterMessage("handler nacked").FilterField(zap.String("reason", "busy at attempt 1")).Len(); n != 1 {
		t.Errorf("%d nack lines with the guest's reason, want 1: %v", n, logs.All())
	}
}
