package plugin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/testenv"
	"github.com/qrun-dev/qrun/runtime/httpout"
)

// Offsets where http.wat and http_flood.wat leave what they saw.
const (
	offHTTPStatus   = 0x100
	offHTTPSmall    = 0x104
	offHTTPBodyLen  = 0x108
	offHTTPHdrLen   = 0x10c
	offHTTPHdrsLen  = 0x110
	offHTTPBody     = 0x200
	offHTTPHdr      = 0x600
	offHTTPHdrs     = 0x700
	offFloodFirst   = 0x100
	offFloodLast    = 0x104
	offFloodLimited = 0x108
)

// loopbackResolver maps every name to 127.0.0.1, as a DNS server an
// attacker controls might.
type loopbackResolver struct{}

func (loopbackResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

func allow(t testing.TB, entries ...string) []httpout.Rule {
	t.Helper()
	var out []httpout.Rule
	for _, e := range entries {
		r, err := httpout.ParseRule(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// drain reads a request's body: net/http's server notices that the client
// hung up, and cancels the request's context, only after that.
func drain(r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }

func httpServer(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func TestHTTPRequestRoundTrip(t *testing.T) {
	type seen struct {
		method, body string
		header       http.Header
	}
	got := make(chan seen, 1)
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, string(b), r.Header.Clone()}
		w.Header().Set("X-Reply", "pong")
		w.WriteHeader(201)
		fmt.Fprint(w, "created it")
	})
	h := newTestHost(t, nil)
	p := load(t, h, "http", Spec{HTTP: httpout.Policy{
		Allow:             allow(t, "http://127.0.0.1:*"),
		Headers:           map[string]string{"Authorization": "Bearer t"},
		IdempotencyHeader: "Idempotency-Key",
	}}, nil)
	in := newInstance(t, p)
	d := delivery(s.URL+"/hook", nil)
	if r := mustHandle(t, in, d); r.Verdict != 0 {
		t.Fatalf("verdict %v", r.Verdict)
	}
	sv := <-got
	if sv.method != "POST" || sv.body != "ping" || sv.header.Get("X-Guest") != "yes" ||
		sv.header.Get("Authorization") != "Bearer t" || sv.header.Get("Idempotency-Key") != httpout.IdempotencyKey("orders", "m-1") {
		t.Fatalf("server saw %+v", sv)
	}
	if st := memI32(t, in, offHTTPStatus); st != 201 {
		t.Fatalf("http_request returned %d, want 201", st)
	}
	// A 4-byte buffer gets the full length and nothing; a large one the body.
	if n := memI32(t, in, offHTTPSmall); n != int32(len("created it")) {
		t.Fatalf("http_response_body into 4 bytes returned %d", n)
	}
	if n := memI32(t, in, offHTTPBodyLen); n != 10 || memStr(t, in, offHTTPBody, 10) != "created it" {
		t.Fatalf("body %d %q", n, memStr(t, in, offHTTPBody, 10))
	}
	if n := memI32(t, in, offHTTPHdrLen); n != 4 || memStr(t, in, offHTTPHdr, 4) != "pong" {
		t.Fatalf("X-Reply %d %q", n, memStr(t, in, offHTTPHdr, 4))
	}
	n := memI32(t, in, offHTTPHdrsLen)
	if n <= 0 || n > 256 {
		t.Fatalf("http_response_headers returned %d", n)
	}
	pairs := map[string]string{}
	b := []byte(memStr(t, in, offHTTPHdrs, uint32(n)))
	for len(b) > 0 {
		kl := binary.LittleEndian.Uint32(b)
		k := string(b[4 : 4+kl])
		b = b[4+kl:]
		vl := binary.LittleEndian.Uint32(b)
		pairs[k] = string(b[4 : 4+vl])
		b = b[4+vl:]
	}
	if pairs["X-Reply"] != "pong" || pairs["Content-Length"] != "10" {
		t.Fatalf("headers %v", pairs)
	}

	// The next delivery starts without a response.
	if r := mustHandle(t, in, delivery("?", nil)); r.Verdict != 0 {
		t.Fatalf("verdict %v", r.Verdict)
	}
	if c := memI32(t, in, offHTTPStatus); c != abi.ErrNotFound {
		t.Fatalf("http_response_body in a new delivery returned %d, want %d", c, abi.ErrNotFound)
	}
}

func handleHTTP(t *testing.T, p *Plugin, url string) int32 {
	t.Helper()
	in := newInstance(t, p)
	in.Handle(context.Background(), delivery(url, nil), time.Now())
	return memI32(t, in, offHTTPStatus)
}

func TestHTTPDeniedByDefault(t *testing.T) {
	var hits atomic.Int64
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	h := newTestHost(t, nil)
	p := load(t, h, "http", Spec{}, nil)
	if c := handleHTTP(t, p, s.URL); c != abi.ErrDenied {
		t.Fatalf("http_request without an http block returned %d, want %d", c, abi.ErrDenied)
	}
	if hits.Load() != 0 || p.HTTPStats().Denied != 1 {
		t.Fatalf("hits %d, denied %d", hits.Load(), p.HTTPStats().Denied)
	}
}

func TestHTTPHostileTargets(t *testing.T) {
	var hits atomic.Int64
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://127.0.0.2:1/", http.StatusFound)
			return
		}
		hits.Add(1)
	})
	port := s.Listener.Addr().(*net.TCPAddr).Port
	h, err := NewHost(context.Background(), HostOptions{HTTPResolver: loopbackResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	p := load(t, h, "http", Spec{HTTP: httpout.Policy{Allow: allow(t, "http://*.example.com:*", fmt.Sprintf("http://origin.test:%d", port))}}, nil)
	for _, url := range []string{
		fmt.Sprintf("http://rebound.example.com:%d/", port), // a DNS name resolving to loopback
		fmt.Sprintf("http://origin.test:%d/redirect", port), // a redirect to a host not allowed
		fmt.Sprintf("http://127.0.0.1:%d/", port),           // an IP literal not listed
		fmt.Sprintf("http://localhost:%d/", port),           // localhost not listed
		"http://169.254.169.254/latest/meta-data/",          // the cloud metadata address
	} {
		if c := handleHTTP(t, p, url); c != abi.ErrDenied {
			t.Errorf("%s: http_request returned %d, want %d (denied)", url, c, abi.ErrDenied)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("%d hostile requests reached the server", hits.Load())
	}
	// The exactly listed name may resolve to loopback: the operator said so.
	if c := handleHTTP(t, p, fmt.Sprintf("http://origin.test:%d/", port)); c != 200 || hits.Load() != 1 {
		t.Fatalf("listed name: http_request returned %d", c)
	}
	if d := p.HTTPStats().Denied; d != 5 {
		t.Fatalf("denied count %d, want 5", d)
	}
}

func TestHTTPFloodIsCutOff(t *testing.T) {
	var hits atomic.Int64
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	h := newTestHost(t, nil)
	p := load(t, h, "http_flood", Spec{HTTP: httpout.Policy{Allow: allow(t, "http://127.0.0.1:*"), MaxRequests: 3}}, nil)
	in := newInstance(t, p)
	mustHandle(t, in, delivery(s.URL, nil))
	if first, last, limited := memI32(t, in, offFloodFirst), memI32(t, in, offFloodLast), memI32(t, in, offFloodLimited); first != 200 || last != abi.ErrLimit || limited != 10000-3 {
		t.Fatalf("first %d, last %d, limited %d", first, last, limited)
	}
	if hits.Load() != 3 || p.HTTPStats().OverBudget != 10000-3 {
		t.Fatalf("server saw %d requests, over budget %d", hits.Load(), p.HTTPStats().OverBudget)
	}
	// The budget is per delivery.
	mustHandle(t, in, delivery(s.URL, nil))
	if hits.Load() != 6 {
		t.Fatalf("second delivery: server saw %d requests in all, want 6", hits.Load())
	}
	// Denied requests spend the budget too: a guest cannot probe forever.
	denied := strings.Replace(s.URL, "127.0.0.1", "127.0.0.2", 1)
	mustHandle(t, in, delivery(denied, nil))
	if first, limited := memI32(t, in, offFloodFirst), memI32(t, in, offFloodLimited); first != abi.ErrDenied || limited != 10000-3 {
		t.Fatalf("denied flood: first %d, limited %d", first, limited)
	}
	if st := p.HTTPStats(); st.Denied != 3 {
		t.Fatalf("denied %d, want 3", st.Denied)
	}
}

func TestHTTPHugeResponseIsCutOff(t *testing.T) {
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	h := newTestHost(t, nil)
	p := load(t, h, "http", Spec{Timeout: time.Hour, HTTP: httpout.Policy{Allow: allow(t, "http://127.0.0.1:*"), MaxResponseSize: 1 << 20, Timeout: time.Hour}}, nil)
	if c := handleHTTP(t, p, s.URL); c != abi.ErrTooLarge {
		t.Fatalf("http_request returned %d, want %d (too large)", c, abi.ErrTooLarge)
	}
}

func TestHTTPConnectFailed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	h := newTestHost(t, nil)
	p := load(t, h, "http", Spec{HTTP: httpout.Policy{Allow: allow(t, "http://127.0.0.1:*")}}, nil)
	if c := handleHTTP(t, p, "http://"+addr); c != abi.ErrConnect {
		t.Fatalf("http_request returned %d, want %d (connection failed)", c, abi.ErrConnect)
	}
}

func TestHTTPTimeout(t *testing.T) {
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		drain(r) // the server notices a client hanging up only once the body is read
		<-r.Context().Done()
	})
	h := newTestHost(t, nil)
	p := load(t, h, "http", Spec{Timeout: time.Hour, HTTP: httpout.Policy{Allow: allow(t, "http://127.0.0.1:*"), Timeout: 20 * time.Millisecond}}, nil)
	if c := handleHTTP(t, p, s.URL); c != abi.ErrTimeout {
		t.Fatalf("http_request returned %d, want %d (timed out)", c, abi.ErrTimeout)
	}
}

