package conformance_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"github.com/qrun-dev/qrun/runtime/plugin"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// httpLanguages are the modules that implement the script's http,
// httpmany and retry commands: all of them.
var httpLanguages = languages

// httpTarget is the local server the HTTP cases talk to.
func httpTarget(t testing.TB) *httptest.Server {
	t.Helper()
	var s *httptest.Server
	s = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // read first: only then does the server notice a client hanging up
		switch r.URL.Path {
		case "/echo":
			fmt.Fprintf(w, "%s %s %s", r.Method, body, r.Header.Get("X-Guest"))
		case "/big":
			_, _ = io.WriteString(w, strings.Repeat("h", 100000))
		case "/huge":
			_, _ = io.WriteString(w, strings.Repeat("h", 300000))
		case "/slow":
			<-r.Context().Done()
		case "/retry-after":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(503)
		case "/retry-date":
			w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
			w.WriteHeader(429)
		case "/status/503":
			w.WriteHeader(503)
			_, _ = io.WriteString(w, "busy")
		case "/redirect-ok":
			http.Redirect(w, r, "/echo", http.StatusTemporaryRedirect)
		case "/redirect-denied":
			http.Redirect(w, r, strings.Replace(s.URL, "127.0.0.1", "127.0.0.2", 1)+"/echo", http.StatusTemporaryRedirect)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func closedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// httpScript is the HTTP part of the script (README.md), against base.
// quick marks the case run with a 50ms HTTP timeout.
func httpScript(base, closed string) []struct {
	name  string
	quick bool
	step  step
} {
	other := strings.Replace(base, "127.0.0.1", "127.0.0.2", 1)
	pub := func(bodies ...string) []published {
		var out []published
		for _, b := range bodies {
			out = append(out, published{Queue: "out", Body: b})
		}
		return out
	}
	return []struct {
		name  string
		quick bool
		step  step
	}{
		{"http success", false, step{body: "http:" + base + "/echo", verdict: engines.Ack, pub: pub("200", "POST ping yes")}},
		{"http error status", false, step{body: "http:" + base + "/status/503", verdict: engines.Ack, pub: pub("503", "busy")}},
		{"http large body", false, step{body: "http:" + base + "/big", verdict: engines.Ack, pub: pub("200", strings.Repeat("h", 100000))}},
		{"http too large", false, step{body: "http:" + base + "/huge", verdict: engines.Ack, pub: pub("toolarge")}},
		{"http denied host", false, step{body: "http:" + other + "/echo", verdict: engines.Ack, pub: pub("denied")}},
		{"http redirect", false, step{body: "http:" + base + "/redirect-ok", verdict: engines.Ack, pub: pub("200", "POST ping yes")}},
		{"http redirect to a denied host", false, step{body: "http:" + base + "/redirect-denied", verdict: engines.Ack, pub: pub("denied")}},
		{"http connection failed", false, step{body: "http:" + closed, verdict: engines.Ack, pub: pub("connect")}},
		{"http timeout", true, step{body: "http:" + base + "/slow", verdict: engines.Ack, pub: pub("timeout")}},
		{"http too many requests", false, step{body: "httpmany:" + base + "/echo", verdict: engines.Ack, pub: pub("3", "limit")}},
		{"http retry-after", false, step{body: "retry:" + base + "/retry-after", verdict: engines.Nack, delay: 7 * time.Second}},
		{"http retry-after ok", false, step{body: "retry:" + base + "/echo", verdict: engines.Ack}},
		{"http retry without retry-after", false, step{body: "retry:" + base + "/status/503", verdict: engines.Nack}},
	}
}

// TestConformanceHTTP runs the HTTP cases against a local server for every
// language that implements them: the same requests must reach the server
// and the same results come back.
func TestConformanceHTTP(t *testing.T) {
	s := httpTarget(t)
	closed := closedPort(t)
	allow, err := httpout.ParseRule("http://127.0.0.1:*")
	if err != nil {
		t.Fatal(err)
	}
	for _, lang := range httpLanguages {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			wasm := readModule(t, lang)
			core, logs := observer.New(zapcore.DebugLevel)
			h := newHost(t, zap.New(core))
			pub := &sink{}
			load := func(timeout time.Duration) *plugin.Plugin {
				sp := spec(lang, wasm, baseConfig)
				sp.HTTP = httpout.Policy{Allow: []httpout.Rule{allow}, Timeout: timeout, MaxResponseSize: 200000, MaxRequests: 3}
				p, err := h.Load(context.Background(), sp, pub)
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				t.Cleanup(func() { _ = p.Close(context.Background()) })
				return p
			}
			normal, quick := load(time.Minute), load(50*time.Millisecond)
			for _, c := range httpScript(s.URL, closed) {
				t.Run(c.name, func(t *testing.T) {
					p := normal
					if c.quick {
						p = quick
					}
					in, err := p.NewInstance(context.Background())
					if err != nil {
						t.Fatalf("NewInstance: %v", err)
					}
					defer in.Close(context.Background())
					runStep(t, lang, 0, in, pub, logs, c.step)
				})
			}
			if lang == "wat" {
				return // the WAT recipe reads Retry-After in seconds only
			}
			t.Run("http retry-after date", func(t *testing.T) {
				in, err := normal.NewInstance(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				defer in.Close(context.Background())
				d := engines.NewDelivery(engines.Delivery{Message: engines.Message{ID: "m-42", Body: []byte("retry:" + s.URL + "/retry-date")}, Queue: "in", Attempt: 1}, &settler{}, engines.Ticket{})
				r := in.Handle(context.Background(), &d, time.Now())
				// An hour ahead, cut to whole seconds, seen some time later.
				if r.Err != nil || r.Verdict != engines.Nack || !r.DelaySet || r.Delay <= 50*time.Minute || r.Delay > time.Hour {
					t.Fatalf("%+v, want nack after about an hour", r)
				}
			})
		})
	}
}
