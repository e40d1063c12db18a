package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/server"
)

func testWasm(tb testing.TB, name string) string {
	tb.Helper()
	p, err := filepath.Abs("../plugin/testdata/" + name + ".wasm")
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

func await(t *testing.T, c *counter) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%d of %d deliveries settled", c.n.Load(), c.want.Load())
	}
}

// scrape fetches /metrics over HTTP and parses it.
func scrape(t *testing.T, base, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with labels %v", name, want)
	return 0
}

// TestMetricsMatchAKnownWorkload runs a workload whose every outcome is
// known (the verdict module answers the verdict a body names) and checks the
// scraped figures equal it exactly.
func TestMetricsMatchAKnownWorkload(t *testing.T) {
	t.Parallel()
	cfg := parse(t, fmt.Sprintf(`
engine "m" { type = "memory" }
queue "in" {
  engine       = "m"
  max_attempts = 2
  dead_letter  = "dead"
  retry {
    initial = "1ms"
    max     = "1ms"
  }
}
queue "dead" { engine = "m" }
consumer "v" {
  queue       = "in"
  plugin      = %q
  concurrency = 2
}`, testWasm(t, "verdict")))
	// 5 acks; 3 nacks, each nacked twice then dead-lettered by the engine;
	// 2 requeued once then acked; 4 dead-lettered by the handler.
	bodies := map[string]int{"0": 5, "1": 3, "2": 2, "3": 4}
	const settles = 5 + 3*2 + 2*2 + 4
	ln := listen(t)
	obs := newCounter(settles)
	srv := start(t, cfg, server.Options{Listener: ln, Observer: obs})
	var msgs []engines.Message
	for b, n := range bodies {
		for range n {
			msgs = append(msgs, engines.Message{Body: []byte(b)})
		}
	}
	if err := srv.Enqueue(context.Background(), "in", msgs); err != nil {
		t.Fatal(err)
	}
	await(t, obs)

	mfs := scrape(t, "http://"+ln.Addr().String(), "")
	consumer := func(extra ...string) map[string]string {
		l := map[string]string{"consumer": "v", "queue": "in"}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return l
	}
	queue := func(name string) map[string]string { return map[string]string{"queue": name, "engine": "m"} }
	tests := []struct {
		metric string
		labels map[string]string
		want   float64
	}{
		{"qrun_consumer_deliveries_total", consumer("verdict", "ack"), 7},
		{"qrun_consumer_deliveries_total", consumer("verdict", "nack"), 6},
		{"qrun_consumer_deliveries_total", consumer("verdict", "requeue"), 2},
		{"qrun_consumer_deliveries_total", consumer("verdict", "dead_letter"), 4},
		{"qrun_consumer_traps_total", consumer(), 0},
		{"qrun_consumer_timeouts_total", consumer(), 0},
		{"qrun_consumer_handler_duration_seconds", consumer(), settles},
		{"qrun_consumer_instances", consumer(), 2},
		{"qrun_consumer_concurrency", consumer(), 2},
		{"qrun_consumer_paused", consumer(), 0},
		{"qrun_consumer_in_flight", consumer(), 0},
		{"qrun_consumer_reloads_total", consumer(), 0},
		{"qrun_consumer_plugin_info", consumer("version", srvVersion(t, srv, "v")), 1},
		{"qrun_queue_enqueued_total", queue("in"), 14},
		{"qrun_queue_acked_total", queue("in"), 7},
		{"qrun_queue_dead_lettered_total", queue("in"), 3 + 4},
		{"qrun_queue_depth", queue("in"), 0},
		{"qrun_queue_in_flight", queue("in"), 0},
		{"qrun_queue_depth", queue("dead"), 7},
		{"qrun_queue_ready", queue("dead"), 7},
		{"qrun_queue_delayed", queue("dead"), 0},
		{"qrun_queue_enqueued_total", queue("dead"), 7}, // dead letters arrive as enqueues
	}
	for _, tt := range tests {
		if got := value(t, mfs, tt.metric, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.metric, tt.labels, got, tt.want)
		}
	}
	// The Go runtime and process collectors are there too.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	// The engine hook counts into qrun_engine_*_total.
	srv.Metrics().EngineError("m", "connect")
	srv.Metrics().EngineReconnect("m")
	mfs = scrape(t, "http://"+ln.Addr().String(), "")
	if v := value(t, mfs, "qrun_engine_errors_total", map[string]string{"engine": "m", "op": "connect"}); v != 1 {
		t.Errorf("engine errors %v, want 1", v)
	}
	if v := value(t, mfs, "qrun_engine_reconnects_total", map[string]string{"engine": "m"}); v != 1 {
		t.Errorf("engine reconnects %v, want 1", v)
	}
}

