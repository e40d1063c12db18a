package dispatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// latencyQueue is a memory queue with an engine's latencies and no CPU
// cost: each Receive takes lat (a round trip that leases), and its
// transactional settles are group commits (engines.GroupTxSettler) as on
// postgres, where the first Wait runs the transaction of every settle
// started before it and takes lat. An ack returns at once, as postgres
// acks do (its acker deletes them later in bulk).
type latencyQueue struct {
	engines.Queue
	lat time.Duration
	mu  sync.Mutex
	cur *latencyGroup // the group new settles join
}

type latencyGroup struct{ end time.Time } // zero until its commit runs

func (q *latencyQueue) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	time.Sleep(q.lat) // the engine's round trip, simulated
	return q.Queue.Receive(ctx, buf)
}

func (q *latencyQueue) StartSettleTx(_ context.Context, d *engines.Delivery, e *engines.Effects) (engines.Pending, error) {
	q.mu.Lock()
	if q.cur == nil {
		q.cur = &latencyGroup{}
	}
	g := q.cur
	q.mu.Unlock()
	return pendingFunc(func(ctx context.Context) error {
		q.mu.Lock()
		if g.end.IsZero() { // the first Wait runs the group's commit
			g.end = time.Now().Add(q.lat)
			if q.cur == g {
				q.cur = nil
			}
		}
		end := g.end
		q.mu.Unlock()
		time.Sleep(time.Until(end))
		return d.SettleTx(ctx, e)
	}), nil
}

// handlerFunc is an Instance made of a function.
type handlerFunc func(d *engines.Delivery) plugin.Result

func (f handlerFunc) Handle(_ context.Context, d *engines.Delivery, _ time.Time) plugin.Result {
	return f(d)
}
func (handlerFunc) Broken() bool                { return false }
func (handlerFunc) Close(context.Context) error { return nil }

// BenchmarkOverlappedCommit sets the dispatcher's transactional path
// against its ack-only path on an engine whose Receive and group commit
// each take 1 ms and whose handler costs nothing (latencyQueue): the
// dispatcher's share of issue 16's postgres target. A worker that waited
// for its batch's commit before receiving again did a batch per receive
// plus commit, half the ack-only rate; one that lands the commit while it
// receives and handles the next batch (overlap.go) does a batch per
// receive. One worker, batches of 64.
func BenchmarkOverlappedCommit(b *testing.B) {
	for _, h := range []string{"ack", "tx"} {
		b.Run("handler="+h, func(b *testing.B) {
			ctx := context.Background()
			eng := memory.New(memory.Options{})
			defer eng.Close()
			mq, err := eng.Open(ctx, engines.QueueSpec{Name: "q"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := eng.OpenKV(ctx, engines.KVSpec{Name: "s"}); err != nil {
				b.Fatal(err)
			}
			msgs := make([]engines.Message, b.N)
			for i := range msgs {
				msgs[i].Body = []byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)}
			}
			if err := mq.Enqueue(ctx, msgs...); err != nil {
				b.Fatal(err)
			}
			handle := handlerFunc(func(*engines.Delivery) plugin.Result { return plugin.Result{Verdict: engines.Ack} })
			if h == "tx" {
				handle = func(d *engines.Delivery) plugin.Result {
					return plugin.Result{Verdict: engines.Ack, Effects: &engines.Effects{KV: []engines.KVBatch{{Store: "s",
						Ops: []engines.KVOp{{Kind: engines.KVIncr, Key: append([]byte(nil), d.Body...), Delta: 1}}}}}}
				}
			}
			obs := &doneAfter{done: make(chan struct{}), progress: make(chan struct{}, 1)}
			obs.want.Store(int64(b.N))
			c, err := dispatch.New(dispatch.Config{
				Name: "bench", Queue: &latencyQueue{Queue: mq, lat: time.Millisecond}, Concurrency: 1, Batch: 64,
				VisibilityTimeout: time.Minute, HandlerTimeout: time.Second, Observer: obs,
				NewInstance: func(context.Context) (dispatch.Instance, error) { return handle, nil },
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			c.Start()
			<-obs.done
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.StopTimer()
			if err := c.Stop(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}
