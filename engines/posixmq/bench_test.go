//go:build linux

package posixmq_test

import (
	"context"
	"sync"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq"
	"github.com/qrun-dev/qrun/engines/posixmq/mqtest"
)

// The shape every benchmark here shares, so their msgs/s compare: 64-byte
// bodies through a queue 10 deep (this machine's msg_max) of 1 KiB messages.
const (
	benchDepth   = 10
	benchMsgSize = 1024
	benchBody    = 64
)

// BenchmarkRawMQ is the ceiling: plain mq_timedsend and mq_timedreceive
// between two goroutines blocking in the kernel.
func BenchmarkRawMQ(b *testing.B) { mqtest.BenchRaw(b, benchDepth, benchMsgSize, benchBody) }

// BenchmarkRawMQPolled is the same with non-blocking descriptors waiting in
// Go's poller, as the engine waits: the stricter ceiling on Go.
func BenchmarkRawMQPolled(b *testing.B) {
	mqtest.BenchRawPolled(b, benchDepth, benchMsgSize, benchBody)
}

// BenchmarkProducerConsumer is the engine alone, as the runtime uses it: one
// goroutine enqueueing batches of 64, one receiving batches of up to 64
// and acking each delivery. No spill: the producer waits for room as a
// plain mq_send would.
func BenchmarkProducerConsumer(b *testing.B) {
	for _, format := range []posixmq.Format{posixmq.Framed, posixmq.Raw} {
		b.Run("format="+format.String(), func(b *testing.B) {
			e := newEngine(b, posixmq.Options{MaxMessages: benchDepth, MessageSize: benchMsgSize, Format: format})
			ctx := context.Background()
			q, err := e.Open(ctx, engines.QueueSpec{Name: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			body := make([]byte, benchBody)
			const batch = 64
			var wg sync.WaitGroup
			wg.Add(1)
			var perr error
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				defer wg.Done()
				msgs := make([]engines.Message, batch)
				for sent := 0; sent < b.N; sent += batch {
					n := min(batch, b.N-sent)
					for i := range msgs[:n] {
						msgs[i] = engines.Message{Body: body}
					}
					if perr = q.Enqueue(ctx, msgs[:n]...); perr != nil {
						return
					}
				}
			}()
			buf := make([]engines.Delivery, batch)
			for got := 0; got < b.N; {
				n, err := q.Receive(ctx, buf)
				if err != nil {
					b.Fatal(err)
				}
				for i := range buf[:n] {
					if err := buf[i].Ack(ctx); err != nil {
						b.Fatal(err)
					}
				}
				got += n
			}
			wg.Wait()
			b.StopTimer()
			if perr != nil {
				b.Fatal(perr)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// TestAllocsPerMessage guards the hot path: enqueueing, receiving and
// acking allocate nothing per message beyond the shared slabs and ID blocks,
// which amortise to well under one allocation per batch.
func TestAllocsPerMessage(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	e := newEngine(t, posixmq.Options{MaxMessages: benchDepth, MessageSize: benchMsgSize})
	ctx := context.Background()
	q, err := e.Open(ctx, engines.QueueSpec{Name: "allocs"})
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, benchBody)
	msgs := make([]engines.Message, 8)
	buf := make([]engines.Delivery, 8)
	allocs := testing.AllocsPerRun(200, func() {
		for i := range msgs {
			msgs[i] = engines.Message{Body: body}
		}
		if err := q.Enqueue(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(msgs); {
			n, err := q.Receive(ctx, buf)
			if err != nil {
				t.Fatal(err)
			}
			for i := range buf[:n] {
				if err := buf[i].Ack(ctx); err != nil {
					t.Fatal(err)
				}
			}
			got += n
		}
	})
	t.Logf("%.3f allocations per batch of %d", allocs, len(msgs))
	if allocs > 0.5 {
		t.Fatalf("%.2f allocations per batch of %d messages, want amortised to under 0.5", allocs, len(msgs))
	}
}