// TestHTTPNeverOutlivesItsDelivery: with an hour of HTTP timeout, the
// consumer's 30ms delivery timeout still ends the request, and a stopped
// delivery cancels its request at once.
func TestHTTPNeverOutlivesItsDelivery(t *testing.T) {
	arrived := make(chan struct{}, 1)
	ended := make(chan struct{}, 1)
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		drain(r)
		arrived <- struct{}{}
		<-r.Context().Done()
		ended <- struct{}{}
	})
	h := newTestHost(t, nil)
	pol := httpout.Policy{Allow: allow(t, "http://127.0.0.1:*"), Timeout: time.Hour}

	p := load(t, h, "http", Spec{Timeout: 30 * time.Millisecond, HTTP: pol}, nil)
	in := newInstance(t, p)
	r := in.Handle(context.Background(), delivery(s.URL, nil), time.Now())
	<-arrived
	<-ended
	// Either the request hit the delivery's deadline (-9, nack) or the
	// watchdog stopped the instance first (ErrTimeout); never an hour.
	if r.Err == nil && memI32(t, in, offHTTPStatus) != abi.ErrTimeout {
		t.Fatalf("result %+v, status %d", r, memI32(t, in, offHTTPStatus))
	}
	if r.Err != nil && !errors.Is(r.Err, ErrTimeout) {
		t.Fatalf("result %v", r.Err)
	}

	p = load(t, h, "http", Spec{Timeout: time.Hour, HTTP: pol, Consumer: "stopped"}, nil)
	in = newInstance(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	r = in.Handle(ctx, delivery(s.URL, nil), time.Now())
	<-ended
	if r.Err != nil || memI32(t, in, offHTTPStatus) != abi.ErrTimeout {
		t.Fatalf("stopped delivery: %+v, status %d", r, memI32(t, in, offHTTPStatus))
	}
}

