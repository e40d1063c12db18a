package server_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

func forwardWasm(tb testing.TB) string {
	tb.Helper()
	p, err := filepath.Abs("../../plugins/examples/wat/forward/forward.wasm")
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func parse(tb testing.TB, src string) *config.File {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "qrun.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	cfg, diags := config.Load(path, config.Options{Engines: server.Builtin()})
	if diags.HasErrors() {
		tb.Fatalf("config: %s", diags.Error())
	}
	return cfg
}

// start runs a server for cfg until the test ends and returns once it
// runs; the test fails if Run returns an error, which is also how a clean
// drain is checked.
func start(tb testing.TB, cfg *config.File, opts server.Options) *server.Server {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, opts)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx) }()
	// Ready before the test talks to it (readyz, say); Done instead if
	// starting failed, which Cleanup reports.
	select {
	case <-srv.Started():
	case <-srv.Done():
	}
	tb.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			tb.Errorf("run: %v", err)
		}
	})
	return srv
}

// waitDepths waits until every depth in want holds. It re-reads the depths
// whenever a delivery finishes (the settlement that changes them); the
// timer is a safety net for the changes no event marks (a lease lost, a
// message expiring), and the deadline only bounds a hang.
func waitDepths(t *testing.T, srv *server.Server, timeout time.Duration, want map[string]int64) {
	t.Helper()
	// Subscribed before the first read, so no settlement falls between
	// reading the depths and waiting for the next change.
	sub := srv.Subscribe(0, server.EventDeliveryFinished)
	defer sub.Close()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	recheck := time.NewTicker(100 * time.Millisecond)
	defer recheck.Stop()
	for {
		got := depths(t, srv)
		ok := true
		for q, n := range want {
			ok = ok && got[q] == n
		}
		if ok {
			return
		}
		select {
		case <-sub.Events():
		case <-recheck.C:
		case <-deadline.C:
			t.Fatalf("after %v: depths %v, want %v", timeout, depths(t, srv), want)
		}
	}
}

func depths(t *testing.T, srv *server.Server) map[string]int64 {
	t.Helper()
	qs, err := srv.Queues(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, q := range qs {
		out[q.Name] = q.Depth
	}
	return out
}

// counter is an Observer that signals when n deliveries settled, and nudges
// progress every 1024 so a producer can keep a bounded backlog.
type counter struct {
	n, want  atomic.Int64
	done     chan struct{}
	progress chan struct{}
	once     sync.Once
}

func newCounter(want int) *counter {
	c := &counter{done: make(chan struct{}), progress: make(chan struct{}, 1)}
	c.want.Store(int64(want))
	return c
}

// backlog bounds how far a benchmark producer runs ahead of the consumers:
// a steady flow rather than millions of queued records, all cold in cache
// and all scanned by the garbage collector.
const backlog = 64 << 10

func (c *counter) Settled(*engines.Delivery, engines.Verdict, time.Duration) {
	n := c.n.Add(1)
	if n%1024 == 0 {
		select {
		case c.progress <- struct{}{}:
		default:
		}
	}
	if n == c.want.Load() {
		c.once.Do(func() { close(c.done) })
	}
}

func TestServerRoutesPublishAndReportsQueues(t *testing.T) {
	t.Parallel()
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in"  { engine = "m" }
queue "out" { engine = "m" }
consumer "fwd" {
  queue = "in"
  plugin = %q
  config = { forward_to = "out" }
  publish = ["out"]
}`, forwardWasm(t)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	obs := newCounter(10)
	start(t, cfg, server.Options{Listener: ln, Observer: obs})
	ctx := context.Background()

	c := &admin.Client{BaseURL: "http://" + ln.Addr().String()}
	msgs := make([]admin.SendMessage, 10)
	for i := range msgs {
		msgs[i].Body = fmt.Sprintf("m%d", i)
	}
	resp, err := c.Send(ctx, "in", admin.SendRequest{Messages: msgs})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.IDs) != 10 || slices.Contains(resp.IDs, "") {
		t.Fatalf("ids %v", resp.IDs)
	}
	select {
	case <-obs.done:
	case <-time.After(10 * time.Second):
		t.Fatal("deliveries not handled")
	}
	qs, err := c.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, q := range qs {
		got[q.Name] = q.Depth
	}
	if got["in"] != 0 || got["out"] != 10 {
		t.Fatalf("depths %v, want in=0 out=10", got)
	}
	if _, err := c.Send(ctx, "nope", admin.SendRequest{SendMessage: admin.SendMessage{Body: "x"}}); err == nil {
		t.Fatal("send to an unknown queue succeeded")
	} else if se, ok := err.(*admin.StatusError); !ok || se.Status != 404 {
		t.Fatalf("unknown queue: %v, want 404", err)
	}
}

// BenchmarkEndToEnd measures the whole runtime on the memory engine with the
// WAT example handler (it acks: no forward_to is configured): producers
// enqueue 64-byte messages in batches, two workers receive, invoke and ack.
// Compare with BenchmarkRawCall in runtime/plugin, the raw ceiling of
// wazero underneath, run by the same `make bench`.
func BenchmarkEndToEnd(b *testing.B) {
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			cfg := parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" { engine = "m" }
consumer "ack" {
  queue = "in"
  plugin = %q
  concurrency = %d
  batch = 256
}`, forwardWasm(b), conc))
			obs := newCounter(b.N)
			srv := start(b, cfg, server.Options{Observer: obs})
			runEndToEnd(b, srv, obs, 256)
		})
	}
}

