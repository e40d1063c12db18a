package httpout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// mapResolver resolves names from a map, as DNS would; anything else is
// unknown.
type mapResolver map[string]string

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ip, ok := m[host]; ok {
		return []netip.Addr{netip.MustParseAddr(ip)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func rules(t testing.TB, entries ...string) []Rule {
	t.Helper()
	var out []Rule
	for _, e := range entries {
		r, err := ParseRule(e)
		if err != nil {
			t.Fatalf("ParseRule(%q): %v", e, err)
		}
		out = append(out, r)
	}
	return out
}

func newClient(t testing.TB, p Policy, res Resolver) *Client {
	t.Helper()
	if res == nil {
		res = mapResolver{}
	}
	c := New(p, Options{Resolver: res})
	t.Cleanup(c.Close)
	return c
}

// server starts a loopback server and returns it with its port.
func server(t testing.TB, h http.HandlerFunc) (*httptest.Server, string) {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	u, _ := url.Parse(s.URL)
	return s, u.Port()
}

func hello(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Seen-Method", r.Method)
	body, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "hello %s", body)
}

func wantKind(t *testing.T, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error %v, want %v", err, kind)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not an *Error", err)
	}
}

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rule
	}{
		{"api.example.com", Rule{Scheme: "https", Host: "api.example.com"}},
		{"http://API.Example.com.:8080", Rule{Scheme: "http", Host: "api.example.com", Port: 8080}},
		{"*://*.example.com:*", Rule{Scheme: "*", Host: "example.com", Wildcard: true, Port: -1}},
		{"http://127.0.0.1:9", Rule{Scheme: "http", Host: "127.0.0.1", Port: 9, IP: netip.MustParseAddr("127.0.0.1")}},
		{"https://[::1]:443", Rule{Scheme: "https", Host: "::1", Port: 443, IP: netip.MustParseAddr("::1")}},
	} {
		got, err := ParseRule(tc.in)
		if err != nil {
			t.Fatalf("ParseRule(%q): %v", tc.in, err)
		}
		tc.want.Text = tc.in
		if got != tc.want {
			t.Errorf("ParseRule(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "*", "ftp://x.com", "x.com/path", "x.com:0", "x.com:99999", "*.1.2.3.4", "a*.com", "[::1", "user@x.com", "bad host"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) accepted", bad)
		}
	}
}

func TestRuleMatching(t *testing.T) {
	c := newClient(t, Policy{Allow: rules(t, "api.example.com", "*.hooks.example.com", "http://plain.example.com:8080", "http://10.0.0.1:80")}, nil)
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://api.example.com/x", true},
		{"https://API.example.com.:443/x", true},
		{"http://api.example.com/x", false}, // no scheme means https only
		{"https://api.example.com:8443/x", false},
		{"https://a.hooks.example.com/", true},
		{"https://a.b.hooks.example.com/", true},
		{"https://hooks.example.com/", false},
		{"https://evilhooks.example.com/", false},
		{"http://plain.example.com:8080/", true},
		{"http://plain.example.com/", false},
		{"http://10.0.0.1/", true},
		{"http://10.0.0.2/", false},
		{"https://other.com/", false},
	} {
		u, _ := url.Parse(tc.url)
		_, err := c.check(u)
		if (err == nil) != tc.ok {
			t.Errorf("%s: allowed=%v, want %v (%v)", tc.url, err == nil, tc.ok, err)
		}
	}
}

func TestDeniedByDefault(t *testing.T) {
	var hits atomic.Int64
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	c := newClient(t, Policy{}, nil)
	_, err := c.Do(context.Background(), &Request{URL: s.URL})
	wantKind(t, err, ErrDenied)
	if hits.Load() != 0 {
		t.Fatal("a denied request reached the server")
	}
	if st := c.Stats(); st.Denied != 1 || len(st.Requests) != 0 {
		t.Fatalf("stats %+v, want one denial and no requests", st)
	}
}

