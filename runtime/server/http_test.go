package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestConsumerHTTPBlock: a consumer's http block reaches the plugin host
// (allow list, default headers, idempotency key), one without is denied,
// and both are counted in the metrics source.
func TestConsumerHTTPBlock(t *testing.T) {
	t.Parallel()
	type seen struct{ auth, key string }
	got := make(chan seen, 10)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- seen{r.Header.Get("Authorization"), r.Header.Get("Idempotency-Key")}
	}))
	t.Cleanup(ts.Close)
	wasm, err := filepath.Abs("../plugin/testdata/http.wasm")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "hooks" { engine = "m" }
queue "denied" {
  engine       = "m"
  max_attempts = 1
  dead_letter  = "denied_dead"
}
queue "denied_dead" { engine = "m" }
consumer "hooks" {
  queue  = "hooks"
  plugin = %[1]q
  http {
    allow              = ["http://127.0.0.1:*"]
    headers            = { Authorization = "Bearer t" }
    idempotency_header = "Idempotency-Key"
  }
}
consumer "denied" {
  queue  = "denied"
  plugin = %[1]q
}`, wasm))
	srv := start(t, cfg, server.Options{})
	ctx := context.Background()
	if err := srv.Enqueue(ctx, "hooks", []engines.Message{{ID: "h-1", Body: []byte(ts.URL)}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Enqueue(ctx, "denied", []engines.Message{{Body: []byte(ts.URL)}}); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.auth != "Bearer t" || s.key != httpout.IdempotencyKey("hooks", "h-1") {
		t.Fatalf("server saw %+v", s)
	}
	waitDepths(t, srv, 30*time.Second, map[string]int64{"hooks": 0, "denied": 0, "denied_dead": 1})
	for _, cs := range srv.ConsumerSamples() {
		h := cs.HTTP
		switch cs.Name {
		case "hooks":
			if len(h.Requests) != 1 || h.Requests[0] != (httpout.HostCount{Host: "http://127.0.0.1:*", Class: "2xx", N: 1}) {
				t.Errorf("hooks: %+v", h.Requests)
			}
		case "denied":
			if h.Denied != 1 || len(h.Requests) != 0 {
				t.Errorf("denied: %+v", h)
			}
		}
	}
}

// TestConsumerWASIBlock: a consumer's wasi block reaches its guest (the
// module acks only when it sees A=1 and /data), and a consumer without one
// grants nothing (the same module dead-letters).
func TestConsumerWASIBlock(t *testing.T) {
	t.Parallel()
	wasm, err := filepath.Abs("testdata/wasi_env.wasm")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "granted" {
  engine       = "m"
  max_attempts = 1
  dead_letter  = "granted_dead"
}
queue "granted_dead" { engine = "m" }
queue "bare" {
  engine       = "m"
  max_attempts = 1
  dead_letter  = "bare_dead"
}
queue "bare_dead" { engine = "m" }
consumer "granted" {
  queue  = "granted"
  plugin = %[1]q
  wasi {
    env = { A = "1" }
    dir "/data" { host = %[2]q }
  }
}
consumer "bare" {
  queue  = "bare"
  plugin = %[1]q
}`, wasm, t.TempDir()))
	srv := start(t, cfg, server.Options{})
	ctx := context.Background()
	for _, q := range []string{"granted", "bare"} {
		if err := srv.Enqueue(ctx, q, []engines.Message{{Body: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	waitDepths(t, srv, 30*time.Second, map[string]int64{"granted": 0, "granted_dead": 0, "bare": 0, "bare_dead": 1})
}