func srvVersion(t *testing.T, srv *server.Server, consumer string) string {
	t.Helper()
	cs, err := srv.ConsumerInfos(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == consumer && c.Version != "" {
			return c.Version
		}
	}
	t.Fatalf("consumer %q has no version: %+v", consumer, cs)
	return ""
}

// TestRedriveAfterAFix dead-letters every message with a broken handler
// version, then runs the fixed version (a new server on the same engine
// would lose the memory engine's messages, so the fix is a new consumer
// config on the same process: the first server stops, the engine lives on
// in a second server started from a registry that hands it over), redrives
// the dead-letter queue over the admin API and sees every message handled.
func TestRedriveAfterAFix(t *testing.T) {
	t.Parallel()
	const n = 10
	src := func(plugin string) string {
		return fmt.Sprintf(`
engine "m" { type = "memory" }
queue "jobs" {
  engine      = "m"
  dead_letter = "jobs_dead"
}
queue "jobs_dead" { engine = "m" }
consumer "worker" {
  queue  = "jobs"
  plugin = %q
}`, plugin)
	}
	eng := sharedMemory(t)

	// Version 1 dead-letters everything.
	broken := newCounter(n)
	ctx1, stop1 := context.WithCancel(context.Background())
	srv1, err := server.New(ctx1, parse(t, src(testWasm(t, "deadletter"))), server.Options{Registry: eng.registry(), Observer: broken})
	if err != nil {
		t.Fatal(err)
	}
	done1 := make(chan error, 1)
	go func() { done1 <- srv1.Run(ctx1) }()
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i] = engines.Message{ID: fmt.Sprintf("job-%d", i), Body: []byte("x")}
	}
	if err := srv1.Enqueue(context.Background(), "jobs", msgs); err != nil {
		t.Fatal(err)
	}
	await(t, broken)
	stop1()
	if err := <-done1; err != nil {
		t.Fatal(err)
	}

	// Version 2 acks. Nothing runs the dead-letter queue until redriven.
	ln := listen(t)
	fixed := newCounter(n)
	srv2 := start(t, parse(t, src(testWasm(t, "ack"))), server.Options{Registry: eng.registry(), Listener: ln, Observer: fixed})
	c := &admin.Client{BaseURL: "http://" + ln.Addr().String()}
	ctx := context.Background()
	peek, err := c.Peek(ctx, "jobs_dead", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(peek.Messages) != n {
		t.Fatalf("dead-letter queue shows %d messages, want %d", len(peek.Messages), n)
	}
	if m := peek.Messages[0]; m.DeadLetterSource != "jobs" || m.DeadLetterReason == "" || m.Body != "x" {
		t.Fatalf("peeked dead letter %+v: want source jobs, a reason and body x", m)
	}
	// One by id first, then the rest.
	if r, err := c.Redrive(ctx, "jobs_dead", []string{"job-3"}); err != nil || r.Redriven != 1 {
		t.Fatalf("redrive by id: %+v, %v", r, err)
	}
	if r, err := c.Redrive(ctx, "jobs_dead", nil); err != nil || r.Redriven != n-1 {
		t.Fatalf("redrive all: %+v, %v", r, err)
	}
	await(t, fixed)
	waitDepths(t, srv2, 10*time.Second, map[string]int64{"jobs": 0, "jobs_dead": 0})
	info, err := c.Consumer(ctx, "worker")
	if err != nil {
		t.Fatal(err)
	}
	if info.Counts.Acked != n || info.Counts.DeadLettered != 0 {
		t.Fatalf("fixed consumer counts %+v, want %d acks", info.Counts, n)
	}
}

// sharedEngine is a memory engine that outlives the servers using it, so a
// test can replace the handler while the messages stay where they are.
type sharedEngine struct{ e engines.Engine }

