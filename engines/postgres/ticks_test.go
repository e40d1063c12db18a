package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// Two nodes (two engines, each with its own pool, on one schema) claim
// every tick of a schedule at the same moment: each tick enqueues once
// between them.
func TestTicksTwoNodesFireOnce(t *testing.T) {
	s := pgtest.Need(t, srv)
	schema := s.Schema(t)
	nodes := []*postgres.Engine{newEngine(t, schema, postgres.Options{}), newEngine(t, schema, postgres.Options{})}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	qs := make([]engines.Queue, len(nodes))
	for i, e := range nodes {
		q, err := e.Open(ctx, engines.QueueSpec{Name: "reports"})
		if err != nil {
			t.Fatal(err)
		}
		qs[i] = q
	}
	const ticks = 40
	base := time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC)
	var wins atomic.Int64
	for n := range ticks {
		tick := base.Add(time.Duration(n) * time.Minute)
		var wg sync.WaitGroup
		for i, e := range nodes {
			wg.Go(func() {
				ok, err := e.ClaimTick(ctx, qs[i], "nightly", tick, engines.Message{Body: []byte(fmt.Sprint(n))})
				if err != nil {
					t.Errorf("node %d tick %d: %v", i, n, err)
				}
				if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
	}
	if wins.Load() != ticks {
		t.Fatalf("%d claims won for %d ticks", wins.Load(), ticks)
	}
	st, err := qs[0].Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Depth() != ticks {
		t.Fatalf("%d messages for %d ticks", st.Depth(), ticks)
	}
	for _, e := range nodes {
		if last, err := e.LastTick(ctx, "nightly"); err != nil || !last.Equal(base.Add((ticks-1)*time.Minute)) {
			t.Fatalf("LastTick = %s, %v", last, err)
		}
	}
}

// Two nodes taking tokens from one shared bucket at once take each token
// once: with a negligible refill they get exactly the burst between them,
// and then a wait.
func TestSharedRateBucketTwoNodes(t *testing.T) {
	s := pgtest.Need(t, srv)
	schema := s.Schema(t)
	nodes := []*postgres.Engine{newEngine(t, schema, postgres.Options{}), newEngine(t, schema, postgres.Options{})}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const burst, rate = 50, 0.001 // one token per 1000 s: none refills during the test
	var total atomic.Int64
	var wg sync.WaitGroup
	for _, e := range nodes {
		for range 3 {
			wg.Go(func() {
				for {
					got, wait, err := e.TakeTokens(ctx, "consumer/c", rate, burst, 7)
					if err != nil {
						t.Error(err)
						return
					}
					if got == 0 {
						if wait < 100*time.Second {
							t.Errorf("empty bucket says wait %s, want about 1000s", wait)
						}
						return
					}
					total.Add(int64(got))
				}
			})
		}
	}
	wg.Wait()
	if total.Load() != burst {
		t.Fatalf("nodes took %d tokens from a bucket of %d", total.Load(), burst)
	}
	if _, _, err := nodes[0].TakeTokens(ctx, "b", 0, 1, 1); err == nil {
		t.Fatal("rate 0 accepted")
	}
}
