package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// TestSoakMixedVerdicts runs 50,000 messages through two engines on one
// schema (two nodes) with 8 consumers answering at random: ack, nack
// (dead-lettered at the third failure), requeue, dead-letter, or nothing at
// all (the lease expires). In the end every message was acked once or
// dead-lettered once, never both, and the counters agree exactly.
func TestSoakMixedVerdicts(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test; run with make soak")
	}
	s := pgtest.Need(t, srv)
	schema := s.Schema(t)
	nodes := []*postgres.Engine{
		newEngine(t, schema, postgres.Options{Logger: zap.NewNop(), PollInterval: 100 * time.Millisecond}),
		newEngine(t, schema, postgres.Options{Logger: zap.NewNop(), PollInterval: 100 * time.Millisecond}),
	}
	spec := engines.QueueSpec{Name: "soak", VisibilityTimeout: time.Second, MaxAttempts: 3, DeadLetter: "soak_dlq"}
	qs := []engines.Queue{open(t, nodes[0], spec), open(t, nodes[1], spec)}
	dlq := open(t, nodes[0], engines.QueueSpec{Name: "soak_dlq"})
	ctx := ctxT(t, 20*time.Minute)
	const n = 50000
	for i := 0; i < n; i += 1000 {
		msgs := make([]engines.Message, 1000)
		for j := range msgs {
			msgs[j].Body = fmt.Appendf(nil, "s%d", i+j)
		}
		if err := qs[i/1000%2].Enqueue(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu     sync.Mutex
		acked  = map[string]int{}
		dead   = map[string]int{}
		closed atomic.Int64
		wg     sync.WaitGroup
	)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for c := 0; c < 8; c++ {
		q := qs[c%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]engines.Delivery, 32)
			for {
				k, err := q.Receive(cctx, buf)
				if err != nil {
					return
				}
				for i := range buf[:k] {
					d := &buf[i]
					var err error
					switch r := rand.IntN(100); {
					case r < 70:
						if err = d.Ack(cctx); err == nil {
							mu.Lock()
							acked[string(d.Body)]++
							mu.Unlock()
							closed.Add(1)
						}
					case r < 80:
						err = d.Nack(cctx, 0, "soak")
					case r < 90:
						err = d.Requeue(cctx, 0)
					case r < 95:
						err = d.DeadLetter(cctx, "soak")
					default: // abandoned: the lease runs out
					}
					if err != nil && cctx.Err() == nil {
						t.Errorf("settle: %v", err)
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]engines.Delivery, 100)
		for {
			k, err := dlq.Receive(cctx, buf)
			if err != nil {
				return
			}
			for i := range buf[:k] {
				if err := buf[i].Ack(cctx); err != nil && cctx.Err() == nil {
					t.Errorf("dlq ack: %v", err)
				}
			}
			mu.Lock()
			for i := range buf[:k] {
				dead[string(buf[i].Body)]++
			}
			mu.Unlock()
			if closed.Add(int64(k)) >= n {
				cancel()
			}
		}
	}()
	// The acks close messages too: stop once everything is accounted for.
	waitFor(t, ctx, "every message acked or dead-lettered", func() bool { return closed.Load() >= n })
	cancel()
	wg.Wait()
	if len(acked)+len(dead) != n {
		t.Fatalf("%d acked + %d dead-lettered distinct messages, want %d in all", len(acked), len(dead), n)
	}
	for b, c := range acked {
		if c != 1 || dead[b] != 0 {
			t.Fatalf("%s acked %d times and dead-lettered %d times", b, c, dead[b])
		}
	}
	for b, c := range dead {
		if c != 1 {
			t.Fatalf("%s dead-lettered %d times", b, c)
		}
	}
	st, err := qs[0].Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Depth() != 0 || st.AckedTotal != int64(len(acked)) || st.DeadLetteredTotal != int64(len(dead)) || st.EnqueuedTotal != n {
		t.Fatalf("stats %+v; want depth 0, %d acked, %d dead-lettered, %d enqueued", st, len(acked), len(dead), n)
	}
	t.Logf("%d acked, %d dead-lettered, %d leases expired, %d nacks", len(acked), len(dead), st.ExpiredLeaseTotal, st.NackedTotal)
}
