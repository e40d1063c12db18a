package enginetest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Benchmark shape: batches of 100 messages of 64 bytes, the unit the
// dispatcher works in. Each op is one batch; msgs/s is reported alongside so
// engines can be compared with the raw ceilings in the design brief.
const (
	benchBatch = 100
	benchBody  = 64
	// benchRefill is how many messages are topped up, or drained, at a time
	// outside the timed region; large so the timer is stopped rarely.
	benchRefill = 100 * benchBatch
)

// Bench runs the engine benchmarks as sub-benchmarks of b.
func Bench(b *testing.B, h Harness) {
	b.Run("enqueue_batch100_64B", func(b *testing.B) { benchEnqueue(b, h) })
	b.Run("receive_ack_batch100", func(b *testing.B) { benchReceiveAck(b, h) })
	b.Run("enqueue_receive_ack_batch100", func(b *testing.B) { benchPipeline(b, h) })
}

func benchQueue(b *testing.B, h Harness) engines.Queue {
	b.Helper()
	e := h.New(b)
	b.Cleanup(func() { _ = e.Close() })
	name := fmt.Sprintf("qb_%s_%d", runTag, nameSeq.Add(1))
	q, err := e.Open(context.Background(), engines.QueueSpec{Name: name, VisibilityTimeout: 5 * time.Minute})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	return q
}

// fill enqueues n messages of benchBody bytes in batches of benchBatch.
func fill(b *testing.B, q engines.Queue, msgs []engines.Message, body []byte, n int) {
	for n > 0 {
		k := min(n, len(msgs))
		for j := range msgs[:k] {
			msgs[j] = engines.Message{Body: body}
		}
		if err := q.Enqueue(context.Background(), msgs[:k]...); err != nil {
			b.Fatalf("Enqueue: %v", err)
		}
		n -= k
	}
}

// drain receives and acks exactly n messages.
func drain(b *testing.B, q engines.Queue, n int) {
	buf := make([]engines.Delivery, 1000)
	for n > 0 {
		n -= receiveAck(b, q, buf[:min(n, len(buf))])
	}
}

// receiveAck receives into buf, as the dispatcher does, acks what came and
// says how many that was.
func receiveAck(b *testing.B, q engines.Queue, buf []engines.Delivery) int {
	ctx := context.Background()
	n, err := q.Receive(ctx, buf)
	if err != nil {
		b.Fatalf("Receive: %v", err)
	}
	for i := range buf[:n] {
		if err := buf[i].Ack(ctx); err != nil {
			b.Fatalf("Ack: %v", err)
		}
	}
	return n
}

func reportRate(b *testing.B, msgs int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(msgs)/s, "msgs/s")
	}
}

func benchEnqueue(b *testing.B, h Harness) {
	q := benchQueue(b, h)
	body := make([]byte, benchBody)
	msgs := make([]engines.Message, benchBatch)
	ctx := context.Background()
	pending := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range msgs {
			msgs[j] = engines.Message{Body: body}
		}
		if err := q.Enqueue(ctx, msgs...); err != nil {
			b.Fatalf("Enqueue: %v", err)
		}
		// Drain now and then so the measurement is not of an ever-growing
		// backlog (and the machine's memory).
		if pending += benchBatch; pending >= benchRefill {
			b.StopTimer()
			drain(b, q, pending)
			pending = 0
			b.StartTimer()
		}
	}
	b.StopTimer()
	reportRate(b, b.N*benchBatch)
}

func benchReceiveAck(b *testing.B, h Harness) {
	q := benchQueue(b, h)
	body := make([]byte, benchBody)
	msgs := make([]engines.Message, benchBatch)
	buf := make([]engines.Delivery, benchBatch) // reused, as the dispatcher does
	avail, total := 0, 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if avail < benchBatch {
			b.StopTimer()
			fill(b, q, msgs, body, benchRefill)
			avail += benchRefill
			b.StartTimer()
		}
		n := receiveAck(b, q, buf)
		avail -= n
		total += n
	}
	b.StopTimer()
	reportRate(b, total)
}