// TestHTTPDeadlineCountsFromDeliveryStart: the delivery's time runs from
// the start the dispatcher passes to Handle, not from when the instance
// got the call: a delivery that began a whole timeout ago has no time left
// for a request, which fails with -9 before reaching the server.
func TestHTTPDeadlineCountsFromDeliveryStart(t *testing.T) {
	var hits atomic.Int64
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	h := newTestHost(t, nil)
	pol := httpout.Policy{Allow: allow(t, "http://127.0.0.1:*"), Timeout: time.Hour}
	p := load(t, h, "http", Spec{Timeout: time.Minute, HTTP: pol}, nil)
	in := newInstance(t, p)

	if r := in.Handle(context.Background(), delivery(s.URL, nil), time.Now().Add(-time.Minute)); r.Err != nil {
		t.Fatalf("result %+v", r)
	}
	if c := memI32(t, in, offHTTPStatus); c != abi.ErrTimeout || hits.Load() != 0 {
		t.Fatalf("request of a delivery with no time left returned %d after %d hits, want %d and none", c, hits.Load(), abi.ErrTimeout)
	}
	// The same request from a delivery that starts now goes through.
	if r := in.Handle(context.Background(), delivery(s.URL, nil), time.Now()); r.Err != nil {
		t.Fatalf("result %+v", r)
	}
	if c := memI32(t, in, offHTTPStatus); c != http.StatusOK || hits.Load() != 1 {
		t.Fatalf("request of a fresh delivery returned %d after %d hits, want 200 and one", c, hits.Load())
	}
}