func sharedMemory(t *testing.T) *sharedEngine {
	t.Helper()
	e := memory.New(memory.Options{})
	t.Cleanup(func() { _ = e.Close() })
	return &sharedEngine{e: e}
}

func (s *sharedEngine) registry() *server.Registry {
	r := server.NewRegistry(enginetype.WithoutSettings("memory", func(context.Context, enginetype.OpenOptions) (engines.Engine, error) {
		return unclosable{s.e}, nil
	}))
	return r
}

// unclosable keeps a server's shutdown from closing the shared engine.
type unclosable struct{ engines.Engine }

func (unclosable) Close() error { return nil }

func TestTokenGuardsEveryRoute(t *testing.T) {
	t.Parallel()
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_token = "s3cret" }
engine "m" { type = "memory" }
queue "q" {
  engine      = "m"
  dead_letter = "q_dead"
}
queue "q_dead" { engine = "m" }
consumer "c" {
  queue  = "q"
  plugin = %q
}`, testWasm(t, "ack")))
	ln := listen(t)
	start(t, cfg, server.Options{Listener: ln})
	base := "http://" + ln.Addr().String()
	bodies := map[string]string{
		"POST /v1/queues/{name}/messages": `{"body":"x"}`,
		"POST /v1/queues/{name}/redrive":  `{}`,
	}
	names := map[string]string{"/v1/queues/": "q_dead", "/v1/consumers/": "c"}
	for _, r := range admin.Routes() {
		path := r.Pattern
		for prefix, name := range names {
			if strings.HasPrefix(path, prefix) {
				path = strings.Replace(path, "{name}", name, 1)
			}
		}
		for _, tc := range []struct {
			auth string
			want int
		}{{"", 401}, {"Bearer wrong", 401}, {"s3cret", 401}, {"Bearer s3cret", 200}} {
			t.Run(fmt.Sprintf("%s %s %q", r.Method, path, tc.auth), func(t *testing.T) {
				req, _ := http.NewRequest(r.Method, base+path, strings.NewReader(bodies[r.Method+" "+r.Pattern]))
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Fatalf("%d %s, want %d", resp.StatusCode, b, tc.want)
				}
			})
		}
	}
}

func TestOperationsAPI(t *testing.T) {
	t.Parallel()
	cfg := parse(t, fmt.Sprintf(`
engine "m" { type = "memory" }
queue "q" { engine = "m" }
queue "idle" { engine = "m" }
consumer "c" {
  queue  = "q"
  plugin = %q
}`, testWasm(t, "ack")))
	ln := listen(t)
	obs := newCounter(3)
	start(t, cfg, server.Options{Listener: ln, Observer: obs})
	c := &admin.Client{BaseURL: "http://" + ln.Addr().String()}
	ctx := context.Background()

	// Pause, send, see the messages wait; resume and see them handled.
	info, err := c.Pause(ctx, "c")
	if err != nil || info.State != admin.StatePaused {
		t.Fatalf("pause: %+v, %v", info, err)
	}
	if _, err := c.Send(ctx, "q", admin.SendRequest{Messages: []admin.SendMessage{{Body: "a"}, {Body: "b", Attributes: map[string]string{"k": "v"}}, {BodyBase64: "//4="}}}); err != nil {
		t.Fatal(err)
	}
	peek, err := c.Peek(ctx, "q", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(peek.Messages) != 2 || peek.Messages[0].Body != "a" || peek.Messages[1].Attributes["k"] != "v" || peek.Messages[0].Attempt != 0 {
		t.Fatalf("peek while paused: %+v", peek)
	}
	all, err := c.Peek(ctx, "q", 0)
	if err != nil || len(all.Messages) != 3 || all.Messages[2].BodyBase64 != "//4=" || all.Messages[2].BodySize != 2 {
		t.Fatalf("peek all: %+v, %v", all, err)
	}
	if info, err = c.Resume(ctx, "c"); err != nil || info.State != admin.StateRunning {
		t.Fatalf("resume: %+v, %v", info, err)
	}
	await(t, obs)
	cs, err := c.Consumers(ctx)
	if err != nil || len(cs) != 1 || cs[0].Counts.Acked != 3 || cs[0].Queue != "q" || cs[0].Concurrency != 4 || cs[0].Version == "" {
		t.Fatalf("consumers: %+v, %v", cs, err)
	}

	// Purge a queue nothing consumes.
	if _, err := c.Send(ctx, "idle", admin.SendRequest{Messages: []admin.SendMessage{{Body: "1"}, {Body: "2"}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Purge(ctx, "idle"); err != nil || r.Purged != 2 {
		t.Fatalf("purge: %+v, %v", r, err)
	}

	// Errors say what is wrong with the right status.
	for _, tc := range []struct {
		name string
		call func() error
		want int
	}{
		{"unknown queue", func() error { _, err := c.Peek(ctx, "nope", 1); return err }, 404},
		{"unknown consumer", func() error { _, err := c.Pause(ctx, "nope"); return err }, 404},
		{"bad limit", func() error { _, err := c.Peek(ctx, "q", 100000); return err }, 400},
	} {
		err := tc.call()
		se, ok := err.(*admin.StatusError)
		if !ok || se.Status != tc.want || se.Message == "" {
			t.Errorf("%s: %v, want %d with a message", tc.name, err, tc.want)
		}
	}
}

// TestUnsupportedOperationIs501 runs the API over an engine whose queues
// have none of the operator extensions.
func TestUnsupportedOperationIs501(t *testing.T) {
	t.Parallel()
	reg := server.NewRegistry(enginetype.WithoutSettings("memory", func(context.Context, enginetype.OpenOptions) (engines.Engine, error) {
		return bareEngine{memory.New(memory.Options{})}, nil
	}))
	cfg := parse(t, `
