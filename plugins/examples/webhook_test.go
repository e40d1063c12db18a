package examples_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// webhook loads the Go webhook example as a consumer allowed to reach
// 127.0.0.1, with an idempotency header.
func webhook(t *testing.T, config map[string]string) *plugin.Plugin {
	t.Helper()
	wasm, err := os.ReadFile(filepath.FromSlash("go/webhook/webhook.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := plugin.NewHost(context.Background(), plugin.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	allow, err := httpout.ParseRule("http://127.0.0.1:*")
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Load(context.Background(), plugin.Spec{
		Consumer: "webhook", Wasm: wasm, Config: config, MemoryLimit: 32 << 20, Timeout: 10 * time.Second,
		HTTP: httpout.Policy{Allow: []httpout.Rule{allow}, IdempotencyHeader: "Idempotency-Key"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func TestGoWebhook(t *testing.T) {
	t.Parallel()
	type seen struct{ method, path, body, contentType, key string }
	got := make(chan seen, 10)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, string(b), r.Header.Get("Content-Type"), r.Header.Get("Idempotency-Key")}
		switch string(b) {
		case "busy":
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusServiceUnavailable)
		case "too fast":
			w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusTooManyRequests)
		case "broken":
			w.WriteHeader(http.StatusInternalServerError)
		case "invalid":
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = io.WriteString(w, "field x is required")
		case "gone":
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(s.Close)
	p := webhook(t, map[string]string{"url": s.URL + "/hook", "content_type": "application/json"})
	in, err := p.NewInstance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })

	for _, tc := range []struct {
		body     string
		verdict  engines.Verdict
		minDelay time.Duration // the delay set from Retry-After; 0: none set
		reason   string        // the dead letter's reason (set_reason)
	}{
		{`{"event":"paid"}`, engines.Ack, 0, ""},
		{"busy", engines.Nack, 30 * time.Second, ""},
		{"too fast", engines.Nack, 59 * time.Minute, ""},
		{"broken", engines.Nack, 0, ""},
		{"invalid", engines.DeadLetter, 0, `webhook: 422 Unprocessable Entity: "field x is required"`},
		{"gone", engines.DeadLetter, 0, "webhook: 404 Not Found"},
	} {
		d := engines.NewDelivery(engines.Delivery{
			Message: engines.Message{ID: "evt-" + tc.body, Body: []byte(tc.body)}, Queue: "webhooks", Attempt: 1,
		}, nil, engines.Ticket{})
		r := in.Handle(context.Background(), &d, time.Now())
		if r.Err != nil || r.Verdict != tc.verdict || r.Reason != tc.reason {
			t.Errorf("%s: %+v, want %v with reason %q", tc.body, r, tc.verdict, tc.reason)
		}
		if tc.minDelay == 0 && r.DelaySet || tc.minDelay != 0 && (!r.DelaySet || r.Delay < tc.minDelay || r.Delay > time.Hour) {
			t.Errorf("%s: delay %v (set %v), want at least %v", tc.body, r.Delay, r.DelaySet, tc.minDelay)
		}
		sv := <-got
		if sv.method != "POST" || sv.path != "/hook" || sv.body != tc.body || sv.contentType != "application/json" ||
			sv.key != httpout.IdempotencyKey("webhooks", "evt-"+tc.body) {
			t.Errorf("%s: server saw %+v", tc.body, sv)
		}
	}

	// A URL the consumer may not reach is a configuration mistake: dead-letter.
	p2 := webhook(t, map[string]string{"url": strings.Replace(s.URL, "127.0.0.1", "127.0.0.2", 1)})
	in2, err := p2.NewInstance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in2.Close(context.Background()) })
	if r := handle(t, in2, "x", nil); r.Verdict != engines.DeadLetter || !strings.HasPrefix(r.Reason, "webhook: ") || !strings.Contains(r.Reason, "denied") {
		t.Errorf("denied URL: %+v, want a dead letter whose reason says it was denied", r)
	}
}

func TestGoWebhookRefusesToStartWithoutURL(t *testing.T) {
	t.Parallel()
	p := webhook(t, nil)
	if in, err := p.NewInstance(context.Background()); err == nil {
		in.Close(context.Background())
		t.Fatal("NewInstance succeeded without config url")
	}
}
