package memory_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
)

// BenchmarkPeekPageScan pages through a whole queue of n messages, 100 a
// page, and reports the cost of one page: a page that costs the same
// whatever n is has a cost proportional to the page, not the queue.
func BenchmarkPeekPageScan(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("queue=%d", n), func(b *testing.B) {
			e := memory.New(memory.Options{})
			defer e.Close()
			ctx := context.Background()
			q, err := e.Open(ctx, engines.QueueSpec{Name: "q"})
			if err != nil {
				b.Fatal(err)
			}
			msgs := make([]engines.Message, n)
			for i := range msgs {
				msgs[i].Body = []byte("x")
			}
			if err := q.Enqueue(ctx, msgs...); err != nil {
				b.Fatal(err)
			}
			p := q.(engines.Peeker)
			pages := 0
			b.ResetTimer()
			for range b.N {
				after := ""
				for {
					pg, err := p.PeekPage(ctx, engines.PeekOptions{Max: 100, After: after})
					if err != nil {
						b.Fatal(err)
					}
					pages++
					if after = pg.Next; after == "" {
						break
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pages), "ns/page")
		})
	}
}
