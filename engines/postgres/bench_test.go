package postgres_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
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

func benchEngine(b *testing.B, schema string) *postgres.Engine {
	return newEngine(b, schema, postgres.Options{Logger: zap.NewNop(), MaxConns: 10})
}

func rate(b *testing.B, n int, el time.Duration) {
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
}

// BenchmarkConformance runs enginetest's shared engine benchmarks.
func BenchmarkConformance(b *testing.B) {
	pgtest.Need(b, srv)
	enginetest.Bench(b, enginetest.Harness{New: func(tb testing.TB) engines.Engine {
		return newEngine(tb, "", postgres.Options{Logger: zap.NewNop()})
	}})
}

// prefill enqueues n messages through the engine, outside the timer.
func prefill(b *testing.B, q engines.Queue, n int) {
	b.Helper()
	body := make([]byte, benchBody)
	ctx := context.Background()
	for n > 0 {
		k := min(n, 1000)
		msgs := make([]engines.Message, k)
		for i := range msgs {
			msgs[i].Body = body
		}
		if err := q.Enqueue(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
		n -= k
	}
}

// BenchmarkEnqueue: batches of 100 through Enqueue, one statement each.
// Ceiling: BenchmarkRawInsert.
func BenchmarkEnqueue(b *testing.B) {
	e := benchEngine(b, "")
	q := open(b, e, engines.QueueSpec{Name: "bench"})
	body := make([]byte, benchBody)
	msgs := make([]engines.Message, benchBatch)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for j := range msgs {
			msgs[j] = engines.Message{Body: body}
		}
		if err := q.Enqueue(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	rate(b, b.N*benchBatch, time.Since(start))
}

// BenchmarkRawInsert is the ceiling of Enqueue: one INSERT of 100 rows from
// an array, on a table with nothing but a key and a body.
func BenchmarkRawInsert(b *testing.B) {
	conn, table := rawTable(b)
	body := make([]byte, benchBody)
	bodies := make([][]byte, benchBatch)
	for i := range bodies {
		bodies[i] = body
	}
	ctx := context.Background()
	sql := "INSERT INTO " + table + " (body) SELECT unnest($1::bytea[])"
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := conn.Exec(ctx, sql, bodies); err != nil {
			b.Fatal(err)
		}
	}
	rate(b, b.N*benchBatch, time.Since(start))
}

func rawTable(b *testing.B) (*pgx.Conn, string) {
	b.Helper()
	s := pgtest.Need(b, srv)
	schema := s.Schema(b)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(ctx) })
	table := pgx.Identifier{schema, "raw"}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()+"; CREATE TABLE "+table+" (id bigserial PRIMARY KEY, body bytea NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	return conn, table
}

// BenchmarkReceiveAck: consumers receive batches of up to 100 and ack each
// message, from a backlog filled beforehand. Ceiling:
// BenchmarkRawDeleteSkipLocked with as many consumers.
func BenchmarkReceiveAck(b *testing.B) {
	for _, consumers := range []int{1, 4} {
		b.Run(fmt.Sprintf("consumers=%d", consumers), func(b *testing.B) {
			e := benchEngine(b, "")
			q := open(b, e, engines.QueueSpec{Name: "bench"})
			n := b.N * benchBatch
			prefill(b, q, n)
			var left atomic.Int64
			left.Store(int64(n))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for c := 0; c < consumers; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]engines.Delivery, benchBatch)
					for left.Load() > 0 {
						k, err := q.Receive(ctx, buf)
						if err != nil {
							if ctx.Err() == nil {
								b.Error(err)
							}
							return
						}
						for i := range buf[:k] {
							if err := buf[i].Ack(ctx); err != nil {
								b.Error(err)
								return
							}
						}
						if left.Add(-int64(k)) <= 0 {
							cancel()
						}
					}
				}()
			}
			wg.Wait()
			// Count the batched acks as done only once they are written.
			if _, err := q.Stats(context.Background()); err != nil {
				b.Fatal(err)
			}
			rate(b, n, time.Since(start))
		})
	}
}