// signal is an Observer that reports each settled delivery on a channel.
type signal chan time.Time

func (s signal) Settled(*engines.Delivery, engines.Verdict, time.Duration) { s <- time.Now() }

// BenchmarkLatency measures an idle runtime's delivery latency: one 64-byte
// message at a time, from Enqueue returning to the verdict applied, so the
// figure is the wake-up and handling path, not time spent in a backlog.
func BenchmarkLatency(b *testing.B) {
	cfg := parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" { engine = "m" }
consumer "ack" {
  queue = "in"
  plugin = %q
  concurrency = 1
}`, forwardWasm(b)))
	sig := make(signal, 1)
	srv := start(b, cfg, server.Options{Observer: sig})
	ctx := context.Background()
	msg := []engines.Message{{Body: make([]byte, 64)}}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		msg[0].ID = ""
		start := time.Now()
		if err := srv.Enqueue(ctx, "in", msg); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, (<-sig).Sub(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// TestNewFailsCleanly checks that a runtime that cannot start says why and
// closes what it had opened, instead of crashing.
func TestNewFailsCleanly(t *testing.T) {
	t.Parallel()
	garbage := filepath.Join(t.TempDir(), "garbage.wasm")
	if err := os.WriteFile(garbage, []byte("not a module"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, src, want string
	}{
		{"unwritable data dir", `runtime {
  admin_listen = "off"
  data_dir = "/proc/qrun-cannot-exist/data"
}
engine "m" { type = "memory" }`, "data dir"},
		{"plugin that does not load", fmt.Sprintf(`runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "q" { engine = "m" }
consumer "c" {
  queue  = "q"
  plugin = %q
}`, garbage), `consumer "c"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, err := server.New(context.Background(), parse(t, tt.src), server.Options{})
			if err == nil || srv != nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, %v; want an error mentioning %q", srv, err, tt.want)
			}
		})
	}
}

// TestErrorsNameTheirSubjectOnce: a consumer whose plugin fails to start
// is named once in the error, not by every layer it passes (issue 12 item
// 8: `consumer "m": plugin: consumer "m": new instance: ...`). Validation
// refuses it first (PluginChecker), with the same single naming.
func TestErrorsNameTheirSubjectOnce(t *testing.T) {
	t.Parallel()
	wasm, err := filepath.Abs("../plugin/testdata/init_fail.wasm")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`
runtime {
  admin_listen = "off"
}
engine "m" { type = "memory" }
queue "q" { engine = "m" }
consumer "m" {
  queue  = "q"
  plugin = %q
}`, wasm))
	_, err = server.New(context.Background(), cfg, server.Options{})
	if err == nil || strings.Count(err.Error(), `consumer "m"`) != 1 || !strings.Contains(err.Error(), "qrun_init returned 1") {
		t.Fatalf("New: %v, want an error naming consumer \"m\" once", err)
	}
	check, closeCheck := server.PluginChecker(context.Background(), false)
	defer closeCheck()
	err = check(cfg, &cfg.Consumers[0])
	if err == nil || strings.Count(err.Error(), `consumer "m"`) != 1 || !strings.Contains(err.Error(), "qrun_init returned 1") {
		t.Fatalf("PluginChecker: %v, want an error naming consumer \"m\" once", err)
	}
}
