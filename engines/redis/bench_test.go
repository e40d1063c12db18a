package redis_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/redis"
	"github.com/qrun-dev/qrun/engines/redis/redistest"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// The benchmarks come in pairs: qrun's figure and the raw ceiling of the
// same mechanism on the same server in the same run, so the ratio between
// them is what qrun costs. Messages are 64 bytes, batches 100.
const (
	benchBody  = 64
	benchBatch = 100
)

func rate(b *testing.B, n int, el time.Duration) {
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
}

// BenchmarkConformance runs enginetest's shared engine benchmarks.
func BenchmarkConformance(b *testing.B) {
	redistest.Need(b, srv)
	enginetest.Bench(b, enginetest.Harness{New: func(tb testing.TB) engines.Engine {
		return newEngine(tb, "", redis.Options{Logger: zap.NewNop()})
	}})
}

// prefill enqueues n messages through the engine, outside the timer.
func prefill(b *testing.B, q engines.Queue, n int) {
	b.Helper()
	body := make([]byte, benchBody)
	for n > 0 {
		k := min(n, 1000)
		msgs := make([]engines.Message, k)
		for i := range msgs {
			msgs[i].Body = body
		}
		if err := q.Enqueue(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
		n -= k
	}
}

// counter is a server Observer that signals once want deliveries settled.
type counter struct {
	n    atomic.Int64
	want int64
	done chan struct{}
	once sync.Once
}

func (c *counter) Settled(*engines.Delivery, engines.Verdict, time.Duration) {
	if c.n.Add(1) == c.want {
		c.once.Do(func() { close(c.done) })
	}
}

// BenchmarkEndToEnd runs the whole runtime on the redis engine: the WAT
// forward handler (which just acks without forward_to) consumes a backlog
// of 64-byte messages with 1 and 4 workers, each leasing up to 100 at a
// time. Ceiling: BenchmarkRawStream with as many consumers, or both fed
// alternately in BenchmarkVersusRaw.
func BenchmarkEndToEnd(b *testing.B) {
	for _, conc := range []int{1, 4} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			s := redistest.Need(b, srv)
			n := b.N * benchBatch
			rate(b, n, qrunRound(b, s, conc, n, nil))
		})
	}
}

// BenchmarkRawStream is the ceiling: go-redis's own consumer-group loop on
// the same server, each consumer doing XREADGROUP COUNT 100 and one XACK
// of the batch, over a backlog of 64-byte entries.
func BenchmarkRawStream(b *testing.B) {
	for _, conc := range []int{1, 4} {
		b.Run(fmt.Sprintf("consumers=%d", conc), func(b *testing.B) {
			s := redistest.Need(b, srv)
			n := b.N * benchBatch
			rate(b, n, rawRound(b, s, conc, n, nil))
		})
	}
}

// BenchmarkVersusRaw alternates the two in one benchmark, a backlog of
// 20,000 messages at a time (qrun first in even rounds, raw first in odd
// ones), so that both see the same load of a shared machine; it reports
// each side's rate and their ratio. b.N counts batches of 100.
func BenchmarkVersusRaw(b *testing.B) {
	for _, conc := range []int{1, 4} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			s := redistest.Need(b, srv)
			const chunk = 20000
			var qrunWall, rawWall time.Duration
			total := b.N * benchBatch
			for done, round := 0, 0; done < total; round++ {
				n := min(chunk, total-done)
				if round%2 == 0 {
					qrunWall += qrunRound(b, s, conc, n, nil)
					rawWall += rawRound(b, s, conc, n, nil)
				} else {
					rawWall += rawRound(b, s, conc, n, nil)
					qrunWall += qrunRound(b, s, conc, n, nil)
				}
				done += n
			}
			q := float64(total) / qrunWall.Seconds()
			r := float64(total) / rawWall.Seconds()
			b.ReportMetric(q, "qrun-msgs/s")
			b.ReportMetric(r, "raw-msgs/s")
			b.ReportMetric(100*q/r, "ratio-%")
		})
	}
}

