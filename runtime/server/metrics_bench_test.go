package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/server"
)

// BenchmarkEndToEndMetrics is BenchmarkEndToEnd/concurrency=2 with metrics
// off and on (the latency histogram recorded, /metrics served), in the same
// run; metrics=off is the ceiling of metrics=on. On a busy machine the
// difference between two benchmarks run one after the other is mostly the
// machine's drift; BenchmarkMetricsOverhead interleaves the two and adds
// the cost of scraping.
func BenchmarkEndToEndMetrics(b *testing.B) {
	for _, v := range []struct {
		name    string
		metrics bool
		scrape  time.Duration
	}{
		{"metrics=off", false, 0},
		{"metrics=on", true, 0},
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
			runEndToEnd(b, srv, obs, 256)
		})
	}
}

// scrapeEvery fetches url at once and then every period until the
// returned stop is called.
func scrapeEvery(b *testing.B, url string, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for first := true; ; first = false {
			if !first {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
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

// runEndToEnd is the end-to-end benchmarks' producer loop: b.N 64-byte
// messages into queue "in", in batches of batch, at most backlog ahead of
// the consumers; it reports msgs/s once obs has seen every one settled.
func runEndToEnd(b *testing.B, srv *server.Server, obs *counter, batch int) {
	ctx := context.Background()
	body := make([]byte, 64)
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

// chunkCounter signals when a server has settled the messages of a chunk.
type chunkCounter struct {
	n, target atomic.Int64
	reached   chan struct{}
}

func (c *chunkCounter) Settled(*engines.Delivery, engines.Verdict, time.Duration) {
	if c.n.Add(1) == c.target.Load() {
		c.reached <- struct{}{}
	}
}

// BenchmarkMetricsOverhead compares metrics off and on (histogram recorded,
// /metrics scraped) by alternating between two runtimes in chunks of 8Ki
// messages within one benchmark, so that load from anything else on the
// machine falls on both alike: a benchmark per variant, run one after the
// other, cannot tell a few percent from the machine's drift. Only the
// runtime being fed is busy; the other's workers wait in Receive. Scrapes
// happen during metrics=on's chunks only, once per interval of its running
// time, so their cost is charged to it in full. It reports wall and CPU
// time per message for each and the overhead of metrics=on relative to
// metrics=off, its ceiling. scrape=1s is an aggressive real setting
// (Prometheus' default is 15s); scrape=100ms is a stress test.
func BenchmarkMetricsOverhead(b *testing.B) {
	for _, interval := range []time.Duration{time.Second, 100 * time.Millisecond} {
		b.Run("scrape="+interval.String(), func(b *testing.B) { metricsOverhead(b, interval) })
	}
}

func metricsOverhead(b *testing.B, interval time.Duration) {
	src := fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" { engine = "m" }
consumer "ack" {
  queue = "in"
  plugin = %q
  concurrency = 2
  batch = 256
}`, forwardWasm(b))
	type variant struct {
		srv      *server.Server
		obs      *chunkCounter
		scraper  *scraper
		wall     time.Duration
		cpu      time.Duration
		messages int
	}
	newVariant := func(metrics bool) *variant {
		v := &variant{obs: &chunkCounter{reached: make(chan struct{}, 1)}}
		opts := server.Options{Observer: v.obs}
		if metrics {
			ln := listen(b)
			opts.Listener = ln
			v.scraper = &scraper{url: "http://" + ln.Addr().String() + "/metrics", every: interval}
		}
		v.srv = start(b, parse(b, src), opts)
		return v
	}
	off, on := newVariant(false), newVariant(true)
	body := make([]byte, 64)
	const chunk, batch = 8 << 10, 256
	ctx := context.Background()
	run := func(v *variant, n int) {
		start, cpu0 := time.Now(), cpuTime(b)
		if v.scraper != nil {
			defer v.scraper.run()()
		}
		v.obs.target.Store(v.obs.n.Load() + int64(n))
		for sent := 0; sent < n; sent += batch {
			msgs := make([]engines.Message, min(batch, n-sent))
			for i := range msgs {
				msgs[i].Body = body
			}
			if err := v.srv.Enqueue(ctx, "in", msgs); err != nil {
				b.Fatal(err)
			}
		}
		<-v.obs.reached
		defer func() { // after the scraper stopped: its last scrape counts
			v.wall += time.Since(start)
			v.cpu += cpuTime(b) - cpu0
			v.messages += n
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		// Alternate which goes first, so neither always follows the other.
		if (done/chunk)%2 == 0 {
			run(off, n)
			run(on, n)
		} else {
			run(on, n)
			run(off, n)
		}
	}
	b.StopTimer()
	per := func(d time.Duration, v *variant) float64 { return float64(d.Nanoseconds()) / float64(v.messages) }
	b.ReportMetric(per(off.wall, off), "off-ns/msg")
	b.ReportMetric(per(on.wall, on), "on-ns/msg")
	b.ReportMetric(per(off.cpu, off), "off-cpu-ns/msg")
	b.ReportMetric(per(on.cpu, on), "on-cpu-ns/msg")
	b.ReportMetric(100*(per(on.wall, on)/per(off.wall, off)-1), "overhead-%")
	b.ReportMetric(100*(per(on.cpu, on)/per(off.cpu, off)-1), "cpu-overhead-%")
	b.ReportMetric(float64(on.scraper.scrapes), "scrapes")
}

// scraper reads /metrics once per interval of the time it runs, across
// any number of runs: a run that ends before the next scrape is due
// carries the wait over to the next run.
type scraper struct {
	url     string
	every   time.Duration
	due     time.Duration // running time left until the next scrape
	scrapes int
}

// run starts scraping and returns the function that stops it.
func (s *scraper) run() (stop func()) {
	if s.due == 0 {
		s.due = s.every
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			began := time.Now()
			t := time.NewTimer(s.due)
			select {
			case <-quit:
				t.Stop()
				s.due -= time.Since(began)
				return
			case <-t.C:
			}
			resp, err := http.Get(s.url)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				s.scrapes++
			}
			s.due = s.every
		}
	}()
	return func() { close(quit); <-done }
}