engine "b" { type = "memory" }
queue "q" { engine = "b" }`)
	ln := listen(t)
	start(t, cfg, server.Options{Listener: ln, Registry: reg})
	c := &admin.Client{BaseURL: "http://" + ln.Addr().String()}
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"peek": func() error { _, err := c.Peek(ctx, "q", 1); return err },
		"scan": func() error {
			_, err := c.PeekQuery(ctx, "q", admin.PeekQuery{Scan: true, InFlight: true})
			return err
		},
		"purge":   func() error { _, err := c.Purge(ctx, "q"); return err },
		"redrive": func() error { _, err := c.Redrive(ctx, "q", nil); return err },
	} {
		se, ok := call().(*admin.StatusError)
		if !ok || se.Status != 501 || !strings.Contains(se.Message, `engine "b"`) {
			t.Errorf("%s: %v, want 501 naming the engine", name, se)
		}
	}
}

// bareEngine hides the operator extensions of the memory engine's queues.
type bareEngine struct{ engines.Engine }

func (b bareEngine) Open(ctx context.Context, s engines.QueueSpec) (engines.Queue, error) {
	q, err := b.Engine.Open(ctx, s)
	return bareQueue{q}, err
}

type bareQueue struct{ engines.Queue }

// TestTraceparentFollowsPublish sends a message with trace context through
// the forward handler and finds it on the published copy.
func TestTraceparentFollowsPublish(t *testing.T) {
	t.Parallel()
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in"  { engine = "m" }
queue "out" { engine = "m" }
consumer "fwd" {
  queue   = "in"
  plugin  = %q
  config  = { forward_to = "out" }
  publish = ["out"]
}`, forwardWasm(t)))
	obs := newCounter(2)
	srv := start(t, cfg, server.Options{Observer: obs})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := context.Background()
	if err := srv.Enqueue(ctx, "in", []engines.Message{
		{Body: []byte("traced"), Attributes: map[string]string{"traceparent": tp, "tracestate": "congo=t61rcWkgMzE"}},
		{Body: []byte("plain")},
	}); err != nil {
		t.Fatal(err)
	}
	await(t, obs)
	ds, err := srv.Peek(ctx, "out", 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]string{}
	for _, d := range ds {
		got[string(d.Body)] = d.Attributes
	}
	if a := got["traced"]; a["traceparent"] != tp || a["tracestate"] != "congo=t61rcWkgMzE" {
		t.Fatalf("published copy has attributes %v, want the trace context", a)
	}
	if a := got["plain"]; a["traceparent"] != "" {
		t.Fatalf("an untraced message gained a traceparent: %v", a)
	}
}
