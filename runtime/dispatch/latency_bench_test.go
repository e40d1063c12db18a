package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/dispatch"
)

// BenchmarkRecordLatency is BenchmarkDispatchOverhead/concurrency=2 with
// the latency histogram off and on, in the same run: the whole cost that
// metrics add to the delivery path. record=off is its ceiling.
func BenchmarkRecordLatency(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "record=off"
		if on {
			name = "record=on"
		}
		b.Run(name, func(b *testing.B) {
			eng := memory.New(memory.Options{})
			defer eng.Close()
			q, err := eng.Open(context.Background(), engines.QueueSpec{Name: "q"})
			if err != nil {
				b.Fatal(err)
			}
			obs := &doneAfter{done: make(chan struct{}), progress: make(chan struct{}, 1)}
			obs.want.Store(int64(b.N))
			c, err := dispatch.New(dispatch.Config{
				Name: "bench", Queue: q, Concurrency: 2, Batch: 256, Observer: obs, RecordLatency: on,
				NewInstance: func(context.Context) (dispatch.Instance, error) { return nopInstance{}, nil },
			})
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
			if l := c.Latency(); on && l.Count != uint64(b.N) {
				b.Fatalf("histogram counted %d of %d calls", l.Count, b.N)
			}
		})
	}
}
