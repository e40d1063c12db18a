package dispatch_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// nopInstance acks everything without running any guest code.
type nopInstance struct{}

func (nopInstance) Handle(context.Context, *engines.Delivery, time.Time) plugin.Result {
	return plugin.Result{Verdict: engines.Ack}
}
func (nopInstance) Broken() bool                { return false }
func (nopInstance) Close(context.Context) error { return nil }

// doneAfter counts settlements, closes done after want of them and nudges
// progress every 1024, so a producer can keep a bounded backlog.
type doneAfter struct {
	n, want  atomic.Int64
	done     chan struct{}
	progress chan struct{}
	once     sync.Once
}

func (d *doneAfter) Settled(*engines.Delivery, engines.Verdict, time.Duration) {
	n := d.n.Add(1)
	if n == d.want.Load() {
		d.once.Do(func() { close(d.done) })
	}
	if n%1024 == 0 {
		select {
		case d.progress <- struct{}{}:
		default:
		}
	}
}

// backlog bounds how far the benchmark producer runs ahead of the consumer:
// a steady flow, not a queue of millions whose records are all cold in cache
// and keep the garbage collector busy.
const backlog = 64 << 10

// BenchmarkDispatchOverhead is the dispatcher and memory engine alone, with
// a handler that costs nothing: the runtime's own share of a delivery, to
// set beside runtime/server's BenchmarkEndToEnd (the same plus wazero).
func BenchmarkDispatchOverhead(b *testing.B) {
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			benchDispatch(b, dispatch.Config{Concurrency: conc})
		})
	}
}

// benchDispatch runs b.N 64-byte messages through a consumer built from cfg
// (its name, queue, batch, observer and instances filled in here) with a
// handler that costs nothing, and returns the consumer, stopped.
func benchDispatch(b *testing.B, cfg dispatch.Config) *dispatch.Consumer {
	eng := memory.New(memory.Options{})
	defer eng.Close()
	q, err := eng.Open(context.Background(), engines.QueueSpec{Name: "q"})
	if err != nil {
		b.Fatal(err)
	}
	obs := &doneAfter{done: make(chan struct{}), progress: make(chan struct{}, 1)}
	obs.want.Store(int64(b.N))
	cfg.Name, cfg.Queue, cfg.Batch, cfg.Observer = "bench", q, 256, obs
	cfg.NewInstance = func(context.Context) (dispatch.Instance, error) { return nopInstance{}, nil }
	c, err := dispatch.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	c.Start()
	for sent := 0; sent < b.N; sent += 256 {
		for int64(sent)-obs.n.Load() > backlog {
			select {
			case <-obs.progress:
			case <-obs.done:
			}
		}
		msgs := make([]engines.Message, min(256, b.N-sent))
		for i := range msgs {
			msgs[i].Body = body
		}
		if err := q.Enqueue(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
	<-obs.done
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	b.StopTimer()
	_ = c.Stop(context.Background())
	return c
}
