package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/server"
)

// BenchmarkEndToEndMetrics is BenchmarkEndToEnd/concurrency=2 with metrics
// off and on, in the same run, so the figures can be compared (metrics=off
// is the ceiling of the others). With metrics on, the dispatcher records
// every handler call in its latency histogram; "scrape=100ms" also has a
// client read /metrics every 100ms, 150 times as often as Prometheus' usual
// 15s, so the scrapes' own cost is in that figure too.
func BenchmarkEndToEndMetrics(b *testing.B) {
	for _, v := range []struct {
		name    string
		metrics bool
		scrape  time.Duration
	}{
		{"metrics=off", false, 0},
		{"metrics=on", true, 0},
		{"metrics=on/scrape=100ms", true, 100 * time.Millisecond},
	} {
		b.Run(v.name, func(b *testing.B) {
			// Each variant starts from a collected heap, so the one that
			// runs first has no advantage (without this, it is ~8% faster).
			debug.FreeOSMemory()
			cfg := parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" { engine = "m" }
consumer "ack" {
  queue = "in"
  plugin = %q
  concurrency = 2
  batch = 256
}`, forwardWasm(b)))
			obs := newCounter(b.N)
			opts := server.Options{Observer: obs}
			if v.metrics {
				ln := listen(b)
				opts.Listener = ln
				if v.scrape > 0 {
					stop := scrapeEvery(b, "http://"+ln.Addr().String()+"/metrics", v.scrape)
					defer stop()
				}
			}
			srv := start(b, cfg, opts)
			if v.metrics != (srv.Metrics() != nil) {
				b.Fatalf("metrics %v, want %v", srv.Metrics() != nil, v.metrics)
			}
			runEndToEnd(b, srv, obs)
		})
	}
}

// scrapeEvery fetches url every period until the returned stop is called.
func scrapeEvery(b *testing.B, url string, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				continue // not listening yet, or stopping
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	return func() { cancel(); <-done }
}

// runEndToEnd is BenchmarkEndToEnd's producer loop: 64-byte messages in
// batches of 256, at most backlog ahead of the consumers.
func runEndToEnd(b *testing.B, srv *server.Server, obs *counter) {
	ctx := context.Background()
	body := make([]byte, 64)
	const batch = 256
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b)
	for sent := 0; sent < b.N; sent += batch {
		for int64(sent)-obs.n.Load() > backlog {
			select {
			case <-obs.progress:
			case <-obs.done:
			}
		}
		n := min(batch, b.N-sent)
		msgs := make([]engines.Message, n)
		for i := range msgs {
			msgs[i].Body = body
		}
		if err := srv.Enqueue(ctx, "in", msgs); err != nil {
			b.Fatal(err)
		}
	}
	<-obs.done
	el, cpu := time.Since(start), cpuTime(b)-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	// CPU time per message counts what the process spent, scraper and
	// HTTP server included, and is far less disturbed than wall time by
	// other work on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
}

// cpuTime is the process' user plus system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