func TestRequestAndResponse(t *testing.T) {
	s, _ := server(t, hello)
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*")}, nil)
	resp, err := c.Do(context.Background(), &Request{Method: "POST", URL: s.URL + "/p", Body: []byte("world")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || string(resp.Body) != "hello world" || resp.Header.Get("X-Seen-Method") != "POST" {
		t.Fatalf("got %d %q %v", resp.Status, resp.Body, resp.Header)
	}
	st := c.Stats()
	if len(st.Requests) != 1 || st.Requests[0] != (HostCount{Host: "http://127.0.0.1:*", Class: "2xx", N: 1}) {
		t.Fatalf("stats %+v", st.Requests)
	}
	var n uint64
	for _, b := range st.LatencyCounts {
		n += b
	}
	if n != 1 {
		t.Fatalf("latency histogram holds %d requests, want 1", n)
	}
}

func TestIPLiteralOnlyWhenListed(t *testing.T) {
	s, port := server(t, hello)
	// A wildcard never matches an IP literal, and localhost must be named.
	c := newClient(t, Policy{Allow: rules(t, "http://*.example.com:*", "http://127.0.0.2:"+port)}, mapResolver{"localhost": "127.0.0.1"})
	_, err := c.Do(context.Background(), &Request{URL: s.URL})
	wantKind(t, err, ErrDenied)
	_, err = c.Do(context.Background(), &Request{URL: "http://localhost:" + port})
	wantKind(t, err, ErrDenied)

	c = newClient(t, Policy{Allow: rules(t, "http://localhost:"+port)}, mapResolver{"localhost": "127.0.0.1"})
	if _, err := c.Do(context.Background(), &Request{URL: "http://localhost:" + port}); err != nil {
		t.Fatalf("explicitly listed localhost: %v", err)
	}
}

func TestNameResolvingToLoopbackRefusedAtDial(t *testing.T) {
	var hits atomic.Int64
	_, port := server(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	res := mapResolver{"evil.example.com": "127.0.0.1", "api.example.com": "127.0.0.1", "mapped.example.com": "::ffff:127.0.0.1"}
	c := newClient(t, Policy{Allow: rules(t, "http://*.example.com:*")}, res)
	for _, host := range []string{"evil.example.com", "mapped.example.com"} {
		_, err := c.Do(context.Background(), &Request{URL: "http://" + host + ":" + port})
		wantKind(t, err, ErrDenied)
	}
	if hits.Load() != 0 {
		t.Fatal("a name resolving to loopback reached the server")
	}
	// The operator may grant a private address: by exact name or by IP.
	for _, allow := range []string{"http://api.example.com:" + port, "http://127.0.0.1:" + port} {
		c := newClient(t, Policy{Allow: rules(t, "http://*.example.com:*", allow)}, res)
		if _, err := c.Do(context.Background(), &Request{URL: "http://api.example.com:" + port}); err != nil {
			t.Fatalf("with %s listed: %v", allow, err)
		}
	}
	if hits.Load() != 2 {
		t.Fatalf("server saw %d requests, want 2", hits.Load())
	}
}

func TestRedirects(t *testing.T) {
	_, tport := server(t, hello)
	s, port := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-denied":
			http.Redirect(w, r, "http://127.0.0.2:"+tport+"/", http.StatusFound)
		case "/to-allowed":
			http.Redirect(w, r, "http://127.0.0.1:"+tport+"/", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	})
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:"+port, "http://127.0.0.1:"+tport)}, nil)
	_, err := c.Do(context.Background(), &Request{URL: s.URL + "/to-denied"})
	wantKind(t, err, ErrDenied)
	resp, err := c.Do(context.Background(), &Request{URL: s.URL + "/to-allowed"})
	if err != nil || string(resp.Body) != "hello " {
		t.Fatalf("redirect to an allowed host: %v %v", resp, err)
	}
	resp, err = c.Do(context.Background(), &Request{URL: s.URL + "/loop"})
	if err != nil || resp.Status != http.StatusFound {
		t.Fatalf("redirect loop: got %v, %v; want the last 302", resp, err)
	}
}

// blocker is a handler that holds every request until the client gives up,
// and says when one arrived.
func blocker(arrived chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}
}

func TestTimeout(t *testing.T) {
	s, _ := server(t, blocker(nil))
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*"), Timeout: 20 * time.Millisecond}, nil)
	_, err := c.Do(context.Background(), &Request{URL: s.URL})
	wantKind(t, err, ErrTimeout)

	// The delivery's deadline wins over a longer policy timeout; one that
	// has passed sends nothing.
	var hits atomic.Int64
	s2, _ := server(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	c = newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*"), Timeout: time.Hour}, nil)
	_, err = c.Do(context.Background(), &Request{URL: s2.URL, Deadline: time.Now().Add(-time.Second)})
	wantKind(t, err, ErrTimeout)
	if hits.Load() != 0 {
		t.Fatal("a request without time left was sent")
	}
}

func TestCancelStopsRequest(t *testing.T) {
	arrived := make(chan struct{}, 1)
	s, _ := server(t, blocker(arrived))
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*"), Timeout: time.Hour}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := c.Do(ctx, &Request{URL: s.URL})
	wantKind(t, err, ErrTimeout)
}

func TestTooLarge(t *testing.T) {
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/declared" {
			w.Header().Set("Content-Length", "1000000")
		}
		chunk := make([]byte, 4096)
		for {
			// Streams until the client hangs up: only the limit stops it.
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*"), MaxResponseSize: 10000, Timeout: time.Hour}, nil)
	for _, path := range []string{"/declared", "/streamed"} {
		_, err := c.Do(context.Background(), &Request{URL: s.URL + path})
		wantKind(t, err, ErrTooLarge)
	}
	s2, _ := server(t, func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 10000)) })
	if resp, err := c.Do(context.Background(), &Request{URL: s2.URL}); err != nil || len(resp.Body) != 10000 {
		t.Fatalf("a body of exactly the limit: %v", err)
	}
}

