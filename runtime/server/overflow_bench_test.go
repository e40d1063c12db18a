package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/server"
)

// queueCounter counts the settled deliveries of one queue and closes done
// at want; the other queues' deliveries are counted apart.
type queueCounter struct {
	queue  string
	n      atomic.Int64
	want   atomic.Int64
	others atomic.Int64
	done   chan struct{}
}

func (c *queueCounter) Settled(d *engines.Delivery, _ engines.Verdict, _ time.Duration) {
	if d.Queue != c.queue {
		c.others.Add(1)
		return
	}
	if c.n.Add(1) == c.want.Load() {
		close(c.done)
	}
}

// BenchmarkRecursingNeighbours is what guests recursing without end cost a
// healthy consumer on another queue of the same process: the WAT example
// acking 64-byte messages (concurrency 1) alone, then with four consumers
// beside it whose every delivery recurses until the call depth bound
// (runtime/plugin's runaway.wasm, body "r", default max_call_depth) and so
// fails and replaces its instance; "unbounded" sets max_call_depth to its maximum,
// 1,000,000, past what wazero's own stack allows, which is how an overflow
// went before the bound (issue 14).
// alone-msgs/s and beside-msgs/s are the
// healthy consumer's rates in the two phases of one run, ratio the second
// over the first; overflows/s is the four neighbours' failed deliveries.
func BenchmarkRecursingNeighbours(b *testing.B) {
	for _, tc := range []struct{ name, depth string }{
		{"max_call_depth=default", ""},
		{"max_call_depth=unbounded", "max_call_depth = 1000000"},
	} {
		b.Run(tc.name, func(b *testing.B) { benchRecursingNeighbours(b, tc.depth) })
	}
}

func benchRecursingNeighbours(b *testing.B, depth string) {
	const neighbours = 4
	runaway, err := filepath.Abs("../plugin/testdata/runaway.wasm")
	if err != nil {
		b.Fatal(err)
	}
	var src strings.Builder
	fmt.Fprintf(&src, `
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" { engine = "m" }
consumer "ack" {
  queue = "in"
  plugin = %q
  concurrency = 1
  batch = 256
}`, forwardWasm(b))
	for i := range neighbours {
		fmt.Fprintf(&src, `
queue "r%d" {
  engine = "m"
  max_attempts = 1000000
  retry {
    initial = "1ms"
    max = "1ms"
  }
}
consumer "r%d" {
  queue = "r%d"
  plugin = %q
  %s
}`, i, i, i, runaway, depth)
	}
	cfg := parse(b, src.String())
	obs := &queueCounter{queue: "in"}
	srv := start(b, cfg, server.Options{Observer: obs})
	ctx := context.Background()
	body := make([]byte, 64)
	phase := func() float64 {
		obs.n.Store(0)
		obs.want.Store(int64(b.N))
		obs.done = make(chan struct{})
		start := time.Now()
		for sent := 0; sent < b.N; sent += 256 {
			for int64(sent)-obs.n.Load() > backlog {
				time.Sleep(100 * time.Microsecond) // pacing the producer, not synchronising
			}
			msgs := make([]engines.Message, min(256, b.N-sent))
			for i := range msgs {
				msgs[i].Body = body
			}
			if err := srv.Enqueue(ctx, "in", msgs); err != nil {
				b.Fatal(err)
			}
		}
		<-obs.done
		return float64(b.N) / time.Since(start).Seconds()
	}
	b.ResetTimer()
	alone := phase()
	// The neighbours' messages never succeed; each is retried after a
	// millisecond, so a few keep every neighbour overflowing.
	for i := range neighbours {
		msgs := make([]engines.Message, 64)
		for j := range msgs {
			msgs[j].Body = []byte("r")
		}
		if err := srv.Enqueue(ctx, fmt.Sprintf("r%d", i), msgs); err != nil {
			b.Fatal(err)
		}
	}
	for obs.others.Load() < neighbours { // every neighbour under way
		time.Sleep(time.Millisecond) // polling a counter, not synchronising
	}
	o0, t0 := obs.others.Load(), time.Now()
	beside := phase()
	overflows := float64(obs.others.Load()-o0) / time.Since(t0).Seconds()
	b.StopTimer()
	b.ReportMetric(alone, "alone-msgs/s")
	b.ReportMetric(beside, "beside-msgs/s")
	b.ReportMetric(beside/alone, "ratio")
	b.ReportMetric(overflows, "overflows/s")
}
