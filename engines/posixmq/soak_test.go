//go:build linux

package posixmq_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq"
)

// TestSoakMixedVerdicts pushes 50,000 messages through a queue 10 deep with
// two producers and three consumers that ack, nack, requeue, dead-letter or
// abandon (let the lease expire) at random, and checks exact accounting:
// every message ends acked or dead-lettered, once, and the counters agree.
func TestSoakMixedVerdicts(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test; run with make soak")
	}
	// Without a spill senders wait in the kernel; with one, the outbox and
	// its pump carry part of the flow.
	for _, spill := range []int{0, 100} {
		t.Run("spill="+strconv.Itoa(spill), func(t *testing.T) { soak(t, spill) })
	}
}

func soak(t *testing.T, spill int) {
	const (
		total     = 50_000
		producers = 2
		consumers = 3
	)
	e := newEngine(t, posixmq.Options{MaxMessages: 10, MessageSize: 512, Spill: spill})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	q, _ := open(t, e, engines.QueueSpec{Name: "soak", VisibilityTimeout: 200 * time.Millisecond, MaxAttempts: 3, DeadLetter: "soak_dlq"})
	dlq, _ := open(t, e, engines.QueueSpec{Name: "soak_dlq"})

	var (
		mu           sync.Mutex
		acked        = make(map[string]int, total)
		deadLettered = make(map[string]int)
		wg           sync.WaitGroup
	)
	settled := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) + len(deadLettered)
	}
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]engines.Message, 32)
			for i := p; i < total; {
				n := 0
				for ; n < len(msgs) && i < total; i += producers {
					msgs[n] = engines.Message{Body: []byte(strconv.Itoa(i)), Priority: uint8(i % 3)}
					n++
				}
				if err := q.Enqueue(ctx, msgs[:n]...); err != nil {
					t.Errorf("producer %d: %v", p, err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	for c := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			buf := make([]engines.Delivery, 16)
			for {
				n, err := q.Receive(ctx, buf)
				if err != nil {
					select {
					case <-done:
					default:
						t.Errorf("consumer %d: %v", c, err)
					}
					return
				}
				for i := range buf[:n] {
					d := &buf[i]
					var err error
					switch r := rng.IntN(100); {
					case r < 70:
						if err = d.Ack(ctx); err == nil {
							mu.Lock()
							acked[string(d.Body)]++
							mu.Unlock()
						}
					case r < 80:
						err = d.Nack(ctx, 0, "soak")
					case r < 90:
						err = d.Requeue(ctx, time.Duration(rng.IntN(5))*time.Millisecond)
					case r < 95:
						err = d.DeadLetter(ctx, "soak")
					default:
						// Abandoned: the lease expires and counts as a failure.
					}
					if err != nil && !errors.Is(err, engines.ErrLeaseLost) {
						t.Errorf("consumer %d: settle: %v", c, err)
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]engines.Delivery, 16)
		for {
			n, err := dlq.Receive(ctx, buf)
			if err != nil {
				select {
				case <-done:
				default:
					t.Errorf("dead-letter consumer: %v", err)
				}
				return
			}
			for i := range buf[:n] {
				if err := buf[i].Ack(ctx); err != nil {
					t.Errorf("dead-letter ack: %v", err)
				}
				mu.Lock()
				deadLettered[string(buf[i].Body)]++
				mu.Unlock()
			}
		}
	}()
	for settled() < total && ctx.Err() == nil && !t.Failed() {
		time.Sleep(20 * time.Millisecond) // polling a count: no event marks "all settled"
	}
	close(done)
	cancel()
	wg.Wait()
	if t.Failed() {
		return
	}
	for i := range total {
		b := strconv.Itoa(i)
		if a, d := acked[b], deadLettered[b]; a+d != 1 {
			t.Fatalf("message %s: acked %d times, dead-lettered %d times; want exactly one of them once", b, a, d)
		}
	}
	s, err := q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Depth() != 0 || s.AckedTotal != int64(len(acked)) || s.DeadLetteredTotal != int64(len(deadLettered)) || s.EnqueuedTotal != total {
		t.Fatalf("Stats %+v; want depth 0, %d acked, %d dead-lettered, %d enqueued", s, len(acked), len(deadLettered), total)
	}
	t.Logf("%d acked, %d dead-lettered, %d nacks, %d expired leases", len(acked), len(deadLettered), s.NackedTotal, s.ExpiredLeaseTotal)
}