func TestConnectFailed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*", "http://nowhere.example.com")}, nil)
	_, err = c.Do(context.Background(), &Request{URL: "http://" + addr})
	wantKind(t, err, ErrConnect)
	_, err = c.Do(context.Background(), &Request{URL: "http://nowhere.example.com"})
	wantKind(t, err, ErrConnect)
	if st := c.Stats(); len(st.Requests) != 2 || st.Requests[0].Class != "error" {
		t.Fatalf("stats %+v, want two errors", st.Requests)
	}
}

func TestHeadersAndIdempotencyKey(t *testing.T) {
	got := make(chan http.Header, 2)
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() })
	c := newClient(t, Policy{
		Allow:             rules(t, "http://127.0.0.1:*"),
		Headers:           map[string]string{"Authorization": "Bearer secret", "X-Team": "a"},
		IdempotencyHeader: "Idempotency-Key",
	}, nil)
	key := IdempotencyKey("orders", "m-1")
	if _, err := c.Do(context.Background(), &Request{URL: s.URL, IdempotencyKey: key, Header: http.Header{"X-Team": {"b"}}}); err != nil {
		t.Fatal(err)
	}
	h := <-got
	if h.Get("Authorization") != "Bearer secret" || h.Get("X-Team") != "b" || h.Get("Idempotency-Key") != key {
		t.Fatalf("server saw %v", h)
	}
	if key != IdempotencyKey("orders", "m-1") || key == IdempotencyKey("orders", "m-2") || key == IdempotencyKey("orders2", "m-1") || len(key) != 32 {
		t.Fatalf("IdempotencyKey is not a stable per-message value: %q", key)
	}
}

func TestKeepAlive(t *testing.T) {
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(hello))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*")}, nil)
	for range 5 {
		if _, err := c.Do(context.Background(), &Request{URL: s.URL}); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 sequential requests used %d connections, want 1", n)
	}
}

func TestMaxConnections(t *testing.T) {
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*"), MaxConnections: 2, Timeout: time.Hour}, nil)
	done := make(chan error, 5)
	for range 5 {
		go func() {
			_, err := c.Do(context.Background(), &Request{URL: s.URL})
			done <- err
		}()
	}
	<-arrived
	<-arrived
	close(release) // the other three wait for one of the two connections
	for range 5 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("%d connections, want at most 2", n)
	}
}

