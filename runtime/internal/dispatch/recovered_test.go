package dispatch_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
)

// downQueue fails its first `down` receives, as an engine whose database
// is unreachable does, then works.
type downQueue struct {
	engines.Queue
	down  int64
	calls atomic.Int64
}

func (q *downQueue) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	if q.calls.Add(1) <= q.down {
		return 0, errors.New("connection refused")
	}
	return q.Queue.Receive(ctx, buf)
}

// downSettler refuses its first `down` settles, as an engine whose commit
// fails does, then settles through the queue underneath.
type downSettler struct {
	engines.Queue
	down  int64
	calls atomic.Int64
}

func (q *downSettler) StartSettle(ctx context.Context, d *engines.Delivery, s engines.Settlement) (engines.Pending, error) {
	if q.calls.Add(1) <= q.down {
		return nil, errors.New("connection refused")
	}
	return nil, d.Settle(ctx, s)
}

// recovered returns the lines with message msg, after the consumer stopped
// (so no worker can still be writing).
func recovered(t *testing.T, fx *fixture, logs *observer.ObservedLogs, msg string) []observer.LoggedEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fx.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	return logs.FilterMessage(msg).AllUntimed()
}

// TestReceiveRecoveredIsLoggedOnce: after receives failed, the first one
// that works logs one "receive recovered" line with the failure count,
// however many workers saw the outage.
func TestReceiveRecoveredIsLoggedOnce(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	fx := newFixtureOn(t, byBody, func(c *dispatch.Config) {
		c.Logger = zap.New(core)
		c.Concurrency = 3
	}, func(q engines.Queue) engines.Queue { return &downQueue{Queue: q, down: 4} })
	fx.send(t, "ack")
	fx.c.Start()
	if s := fx.next(t); s.verdict != engines.Ack {
		t.Fatalf("got %+v, want the message acked once the engine is back", s)
	}
	lines := recovered(t, fx, logs, "receive recovered")
	if len(lines) != 1 || lines[0].ContextMap()["failures"] != int64(4) || lines[0].ContextMap()["consumer"] != "c" {
		t.Fatalf("recovered lines %v, want one with failures=4 naming the consumer", lines)
	}
	if n := logs.FilterMessage("receive failed").Len(); n < 1 {
		t.Fatalf("%d receive failed lines, want at least one", n)
	}
}

// TestSettleRecoveredIsLogged: verdicts the engine refused, then one it
// takes, log one "applying verdicts recovered" line.
func TestSettleRecoveredIsLogged(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	fx := newFixtureOn(t, byBody, func(c *dispatch.Config) {
		c.Logger = zap.New(core)
		c.Concurrency, c.Batch = 1, 1
		c.VisibilityTimeout = 100 * time.Millisecond // the refused verdict's lease expires, the message returns
	}, func(q engines.Queue) engines.Queue { return &downSettler{Queue: q, down: 1} })
	fx.send(t, "ack")
	fx.c.Start()
	if s := fx.next(t); s.verdict != engines.Ack || s.attempt != 2 {
		t.Fatalf("got %+v, want the redelivered message acked at attempt 2", s)
	}
	lines := recovered(t, fx, logs, "applying verdicts recovered")
	if len(lines) != 1 || lines[0].ContextMap()["failures"] != int64(1) {
		t.Fatalf("recovered lines %v, want one with failures=1", lines)
	}
}

// TestInstanceRecoveredIsLogged: a plugin that could not start and then
// does logs "plugin instance started again".
func TestInstanceRecoveredIsLogged(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	var calls atomic.Int64
	var fx *fixture
	fx = newFixture(t, byBody, func(c *dispatch.Config) {
		c.Logger = zap.New(core)
		c.Concurrency, c.Batch = 1, 1
		c.NewInstance = func(context.Context) (dispatch.Instance, error) {
			if calls.Add(1) <= 2 {
				return nil, errors.New("qrun_init returned 1")
			}
			return &fakeInstance{f: byBody, closes: &fx.closes}, nil
		}
	})
	fx.send(t, "ack")
	fx.c.Start()
	fx.next(t)
	lines := recovered(t, fx, logs, "plugin instance started again")
	if len(lines) != 1 || lines[0].ContextMap()["failures"] != int64(2) {
		t.Fatalf("recovered lines %v, want one with failures=2", lines)
	}
}

// TestCrashLoopPauses: a plugin that breaks its instance on every message
// makes its worker pause after CrashLoopAfter broken instances in a row,
// handing back what it holds, instead of replacing instances as fast as the
// retry policy returns messages; the first healthy delivery ends it.
func TestCrashLoopPauses(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.WarnLevel)
	fx := newFixture(t, byBody, func(c *dispatch.Config) {
		c.Logger = zap.New(core)
		c.Concurrency = 1
		c.CrashPause = time.Millisecond
		c.Retry = dispatch.RetryPolicy{} // failed messages come back at once
	})
	fx.c.Start()
	fx.send(t, "trap", "trap", "trap", "trap")
	// Every message still reaches the dead-letter queue after its
	// attempts: the pauses cost none of them a failure.
	for range 4 {
		if d := receiveOne(t, fx.dlq); string(d.Body) != "trap" {
			t.Fatalf("dead letter %q, want a trap", d.Body)
		}
	}
	fx.send(t, "ack")
	for s := fx.next(t); s.verdict != engines.Ack; s = fx.next(t) {
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fx.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	st := fx.c.Stats()
	if st.CrashPauses < 1 || st.Traps != 12 {
		t.Fatalf("stats %+v: want at least one crash pause and 12 traps", st)
	}
	if n := logs.FilterMessage("plugin keeps breaking its instance: pausing this worker").Len(); n < 1 {
		t.Fatalf("%d crash-loop lines, want at least one", n)
	}
}