// benchPipeline is the whole life of a batch with no timer stops: what one
// producer and one consumer sharing a core would see.
func benchPipeline(b *testing.B, h Harness) {
	q := benchQueue(b, h)
	body := make([]byte, benchBody)
	msgs := make([]engines.Message, benchBatch)
	buf := make([]engines.Delivery, benchBatch) // reused, as the dispatcher does
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range msgs {
			msgs[j] = engines.Message{Body: body}
		}
		if err := q.Enqueue(ctx, msgs...); err != nil {
			b.Fatalf("Enqueue: %v", err)
		}
		for got := 0; got < benchBatch; {
			got += receiveAck(b, q, buf[:benchBatch-got])
		}
	}
	b.StopTimer()
	reportRate(b, b.N*benchBatch)
}

// BenchTx compares, on an engine with Capabilities.Transactions, a
// consumer that only acks with one whose every delivery publishes one
// message and increments one key with its ack (SettleTx), the shape of
// issue 16's performance target. Both run benchTxWorkers concurrent
// consumers, as the dispatcher does, so an engine that shares commits
// between deliveries (disk's group commit) can. Each op is one delivery;
// compare the msgs/s of the two sub-benchmarks.
func BenchTx(b *testing.B, h Harness) {
	b.Run("receive_ack", func(b *testing.B) { benchTx(b, h, false) })
	b.Run("receive_settletx_publish1_incr1", func(b *testing.B) { benchTx(b, h, true) })
}

// benchTxWorkers is the consumers' concurrency, the runtime's default
// order of magnitude.
const benchTxWorkers = 8

func benchTx(b *testing.B, h Harness, tx bool) {
	e := h.New(b)
	b.Cleanup(func() { _ = e.Close() })
	if caps := e.Capabilities(); tx && (!caps.Transactions || !caps.KV) {
		b.Skip("engine declares Transactions or KV absent")
	}
	ctx := context.Background()
	name := fmt.Sprintf("qb_%s_%d", runTag, nameSeq.Add(1))
	q, err := e.Open(ctx, engines.QueueSpec{Name: name, VisibilityTimeout: 5 * time.Minute})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	out, err := e.Open(ctx, engines.QueueSpec{Name: name + "_out"})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	var kv engines.KV
	if tx {
		if kv, err = e.(engines.KVEngine).OpenKV(ctx, engines.KVSpec{Name: name + "_kv"}); err != nil {
			b.Fatalf("OpenKV: %v", err)
		}
	}
	body := make([]byte, benchBody)
	fill(b, q, make([]engines.Message, 1000), body, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	var left atomic.Int64
	left.Store(int64(b.N))
	errc := make(chan error, benchTxWorkers)
	for range benchTxWorkers {
		go func() {
			buf := make([]engines.Delivery, 10)
			for {
				want := min(left.Load(), int64(len(buf)))
				if want <= 0 {
					errc <- nil
					return
				}
				rctx, cancel := context.WithTimeout(ctx, quiet)
				n, err := q.Receive(rctx, buf[:want])
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					continue // the others hold the rest
				}
				if err != nil {
					errc <- fmt.Errorf("Receive: %w", err)
					return
				}
				for i := range buf[:n] {
					d := &buf[i]
					if !tx {
						err = d.Ack(ctx)
					} else {
						err = d.SettleTx(ctx, &engines.Effects{
							Publish: []engines.Publish{{Queue: out.Name(), Message: engines.Message{Body: body}}},
							KV:      []engines.KVBatch{{Store: kv.Name(), Ops: []engines.KVOp{{Kind: engines.KVIncr, Key: []byte("count"), Delta: 1}}}},
						})
					}
					if err != nil {
						errc <- fmt.Errorf("settle: %w", err)
						return
					}
				}
				left.Add(-int64(n))
			}
		}()
	}
	for range benchTxWorkers {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, b.N)
}

// BenchPeekScan pages through a whole queue of n messages, for n of 1,000,
// 10,000 and 100,000, 100 a page, and reports the cost of one page: a page
// that costs the same whatever n is has a cost proportional to the page,
// not the queue. open returns an empty queue that offers engines.Peeker.
func BenchPeekScan(b *testing.B, open func(b *testing.B) engines.Queue) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("queue=%d", n), func(b *testing.B) {
			ctx := context.Background()
			q := open(b)
			msgs := make([]engines.Message, 1000)
			for i := range msgs {
				msgs[i].Body = []byte("x")
			}
			for range n / len(msgs) {
				if err := q.Enqueue(ctx, msgs...); err != nil {
					b.Fatal(err)
				}
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