// BenchmarkRawDeleteSkipLocked is the ceiling of receive+ack: consumers
// that take and delete 100 rows per statement, the least a SKIP LOCKED
// queue can do per message.
func BenchmarkRawDeleteSkipLocked(b *testing.B) {
	for _, consumers := range []int{1, 4} {
		b.Run(fmt.Sprintf("consumers=%d", consumers), func(b *testing.B) {
			conn, table := rawTable(b)
			ctx := context.Background()
			n := b.N * benchBatch
			conns := fillRaw(b, conn, table, consumers)
			sql := "DELETE FROM " + table + " WHERE id IN (SELECT id FROM " + table +
				" ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id, body"
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						rows, err := c.Query(ctx, sql)
						if err != nil {
							b.Error(err)
							return
						}
						k := 0
						for rows.Next() {
							var id int64
							var body []byte
							if err := rows.Scan(&id, &body); err != nil {
								b.Error(err)
							}
							k++
						}
						rows.Close()
						if k == 0 {
							return
						}
					}
				}()
			}
			wg.Wait()
			rate(b, n, time.Since(start))
		})
	}
}

// BenchmarkRawLeaseDelete is the ceiling of any design that leases a
// message before deleting it, which redelivery after a crash requires: the
// least such a queue can write per message. Each consumer sends, in one
// pipelined transaction (one commit), the DELETE of the 100 rows it leased
// last time and an UPDATE that leases the next 100 (FOR UPDATE SKIP LOCKED;
// state, due time and token change, so the new row version lands in the
// primary key and in a due-time index a reaper could use). qrun's Receive
// and batched Ack do this, plus attempts, TTLs, counters and ordering;
// BenchmarkReceiveAck against this figure is what those cost, and this
// figure against BenchmarkRawDeleteSkipLocked is what the lease costs.
func BenchmarkRawLeaseDelete(b *testing.B) {
	for _, consumers := range []int{1, 4} {
		b.Run(fmt.Sprintf("consumers=%d", consumers), func(b *testing.B) {
			conn, table := rawTable(b)
			ctx := context.Background()
			ddl := "ALTER TABLE " + table + " ADD COLUMN state smallint NOT NULL DEFAULT 0," +
				" ADD COLUMN visible_at timestamptz NOT NULL DEFAULT now(), ADD COLUMN token bigint;" +
				" CREATE INDEX ON " + table + " (id) WHERE state = 0;" +
				" CREATE INDEX ON " + table + " (visible_at) WHERE state = 2"
			if _, err := conn.Exec(ctx, ddl); err != nil {
				b.Fatal(err)
			}
			n := b.N * benchBatch
			conns := fillRaw(b, conn, table, consumers)
			lease := "UPDATE " + table + " SET state = 2, visible_at = now() + interval '30 seconds', token = $1" +
				" WHERE id IN (SELECT id FROM " + table + " WHERE state = 0 ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)" +
				" RETURNING id, body"
			del := "DELETE FROM " + table + " WHERE id = ANY($1::bigint[]) AND token = $2 AND state = 2"
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for ci, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var held []int64
					for token := int64(ci) << 32; ; token++ {
						batch := &pgx.Batch{}
						if len(held) > 0 {
							batch.Queue(del, held, token-1)
						}
						batch.Queue(lease, token)
						br := c.SendBatch(ctx, batch)
						if len(held) > 0 {
							if _, err := br.Exec(); err != nil {
								b.Error(err)
								br.Close()
								return
							}
						}
						rows, err := br.Query()
						if err != nil {
							b.Error(err)
							br.Close()
							return
						}
						held = held[:0]
						for rows.Next() {
							var id int64
							var body []byte
							if err := rows.Scan(&id, &body); err != nil {
								b.Error(err)
							}
							held = append(held, id)
						}
						rows.Close()
						if err := br.Close(); err != nil {
							b.Error(err)
							return
						}
						if len(held) == 0 {
							return
						}
					}
				}()
			}
			wg.Wait()
			rate(b, n, time.Since(start))
		})
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

