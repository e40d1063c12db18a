package dispatch_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// startedQueue passes the settles of a GroupSettler queue through and hands
// the test the Pending of each, by body.
type startedQueue struct {
	engines.Queue
	started chan startedSettle
}

type startedSettle struct {
	body string
	p    engines.Pending
}

func (s *startedQueue) StartSettle(ctx context.Context, d *engines.Delivery, st engines.Settlement) (engines.Pending, error) {
	p, err := s.Queue.(engines.GroupSettler).StartSettle(ctx, d, st)
	if err == nil && p != nil {
		s.started <- startedSettle{string(d.Body), p}
	}
	return p, err
}

// TestAckDurableBeforeItsBatchEnds checks, on the disk engine with sync =
// "always", that an ack reaches the engine as its handler returns and is
// on disk while the rest of its receive batch is still being handled: the
// handler of the second delivery waits for the first one's ack to be
// durable (its Pending to return) before it returns itself. Settling a
// batch only once all of it was handled (issue 12 item 1) held that ack
// back for as long as the slowest handler of the batch, here forever.
func TestAckDurableBeforeItsBatchEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	eng, err := disk.Open(ctx, disk.Options{Dir: t.TempDir(), Sync: disk.SyncAlways})
	if err != nil {
		t.Fatal(err)
	}
	dq, err := eng.Open(ctx, engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	q := &startedQueue{Queue: dq, started: make(chan startedSettle, 10)}
	// The worker leases one message first, then full batches: "warm"
	// comes alone, "first" and "slow" together.
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("warm")}, engines.Message{Body: []byte("first")}, engines.Message{Body: []byte("slow")}); err != nil {
		t.Fatal(err)
	}
	durable := make(chan error, 1)
	handle := func(d *engines.Delivery) plugin.Result {
		if string(d.Body) == "slow" {
			// Only a failure waits this long.
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
		wait:
			for {
				select {
				case s := <-q.started: // "warm", then "first"
					if s.body == "first" {
						durable <- s.p.Wait(wctx)
						return plugin.Result{Verdict: engines.Ack}
					}
				case <-wctx.Done():
					break wait
				}
			}
			durable <- errors.New(`the ack of "first" did not reach the engine while "slow", from the same receive batch, was being handled`)
		}
		return plugin.Result{Verdict: engines.Ack}
	}
	settled := make(settledBodies, 10)
	c, err := dispatch.New(dispatch.Config{
		Name: "c", Queue: q, Concurrency: 1, Batch: 64, VisibilityTimeout: time.Minute, HandlerTimeout: time.Second,
		NewInstance: func(context.Context) (dispatch.Instance, error) {
			return &fakeInstance{f: handle, closes: new(atomic.Int64)}, nil
		},
		Observer: settled,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = c.Stop(sctx)
		_ = eng.Close()
	})
	if err := <-durable; err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"warm", "first", "slow"} {
		if got := <-settled; got != want {
			t.Fatalf("settled %q, want %q", got, want)
		}
	}
}

// settledBodies tells the test each body whose verdict the consumer counted.
type settledBodies chan string

func (s settledBodies) Settled(d *engines.Delivery, _ engines.Verdict, _ time.Duration) {
	s <- string(d.Body)
}