// qrunRound prefills a queue of its own with n messages, starts the
// runtime on it with conc workers and returns how long they took to
// handle them all; only that part runs on the benchmark's timer, and m
// (when not nil) measures the server over just that part.
func qrunRound(b *testing.B, s *redistest.Server, conc, n int, m *meter) time.Duration {
	b.StopTimer()
	prefix := s.Prefix(b)
	pre := newEngine(b, prefix, redis.Options{URL: s.URL, Logger: zap.NewNop()})
	q, err := pre.Open(context.Background(), engines.QueueSpec{Name: "in"})
	if err != nil {
		b.Fatal(err)
	}
	prefill(b, q, n)
	// The prefilling handle's reaper would otherwise keep calling the
	// server, in later rounds too.
	_ = q.Close()
	wasm, err := filepath.Abs("../../plugins/examples/wat/forward/forward.wasm")
	if err != nil {
		b.Fatal(err)
	}
	src := fmt.Sprintf(`
runtime {
  admin_listen = "off"
  data_dir     = %q
}
engine "rd" {
  type       = "redis"
  url        = %q
  key_prefix = %q
}
queue "in" { engine = "rd" }
consumer "ack" {
  queue       = "in"
  plugin      = %q
  concurrency = %d
  batch       = %d
}`, b.TempDir(), s.URL, prefix, wasm, conc, benchBatch)
	cfg, diags := config.Parse("bench.hcl", []byte(src), config.Options{Engines: server.Builtin()})
	if diags.HasErrors() {
		b.Fatal(hcl.Diagnostics(diags))
	}
	obs := &counter{want: int64(n), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt, err := server.New(ctx, cfg, server.Options{Observer: obs})
	if err != nil {
		b.Fatal(err)
	}
	m.begin(b)
	b.StartTimer()
	start := time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(ctx) }()
	<-obs.done
	el := time.Since(start)
	b.StopTimer()
	m.end(b)
	cancel()
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	return el
}

// rawRound prefills a stream of its own with n entries and returns how
// long conc go-redis consumers took to read and acknowledge them all; m
// (when not nil) measures the server over that part.
func rawRound(b *testing.B, s *redistest.Server, conc, n int, m *meter) time.Duration {
	b.StopTimer()
	opt, err := goredis.ParseURL(s.URL)
	if err != nil {
		b.Fatal(err)
	}
	c := goredis.NewClient(opt)
	defer c.Close()
	ctx := context.Background()
	key := s.Prefix(b) + "raw"
	body := string(make([]byte, benchBody))
	for left := n; left > 0; left -= 1000 {
		p := c.Pipeline()
		for range min(left, 1000) {
			p.XAdd(ctx, &goredis.XAddArgs{Stream: key, Values: []any{"m", body}})
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.XGroupCreate(ctx, key, "g", "0").Err(); err != nil {
		b.Fatal(err)
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	// The clock stops at the last ack, not when the consumers left waiting
	// in XREADGROUP BLOCK on the empty stream give up.
	var end time.Time
	reached := make(chan struct{})
	m.begin(b)
	b.StartTimer()
	start := time.Now()
	for i := range conc {
		wg.Go(func() {
			ids := make([]string, 0, benchBatch)
			for done.Load() < int64(n) {
				res, err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: fmt.Sprint("c", i),
					Streams: []string{key, ">"}, Count: benchBatch, Block: 100 * time.Millisecond}).Result()
				if err == goredis.Nil {
					continue
				}
				if err != nil {
					b.Error(err)
					return
				}
				ids = ids[:0]
				for _, m := range res[0].Messages {
					ids = append(ids, m.ID)
				}
				if err := c.XAck(ctx, key, "g", ids...).Err(); err != nil {
					b.Error(err)
					return
				}
				if done.Add(int64(len(ids))) == int64(n) {
					end = time.Now()
					close(reached)
				}
			}
		})
	}
	<-reached
	el := end.Sub(start)
	b.StopTimer()
	m.end(b)
	wg.Wait()
	// Acked entries stay in a stream: drop it, so that rounds to come do
	// not pay for a growing data set (and append-only file rewrites).
	if err := c.Del(ctx, key).Err(); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	return el
}

// TestSendDirect: `qrun send` writes straight into a redis queue (the
// type is Shared), as a producer that starts no reaper, and a consuming
// engine receives the message.
func TestSendDirect(t *testing.T) {
	s := redistest.Need(t, srv)
	prefix := s.Prefix(t)
	src := fmt.Sprintf(`
engine "rd" {
  type       = "redis"
  url        = %q
  key_prefix = %q
}
queue "in" { engine = "rd" }`, s.URL, prefix)
	cfg, diags := config.Parse("send.hcl", []byte(src), config.Options{Engines: server.Builtin()})
	if diags.HasErrors() {
		t.Fatal(hcl.Diagnostics(diags))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := server.SendDirect(ctx, cfg, nil, "in", []engines.Message{{Body: []byte("sent")}}, nil); err != nil {
		t.Fatal(err)
	}
	q, err := newEngine(t, prefix, redis.Options{}).Open(ctx, engines.QueueSpec{Name: "in"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, q, 1)
	if err != nil || string(ds[0].Body) != "sent" {
		t.Fatalf("received %v, %v; want the message sent", ds, err)
	}
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
}