// TestHTTPOtherConsumersKeepTheirRate: while one consumer's requests hang
// on a server that never answers, holding all its connections, another
// consumer's requests go through.
func TestHTTPOtherConsumersKeepTheirRate(t *testing.T) {
	arrived := make(chan struct{}, 4)
	release := make(chan struct{})
	slow := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		drain(r)
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	fast := httpServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	h := newTestHost(t, nil)
	pol := httpout.Policy{Allow: allow(t, "http://127.0.0.1:*"), Timeout: time.Hour, MaxConnections: 2}
	bad := load(t, h, "http", Spec{Consumer: "hog", Timeout: time.Hour, HTTP: pol}, nil)
	good := load(t, h, "http", Spec{Consumer: "good", Timeout: time.Hour, HTTP: pol}, nil)
	done := make(chan struct{}, 2)
	for range 2 {
		in := newInstance(t, bad)
		go func() {
			in.Handle(context.Background(), delivery(slow.URL, nil), time.Now())
			done <- struct{}{}
		}()
	}
	<-arrived
	<-arrived
	in := newInstance(t, good)
	for i := range 20 {
		if r := mustHandle(t, in, delivery(fast.URL, nil)); r.Verdict != 0 || memI32(t, in, offHTTPStatus) != 200 {
			t.Fatalf("request %d of the good consumer: %+v", i, r)
		}
	}
	close(release)
	<-done
	<-done
}

func TestHTTPBadPointerTraps(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "http", Spec{}, nil)
	in := newInstance(t, p)
	r := in.Handle(context.Background(), delivery("", nil), time.Now())
	var pe *PointerError
	if !errors.As(r.Err, &pe) || pe.Func != abi.FuncHTTPRequest || pe.Arg != "url" {
		t.Fatalf("result %v, want a PointerError on http_request's url", r.Err)
	}
}

func TestHTTPOutsideHandle(t *testing.T) {
	// From qrun_init: no delivery, so no time bound and no request.
	h := newTestHost(t, nil)
	p := load(t, h, "http_init", Spec{HTTP: httpout.Policy{Allow: allow(t, "http://127.0.0.1:*")}}, nil)
	in := newInstance(t, p)
	if c := memI32(t, in, offHTTPStatus); c != abi.ErrNoMessage {
		t.Fatalf("http_request in qrun_init returned %d, want %d", c, abi.ErrNoMessage)
	}
	if st := p.HTTPStats(); len(st.Requests) != 0 {
		t.Fatalf("a request was sent: %+v", st)
	}
	st := &instanceState{}
	if _, c := response(st); c != abi.ErrNoMessage {
		t.Fatalf("response outside a delivery: %d", c)
	}
}

func TestDecodeHeaders(t *testing.T) {
	enc := encodeHeaders(http.Header{"B": {"1", "2"}, "A": {""}})
	h, ok := decodeHeaders(enc)
	if !ok || len(h["B"]) != 2 || h.Get("A") != "" || len(h) != 2 {
		t.Fatalf("round trip: %v %v", h, ok)
	}
	if _, ok := decodeHeaders(enc[:len(enc)-1]); ok {
		t.Fatal("truncated encoding accepted")
	}
	if h, ok := decodeHeaders(nil); !ok || h != nil {
		t.Fatal("empty encoding refused")
	}
}

