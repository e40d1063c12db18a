package dispatch_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// lateQueue's first Receive waits for its context to end and only then
// leases, returning the deliveries with no error: what an engine whose
// leasing statement was already running when the consumer stopped or
// paused does (the postgres engine, for one). The engine contract lets it;
// the consumer must hand such deliveries back, not drop or handle them.
type lateQueue struct {
	engines.Queue
	once    sync.Once
	waiting chan struct{} // closed once the first Receive is blocked
}

func (l *lateQueue) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	late := false
	l.once.Do(func() { late = true })
	if !late {
		return l.Queue.Receive(ctx, buf)
	}
	close(l.waiting)
	<-ctx.Done()
	return l.Queue.Receive(context.Background(), buf)
}

func lateFixture(t *testing.T) (*fixture, *lateQueue, *atomic.Int64) {
	t.Helper()
	var handled atomic.Int64
	late := &lateQueue{waiting: make(chan struct{})}
	fx := newFixtureOn(t, func(*engines.Delivery) plugin.Result {
		handled.Add(1)
		return plugin.Result{Verdict: engines.Ack}
	}, func(c *dispatch.Config) { c.Concurrency = 1 }, func(q engines.Queue) engines.Queue {
		late.Queue = q
		return late
	})
	fx.send(t, "a", "b", "c")
	return fx, late, &handled
}

// checkHandedBack asserts that the late delivery went back to the queue,
// ready at once, without being handled.
func checkHandedBack(t *testing.T, fx *fixture, handled *atomic.Int64) {
	t.Helper()
	qs, err := fx.q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := handled.Load(); n != 0 || qs.Ready != 3 || qs.InFlight != 0 || fx.c.Stats().Released != 1 {
		t.Fatalf("handled %d, queue %+v, released %d; want 0 handled, 3 ready, none in flight, 1 released",
			n, qs, fx.c.Stats().Released)
	}
}

func TestStopReleasesDeliveriesReceivedLate(t *testing.T) {
	t.Parallel()
	fx, late, handled := lateFixture(t)
	fx.c.Start()
	<-late.waiting
	if err := fx.c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkHandedBack(t, fx, handled)
}

func TestPauseReleasesDeliveriesReceivedLate(t *testing.T) {
	t.Parallel()
	fx, late, handled := lateFixture(t)
	fx.c.Start()
	<-late.waiting
	// Pause returns once the worker has parked, so after it has handed
	// the late batch back.
	if err := fx.c.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkHandedBack(t, fx, handled)
}