// BenchmarkEndToEnd runs the whole runtime on the postgres engine: the
// WAT forward handler (which just acks without forward_to) consumes a
// backlog of 64-byte messages with 1 and 4 workers, each leasing up to 100
// at a time. Ceiling: BenchmarkRawDeleteSkipLocked. The long_timeout case
// gives the consumer a timeout equal to the queue's visibility timeout
// (5s each), which once made the dispatcher extend every lease before
// handling it (issue 12 item 4); it must run at the default's rate.
func BenchmarkEndToEnd(b *testing.B) {
	cases := []struct {
		name      string
		conc      int
		queueOpts string
		consOpts  string
	}{
		{"concurrency=1", 1, "", ""},
		{"concurrency=4", 4, "", ""},
		{"concurrency=4/long_timeout", 4, `visibility_timeout = "5s"`, `timeout = "5s"`},
	}
	for _, tc := range cases {
		conc := tc.conc
		b.Run(tc.name, func(b *testing.B) {
			s := pgtest.Need(b, srv)
			schema := s.Schema(b)
			n := b.N * benchBatch
			pre := benchEngine(b, schema)
			prefill(b, open(b, pre, engines.QueueSpec{Name: "in"}), n)
			wasm, err := filepath.Abs("../../plugins/examples/wat/forward/forward.wasm")
			if err != nil {
				b.Fatal(err)
			}
			src := fmt.Sprintf(`
runtime {
  admin_listen = "off"
  data_dir     = %q
}
engine "pg" {
  type   = "postgres"
  dsn    = %q
  schema = %q
}
queue "in" {
  engine = "pg"
  %s
}
consumer "ack" {
  queue       = "in"
  plugin      = %q
  concurrency = %d
  batch       = 100
  %s
}`, b.TempDir(), s.DSN, schema, tc.queueOpts, wasm, conc, tc.consOpts)
			cfg, diags := config.Parse("bench.hcl", []byte(src), config.Options{Engines: server.Builtin()})
			if diags.HasErrors() {
				b.Fatal(hcl.Diagnostics(diags))
			}
			obs := &counter{want: int64(n), done: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			// New opens the engine and compiles the plugin; Run starts the
			// consumers, and the clock.
			rt, err := server.New(ctx, cfg, server.Options{Observer: obs})
			if err != nil {
				cancel()
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			runErr := make(chan error, 1)
			go func() { runErr <- rt.Run(ctx) }()
			<-obs.done
			el := time.Since(start)
			b.StopTimer()
			cancel()
			if err := <-runErr; err != nil {
				b.Fatal(err)
			}
			rate(b, n, el)
		})
	}
}

// BenchmarkIdleLatency: a consumer waits on an idle queue; a message is
// enqueued by another engine (another "node"), so the wake-up travels by
// LISTEN/NOTIFY. Reports the time from Enqueue to Receive returning.
func BenchmarkIdleLatency(b *testing.B) {
	for _, path := range []string{"same_engine", "other_engine_notify"} {
		b.Run(path, func(b *testing.B) {
			s := pgtest.Need(b, srv)
			schema := s.Schema(b)
			// Polling far slower than the figure measured, so only a
			// wake-up can explain it.
			cons := newEngine(b, schema, postgres.Options{Logger: zap.NewNop(), PollInterval: 10 * time.Second})
			prod := cons
			if path == "other_engine_notify" {
				prod = newEngine(b, schema, postgres.Options{Logger: zap.NewNop(), PollInterval: 10 * time.Second})
			}
			ctx := context.Background()
			waitFor(b, ctxT(b, 30*time.Second), "listeners", func() bool { return cons.Listening() && prod.Listening() })
			qc := open(b, cons, engines.QueueSpec{Name: "lat"})
			qp := open(b, prod, engines.QueueSpec{Name: "lat"})
			lat := make([]time.Duration, 0, b.N)
			got := make(chan time.Time, 1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				go func() {
					d, err := engines.ReceiveN(ctx, qc, 1)
					if err != nil {
						b.Error(err)
					}
					at := time.Now()
					_ = d[0].Ack(ctx)
					got <- at
				}()
				time.Sleep(2 * time.Millisecond) // let the receiver go idle: there is no event for "blocked"
				sent := time.Now()
				if err := qp.Enqueue(ctx, engines.Message{Body: []byte("ping")}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, (<-got).Sub(sent))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// fillRaw inserts b.N*benchBatch rows into a raw benchmark's table and
// opens one connection per consumer, closed when the benchmark ends.
func fillRaw(b *testing.B, conn *pgx.Conn, table string, consumers int) []*pgx.Conn {
	ctx := context.Background()
	body := make([]byte, benchBody)
	bodies := make([][]byte, 1000)
	for i := range bodies {
		bodies[i] = body
	}
	for left := b.N * benchBatch; left > 0; left -= 1000 {
		if _, err := conn.Exec(ctx, "INSERT INTO "+table+" (body) SELECT unnest($1::bytea[]) LIMIT $2", bodies, min(left, 1000)); err != nil {
			b.Fatal(err)
		}
	}
	conns := make([]*pgx.Conn, consumers)
	for i := range conns {
		c, err := pgx.Connect(ctx, srv.DSN)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(context.Background()) })
		conns[i] = c
	}
	return conns
}

// BenchmarkTx compares acking (batched by the acker) with SettleTx (one
// publish and one increment with each ack, one transaction each); see
// enginetest.BenchTx.
func BenchmarkTx(b *testing.B) {
	pgtest.Need(b, srv)
	enginetest.BenchTx(b, enginetest.Harness{New: func(tb testing.TB) engines.Engine {
		return newEngine(tb, "", postgres.Options{Logger: zap.NewNop()})
	}})
}