func TestFailureLogsAreRateLimited(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	c := New(Policy{Allow: rules(t, "http://127.0.0.1:*")}, Options{Logger: zap.New(core), FailureLogRate: 2})
	t.Cleanup(c.Close)
	for range 5 {
		if _, err := c.Do(context.Background(), &Request{URL: s.URL, MessageID: "m-7"}); err != nil {
			t.Fatal(err)
		}
	}
	// The five requests may straddle a second boundary: at most two lines
	// per second, so at most four lines, and at least the first two.
	entries := logs.All()
	if len(entries) < 2 || len(entries) > 4 {
		t.Fatalf("%d lines logged for 5 failures at 2/s", len(entries))
	}
	f := entries[0].ContextMap()
	if f["message_id"] != "m-7" || f["host"] != "127.0.0.1" || f["status"] != int64(503) {
		t.Fatalf("line %v", f)
	}
	if st := c.Stats(); st.Requests[0].Class != "5xx" || st.Requests[0].N != 5 {
		t.Fatalf("stats %+v", st.Requests)
	}
	var l limiter
	l.rate = 1
	now := time.Unix(100, 0)
	if ok, _ := l.allow(now); !ok {
		t.Fatal("first event refused")
	}
	if ok, _ := l.allow(now); ok {
		t.Fatal("second event in the same second allowed")
	}
	if ok, n := l.allow(now.Add(time.Second)); !ok || n != 1 {
		t.Fatalf("next second: ok=%v suppressed=%d, want true 1", ok, n)
	}
}

func TestInvalidRequests(t *testing.T) {
	var hits atomic.Int64
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	c := newClient(t, Policy{Allow: rules(t, "http://127.0.0.1:*")}, nil)
	for _, r := range []*Request{
		{URL: s.URL, Method: "BAD METHOD"},
		{URL: s.URL, Header: http.Header{"Bad Name": {"x"}}},
		{URL: s.URL, Header: http.Header{"X-Split": {"a\r\nX-Injected: 1"}}},
		{URL: "file:///etc/passwd"},
		{URL: "http://[::1"},
	} {
		_, err := c.Do(context.Background(), r)
		wantKind(t, err, ErrInvalid)
	}
	if hits.Load() != 0 {
		t.Fatal("an invalid request reached the server")
	}
}

func TestHTTPS(t *testing.T) {
	s := httptest.NewTLSServer(http.HandlerFunc(hello))
	t.Cleanup(s.Close)
	tlsConfig := s.Client().Transport.(*http.Transport).TLSClientConfig
	// Without a scheme an entry means https only.
	c := New(Policy{Allow: rules(t, "127.0.0.1:*")}, Options{Resolver: mapResolver{}, TLS: tlsConfig})
	t.Cleanup(c.Close)
	resp, err := c.Do(context.Background(), &Request{Method: "POST", URL: s.URL, Body: []byte("tls")})
	if err != nil || string(resp.Body) != "hello tls" {
		t.Fatalf("%v %v", resp, err)
	}
	_, err = c.Do(context.Background(), &Request{URL: strings.Replace(s.URL, "https:", "http:", 1)})
	wantKind(t, err, ErrDenied)
	// A server whose certificate the client does not trust: connection failed.
	c2 := newClient(t, Policy{Allow: rules(t, "127.0.0.1:*")}, nil)
	_, err = c2.Do(context.Background(), &Request{URL: s.URL})
	wantKind(t, err, ErrConnect)
}

// TestDeadlineBeforeContextIsTimeout: a connect that fails on the socket
// deadline the transport took from the context, a moment before the
// context's own timer fired, is a timeout, not a connection failure (the
// conformance case "http timeout" once got -10 under load).
func TestDeadlineBeforeContextIsTimeout(t *testing.T) {
	t.Parallel()
	c := &Client{}
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("connect: %w", os.ErrDeadlineExceeded)}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"socket deadline", dialErr, ErrTimeout},
		{"context deadline inside the transport", fmt.Errorf("roundtrip: %w", context.DeadlineExceeded), ErrTimeout},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, ErrConnect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.classify(context.Background(), "127.0.0.1", tc.err)
			wantKind(t, err, tc.want)
		})
	}
}