// TestHTTPCountersSurviveHotSwap: a Live's versions share one client, so
// its counters (Prometheus counters must not go back) and its pool outlive
// a swap.
func TestHTTPCountersSurviveHotSwap(t *testing.T) {
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) {})
	h := newTestHost(t, nil)
	l, err := h.LoadLive(context.Background(), Spec{Consumer: "live-http", Wasm: readWasm(t, "http"),
		HTTP: httpout.Policy{Allow: allow(t, "http://127.0.0.1:*")}}, &fakePublisher{}, LiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	handle := func() {
		li := liveInstance(t, l)
		if r := li.Handle(context.Background(), delivery(s.URL, nil), time.Now()); r.Err != nil || r.Verdict != 0 {
			t.Fatalf("handle: %+v", r)
		}
	}
	handle()
	wasm := append(readWasm(t, "http"), 0, 4, 1, 'x', 'y', 'z') // a custom section: new digest, same code
	if err := l.Swap(context.Background(), wasm); err != nil {
		t.Fatal(err)
	}
	handle()
	if st := l.HTTPStats(); len(st.Requests) != 1 || st.Requests[0].N != 2 {
		t.Fatalf("after a swap: %+v", st.Requests)
	}
}

// TestSpecHTTPExample compiles the webhook deliverer printed in abi/ABI.md
// section 10 and runs it against a local server.
func TestSpecHTTPExample(t *testing.T) {
	tool := testenv.Tool(t, "wat2wasm", "the ABI.md HTTP example is not checked (wabt installs it)")
	spec, err := os.ReadFile("../../abi/ABI.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(spec), "## 10.")
	if !ok {
		t.Fatal("ABI.md has no section 10")
	}
	_, rest, _ = strings.Cut(rest, "```wat\n")
	src, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no wat block in section 10")
	}
	dir := t.TempDir()
	watPath, wasmPath := filepath.Join(dir, "webhook.wat"), filepath.Join(dir, "webhook.wasm")
	if err := os.WriteFile(watPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(tool, watPath, "-o", wasmPath).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	bodies := make(chan string, 10)
	s := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- r.Method + " " + string(b)
		switch string(b) {
		case "busy":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(503)
		case "slow down":
			w.Header().Set("Retry-After", "soon")
			w.WriteHeader(429)
		case "broken":
			w.WriteHeader(500)
		case "bad":
			w.WriteHeader(422)
		}
	})
	h := newTestHost(t, nil)
	p, err := h.Load(context.Background(), Spec{Consumer: "webhook", Path: wasmPath, Config: map[string]string{"url": s.URL + "/in"},
		HTTP: httpout.Policy{Allow: allow(t, "http://127.0.0.1:*")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, p)
	for _, tc := range []struct {
		body    string
		verdict engines.Verdict
		delay   time.Duration
	}{
		{"hello", engines.Ack, 0},
		{"busy", engines.Nack, 7 * time.Second},
		{"slow down", engines.Nack, 0},
		{"broken", engines.Nack, 0},
		{"bad", engines.DeadLetter, 0},
	} {
		r := mustHandle(t, in, delivery(tc.body, nil))
		if got := <-bodies; got != "POST "+tc.body {
			t.Errorf("%s: server got %q", tc.body, got)
		}
		if r.Verdict != tc.verdict || r.DelaySet != (tc.delay != 0) || r.Delay != tc.delay {
			t.Errorf("%s: %+v, want %v after %v", tc.body, r, tc.verdict, tc.delay)
		}
	}
	// Without an http grant the request is denied: nack, retried.
	p2, err := h.Load(context.Background(), Spec{Consumer: "webhook2", Path: wasmPath, Config: map[string]string{"url": s.URL}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := mustHandle(t, newInstance(t, p2), delivery("x", nil)); r.Verdict != engines.Nack {
		t.Errorf("denied: %+v", r)
	}
}
