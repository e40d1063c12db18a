package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/server"
)

// Two qrun nodes on one postgres schema with the same config: a schedule
// fires each tick once between them, and a global rate limit is one bucket
// for both (with a burst of 3 and a refill of one an hour, the two nodes
// handle 3 messages between them, then every worker of both waits).
func TestTwoPostgresNodesShareTicksAndRate(t *testing.T) {
	t.Parallel()
	pgEngine := postgresEngine(t, "pg")
	src := fmt.Sprintf(`
runtime { admin_listen = "off" }
%s
queue "ticks" { engine = "pg" }
queue "jobs" {
  engine = "pg"
  visibility_timeout = "1m"
}
schedule "beat" {
  every = "1s"
  queue = "ticks"
}
consumer "c" {
  queue            = "jobs"
  plugin           = %q
  concurrency      = 2
  batch            = 1
  rate_limit       = "1/h"
  burst            = 3
  rate_limit_scope = "global"
}`, pgEngine, ackWasm(t))
	a := start(t, parse(t, src), server.Options{})
	b := start(t, parse(t, src), server.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msgs := make([]engines.Message, 10)
	if err := a.Enqueue(ctx, "jobs", msgs); err != nil {
		t.Fatal(err)
	}
	info := func(s *server.Server) admin.ConsumerInfo { return theConsumer(t, ctx, s) }
	waitUntil(t, ctx, "both nodes' workers waiting for the shared bucket", func() bool {
		return info(a).Throttle.Waiting+info(b).Throttle.Waiting == 4
	})
	// Every worker waits, so nothing is being handled: the acks are final.
	if acked := info(a).Counts.Acked + info(b).Counts.Acked; acked != 3 {
		t.Fatalf("%d messages handled between two nodes sharing a bucket of 3", acked)
	}
	if sc := info(a).Throttle.RateLimitScope; sc != "global" {
		t.Fatalf("scope %q", sc)
	}

	// Ticks: wait for a few, then stop both and read the queue.
	waitUntil(t, ctx, "three ticks enqueued", func() bool {
		qs, err := a.Queues(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			if q.Name == "ticks" {
				return q.Depth >= 3
			}
		}
		return false
	})
	q, err := a.Queue("ticks")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, q, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range ds {
		tick := d.Attributes["qrun.schedule.tick"]
		if seen[tick] {
			t.Fatalf("tick %s enqueued twice", tick)
		}
		seen[tick] = true
	}
	if len(ds) < 3 {
		t.Fatalf("received %d ticks, want at least 3", len(ds))
	}
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
