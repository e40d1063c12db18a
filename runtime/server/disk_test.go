package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/testenv"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestDiskEngineSurvivesRestart stops a runtime holding messages and starts
// another on the same config: the messages are still there, and a second
// runtime on the data directory while the first runs is refused.
func TestDiskEngineSurvivesRestart(t *testing.T) {
	t.Parallel()
	cfg := parse(t, `
runtime { admin_listen = "off" }
engine "d" {
  type = "disk"
  lock_timeout = "100ms"
}
queue "q" { engine = "d" }`)
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Enqueue(ctx, "q", []engines.Message{{Body: []byte("a")}, {Body: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.New(ctx, cfg, server.Options{}); err == nil || !strings.Contains(err.Error(), cfg.Runtime.DataDir) {
		t.Fatalf("second runtime on the same data dir: %v; want an error naming it", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	cancel()
	if err := srv.Run(runCtx); err != nil {
		t.Fatal(err)
	}
	srv = start(t, cfg, server.Options{})
	if got := depths(t, srv)["q"]; got != 2 {
		t.Fatalf("depth after restart %d, want 2", got)
	}
	if _, err := os.Stat(filepath.Join(cfg.Runtime.DataDir, "d", "qrun.db")); err != nil {
		t.Fatalf("data file not under data_dir/<engine>: %v", err)
	}
}

// TestDiskLeaseOutstandingAtStopWaitsItsRetryDelay: the runtime hands the
// queue's retry block to the engine, so a message whose lease was
// outstanding when qrun stopped waits its retry delay after the restart
// instead of being ready at once (issue 12 item 2).
func TestDiskLeaseOutstandingAtStopWaitsItsRetryDelay(t *testing.T) {
	t.Parallel()
	cfg := parse(t, `
runtime { admin_listen = "off" }
engine "d" { type = "disk" }
queue "q" {
  engine       = "d"
  max_attempts = 5
  retry {
    initial = "1h"
    max     = "2h"
  }
}`)
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	q, err := srv.Queue("q")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if _, err := engines.ReceiveN(rctx, q, 1); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	cancel()
	if err := srv.Run(runCtx); err != nil {
		t.Fatal(err)
	}
	srv = start(t, cfg, server.Options{})
	if q, err = srv.Queue("q"); err != nil {
		t.Fatal(err)
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready != 0 || st.Delayed != 1 || st.ExpiredLeaseTotal != 1 {
		t.Fatalf("after restart: %+v, want the message delayed by its retry backoff", st)
	}
}

// BenchmarkEndToEndDisk is BenchmarkEndToEnd on the disk engine: 8
// producers enqueue 64-byte messages in batches of 256 (each batch durable
// before Enqueue returns), workers receive, invoke the WAT handler and ack.
// With sync = "always" the verdicts decided while one commit runs share the
// next; the run with 32 workers shows how far more workers push that.
// BenchmarkDiskRawFsync, in the same run, is the ceiling of one commit per
// message.
func BenchmarkEndToEndDisk(b *testing.B) {
	for _, c := range []struct {
		mode        string
		concurrency int
	}{{"always", 2}, {"always", 32}, {"batch", 2}} {
		mode := c.mode
		b.Run(fmt.Sprintf("sync=%s/producers=8/concurrency=%d", mode, c.concurrency), func(b *testing.B) {
			cfg := parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "d" {
  type = "disk"
  sync = %q
}
queue "in" { engine = "d" }
consumer "ack" {
  queue = "in"
  plugin = %q
  concurrency = %d
  batch = 256
}`, mode, forwardWasm(b), c.concurrency))
			obs := newCounter(b.N)
			srv := start(b, cfg, server.Options{Observer: obs})
			ctx := context.Background()
			body := make([]byte, 64)
			const producers, batch = 8, 256
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for p := range producers {
				share := b.N / producers
				if p == 0 {
					share += b.N % producers
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for done := 0; done < share; {
						for int64(done*producers)-obs.n.Load() > backlog {
							select {
							case <-obs.progress:
							case <-obs.done:
							}
						}
						n := min(batch, share-done)
						msgs := make([]engines.Message, n)
						for i := range msgs {
							msgs[i].Body = body
						}
						if err := srv.Enqueue(ctx, "in", msgs); err != nil {
							b.Error(err)
							return
						}
						done += n
					}
				}()
			}
			wg.Wait()
			if b.Failed() {
				return
			}
			<-obs.done
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
		})
	}
}

// BenchmarkDiskRawFsync is the raw ceiling under BenchmarkEndToEndDisk:
// rewrite 64 bytes of a preallocated file and fdatasync, in a loop, in the
// same file system (see engines/disk BenchmarkRawFsync for the variants).
func BenchmarkDiskRawFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := f.WriteAt(buf, 0); err != nil {
			b.Fatal(err)
		}
		if err := testenv.Datasync(f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
}
