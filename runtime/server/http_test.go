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
