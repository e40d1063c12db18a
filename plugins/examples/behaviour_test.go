package examples_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// sink records what a handler publishes.
type sink struct {
	mu  sync.Mutex
	got []pubMsg
}

type pubMsg struct {
	queue string
	body  string
	attrs map[string]string
}

func (s *sink) Publish(_ context.Context, queue string, m engines.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, pubMsg{queue, string(m.Body), maps.Clone(m.Attributes)})
	return nil
}

func (s *sink) take() []pubMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}

// example loads plugins/examples/<path>.wasm as a consumer with config and
// publish list, and returns a live instance and the sink it publishes to.
func example(t *testing.T, path string, config map[string]string, publish ...string) (*plugin.Instance, *sink) {
	t.Helper()
	wasm, err := os.ReadFile(filepath.FromSlash(path) + ".wasm")
	if err != nil {
		t.Fatal(err)
	}
	h, err := plugin.NewHost(context.Background(), plugin.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	pub := &sink{}
	p, err := h.Load(context.Background(), plugin.Spec{
		Consumer: filepath.Base(path), Wasm: wasm, Config: config, Publish: publish,
		MemoryLimit: 32 << 20, Timeout: 10 * time.Second,
	}, pub)
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.NewInstance(context.Background())
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	return in, pub
}

func handle(t *testing.T, in *plugin.Instance, body string, attrs map[string]string) plugin.Result {
	t.Helper()
	d := engines.NewDelivery(engines.Delivery{
		Message: engines.Message{ID: "m-1", Body: []byte(body), Attributes: attrs},
		Queue:   "in", Attempt: 1,
	}, nil, engines.Ticket{})
	r := in.Handle(context.Background(), &d, time.Now())
	if r.Err != nil {
		t.Fatalf("Handle(%q): %v", body, r.Err)
	}
	return r
}

func TestRustEnricher(t *testing.T) {
	t.Parallel()
	in, pub := example(t, "rust/enricher/enricher",
		map[string]string{"forward_to": "enriched", "tier.acme": "gold"}, "enriched")

	before := time.Now().UnixMilli()
	if r := handle(t, in, `{"order":1}`, map[string]string{"customer": "acme", "tier": "spoofed", "src": "web"}); r.Verdict != engines.Ack {
		t.Fatalf("verdict %v, want ack", r.Verdict)
	}
	got := pub.take()
	if len(got) != 1 || got[0].queue != "enriched" || got[0].body != `{"order":1}` {
		t.Fatalf("published %+v", got)
	}
	a := got[0].attrs
	at, err := strconv.ParseInt(a["enriched_at"], 10, 64)
	if a["tier"] != "gold" || a["src"] != "web" || a["customer"] != "acme" || a["enriched_by"] != "enricher-rust" ||
		err != nil || at < before || at > time.Now().UnixMilli() {
		t.Errorf("attributes %v", a)
	}

	handle(t, in, "x", map[string]string{"customer": "other"})
	if got := pub.take(); len(got) != 1 || got[0].attrs["tier"] != "standard" {
		t.Errorf("unknown customer: published %+v, want tier=standard", got)
	}
	if r := handle(t, in, "x", nil); r.Verdict != engines.DeadLetter {
		t.Errorf("no customer: verdict %v, want dead-letter", r.Verdict)
	}
}

func TestRustEnricherRefusesToStartWithoutForwardTo(t *testing.T) {
	t.Parallel()
	wasm, err := os.ReadFile("rust/enricher/enricher.wasm")
	if err != nil {
		t.Fatal(err)
	}
	h, err := plugin.NewHost(context.Background(), plugin.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	p, err := h.Load(context.Background(), plugin.Spec{Consumer: "enricher", Wasm: wasm}, &sink{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.NewInstance(context.Background()); !errors.Is(err, plugin.ErrInit) {
		t.Fatalf("NewInstance: %v, want ErrInit", err)
	}
}

func TestCRouter(t *testing.T) {
	t.Parallel()
	in, pub := example(t, "c/router/router",
		map[string]string{"route.eu": "orders_eu", "route.us": "orders_us"}, "orders_eu", "orders_us")
	tests := []struct {
		region  string // "" = attribute absent
		verdict engines.Verdict
		queue   string
	}{
		{"eu", engines.Ack, "orders_eu"},
		{"us", engines.Ack, "orders_us"},
		{"mars", engines.DeadLetter, ""},
		{"", engines.DeadLetter, ""},
	}
	for _, tt := range tests {
		attrs := map[string]string{"id": "7"}
		if tt.region != "" {
			attrs["region"] = tt.region
		}
		if r := handle(t, in, "order "+tt.region, attrs); r.Verdict != tt.verdict {
			t.Errorf("region %q: verdict %v, want %v", tt.region, r.Verdict, tt.verdict)
		}
		got := pub.take()
		if tt.queue == "" {
			if len(got) != 0 {
				t.Errorf("region %q: published %+v, want nothing", tt.region, got)
			}
			continue
		}
		if len(got) != 1 || got[0].queue != tt.queue || got[0].body != "order "+tt.region || !maps.Equal(got[0].attrs, attrs) {
			t.Errorf("region %q: published %+v, want the message unchanged to %s", tt.region, got, tt.queue)
		}
	}
}

func TestCRouterDefaultRoute(t *testing.T) {
	t.Parallel()
	in, pub := example(t, "c/router/router",
		map[string]string{"route_by": "kind", "route.a": "qa", "default_route": "other"}, "qa", "other")
	handle(t, in, "1", map[string]string{"kind": "a"})
	handle(t, in, "2", map[string]string{"kind": "b"})
	got := pub.take()
	if len(got) != 2 || got[0].queue != "qa" || got[1].queue != "other" {
		t.Errorf("published %+v, want 1 to qa and 2 to other", got)
	}
}

func TestAssemblyScriptRateLimit(t *testing.T) {
	t.Parallel()
	// 2 per second, burst 2; the messages arrive far faster than that.
	in, pub := example(t, "assemblyscript/ratelimit/ratelimit",
		map[string]string{"rate": "2", "burst": "2", "forward_to": "out"}, "out")
	for i := 0; i < 2; i++ {
		if r := handle(t, in, "m"+strconv.Itoa(i), nil); r.Verdict != engines.Ack || r.DelaySet {
			t.Fatalf("message %d: %+v, want ack", i, r)
		}
	}
	r := handle(t, in, "m2", nil)
	// The bucket is empty: requeued (not a failure) until the next token,
	// which is at most 1/rate = 500 ms away.
	if r.Verdict != engines.Requeue || !r.DelaySet || r.Delay <= 0 || r.Delay > 500*time.Millisecond {
		t.Errorf("third message: %+v, want requeue with a delay in (0, 500ms]", r)
	}
	if got := pub.take(); len(got) != 2 || got[0].body != "m0" || got[1].body != "m1" {
		t.Errorf("published %+v, want m0 and m1", got)
	}
}

func TestAssemblyScriptRateLimitRefusesBadConfig(t *testing.T) {
	t.Parallel()
	wasm, err := os.ReadFile("assemblyscript/ratelimit/ratelimit.wasm")
	if err != nil {
		t.Fatal(err)
	}
	h, err := plugin.NewHost(context.Background(), plugin.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	for _, rate := range []string{"0", "-1", "fast"} {
		p, err := h.Load(context.Background(), plugin.Spec{Consumer: "rl", Wasm: wasm, Config: map[string]string{"rate": rate}}, &sink{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.NewInstance(context.Background()); !errors.Is(err, plugin.ErrInit) {
			t.Errorf("rate %q: NewInstance %v, want ErrInit", rate, err)
		}
		p.Close(context.Background())
	}
}

func TestZigCounterKeepsStateAcrossMessages(t *testing.T) {
	t.Parallel()
	in, pub := example(t, "zig/counter/counter",
		map[string]string{"count_by": "page", "emit_every": "4", "forward_to": "totals"}, "totals")
	pages := []string{"b", "a", "b", "", "a", "b", "b", "c"}
	for i, p := range pages {
		attrs := map[string]string{}
		if p != "" {
			attrs["page"] = p
		}
		if r := handle(t, in, "click", attrs); r.Verdict != engines.Ack {
			t.Fatalf("message %d: verdict %v", i, r.Verdict)
		}
	}
	got := pub.take()
	want := []string{"(none) 1\na 1\nb 2\n", "(none) 1\na 2\nb 4\nc 1\n"}
	if len(got) != 2 || got[0].body != want[0] || got[1].body != want[1] || got[0].queue != "totals" {
		t.Errorf("published %+v, want totals %q", got, want)
	}
}

func TestWatAck(t *testing.T) {
	t.Parallel()
	in, pub := example(t, "wat/ack/ack", nil)
	big := make([]byte, 1<<20) // past the first page: the region must grow
	for _, body := range []string{"", "x", string(big), "y"} {
		if r := handle(t, in, body, nil); r.Verdict != engines.Ack {
			t.Errorf("body of %d bytes: verdict %v", len(body), r.Verdict)
		}
	}
	if got := pub.take(); len(got) != 0 {
		t.Errorf("published %+v", got)
	}
}

func TestGoOrders(t *testing.T) {
	t.Parallel()
	in, pub := example(t, "go/orders/orders", map[string]string{"forward_to": "valid"}, "valid")
	tests := []struct {
		body    string
		verdict engines.Verdict
	}{
		{`{"id":"o-1","sku":"ABC","qty":2}`, engines.Ack},
		{`{"id":"o-2","sku":"ABC","qty":0}`, engines.DeadLetter},
		{`not json`, engines.DeadLetter},
		{`{"id":"o-3","sku":"ABC","qty":1,"fail":true}`, engines.Nack},
	}
	for _, tt := range tests {
		if r := handle(t, in, tt.body, nil); r.Verdict != tt.verdict {
			t.Errorf("%s: verdict %v, want %v", tt.body, r.Verdict, tt.verdict)
		}
	}
	if got := pub.take(); len(got) != 1 || got[0].queue != "valid" || got[0].attrs["validated_by"] != "orders-go" {
		t.Errorf("published %+v, want only o-1 to valid", got)
	}
}
