package admin_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
)

// fakeBackend records enqueues; the real one is tested in runtime/server.
type fakeBackend struct {
	mu    sync.Mutex
	got   map[string][]engines.Message
	ready atomic.Bool
}

func (f *fakeBackend) Queues(context.Context) ([]admin.QueueInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []admin.QueueInfo{{Name: "q", Engine: "m", Depth: int64(len(f.got["q"])), Stats: engines.Stats{Ready: int64(len(f.got["q"]))}}}, nil
}

func (f *fakeBackend) Enqueue(_ context.Context, queue string, msgs []engines.Message) error {
	if queue != "q" {
		return fmt.Errorf("%w: %q", admin.ErrUnknownQueue, queue)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range msgs {
		msgs[i].ID = fmt.Sprint(len(f.got[queue]) + 1)
		f.got[queue] = append(f.got[queue], msgs[i])
	}
	return nil
}

func (f *fakeBackend) Ready() bool { return f.ready.Load() }

func newServer(t *testing.T, token string) (*admin.Client, *fakeBackend) {
	t.Helper()
	b := &fakeBackend{got: map[string][]engines.Message{}}
	b.ready.Store(true)
	ts := httptest.NewServer(admin.Handler(admin.Options{Token: token, Backend: b}))
	t.Cleanup(ts.Close)
	return &admin.Client{BaseURL: ts.URL, Token: token}, b
}

func TestTokenGuardsEveryRoute(t *testing.T) {
	t.Parallel()
	c, _ := newServer(t, "s3cret")
	routes := []struct{ method, path, body string }{
		{"GET", "/healthz", ""},
		{"GET", "/readyz", ""},
		{"GET", "/v1/queues", ""},
		{"POST", "/v1/queues/q/messages", `{"body":"x"}`},
	}
	for _, r := range routes {
		for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret"} {
			req, _ := http.NewRequest(r.method, c.BaseURL+r.path, strings.NewReader(r.body))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusUnauthorized
			if auth == "Bearer s3cret" {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Errorf("%s %s with %q: %d, want %d", r.method, r.path, auth, resp.StatusCode, want)
			}
		}
	}
}

func TestEnqueue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		queue  string
		req    admin.SendRequest
		status int // 0: success
		check  func(t *testing.T, m []engines.Message)
	}{
		{
			name:  "single with everything",
			queue: "q",
			req: admin.SendRequest{SendMessage: admin.SendMessage{
				Body: "hello", Attributes: map[string]string{"k": "v"}, Delay: "1.5s", TTL: "1h",
				Priority: 7, ContentType: "text/plain", CorrelationID: "c", OrderingKey: "o", DedupID: "d",
			}},
			check: func(t *testing.T, m []engines.Message) {
				want := engines.Message{ID: "1", Body: []byte("hello"), Attributes: map[string]string{"k": "v"}, Delay: 1500 * time.Millisecond,
					TTL: time.Hour, Priority: 7, ContentType: "text/plain", CorrelationID: "c", OrderingKey: "o", DedupID: "d"}
				if len(m) != 1 || fmt.Sprint(m[0]) != fmt.Sprint(want) {
					t.Fatalf("got %+v, want %+v", m, want)
				}
			},
		},
		{
			name:  "batch",
			queue: "q",
			req:   admin.SendRequest{Messages: []admin.SendMessage{{Body: "a"}, {BodyBase64: "AAEC"}, {}}},
			check: func(t *testing.T, m []engines.Message) {
				if len(m) != 3 || string(m[0].Body) != "a" || string(m[1].Body) != "\x00\x01\x02" || len(m[2].Body) != 0 {
					t.Fatalf("got %+v", m)
				}
			},
		},
		{name: "unknown queue", queue: "nope", req: admin.SendRequest{SendMessage: admin.SendMessage{Body: "x"}}, status: 404},
		{name: "bad delay", queue: "q", req: admin.SendRequest{SendMessage: admin.SendMessage{Delay: "soon"}}, status: 400},
		{name: "negative ttl", queue: "q", req: admin.SendRequest{SendMessage: admin.SendMessage{TTL: "-1s"}}, status: 400},
		{name: "bad base64", queue: "q", req: admin.SendRequest{SendMessage: admin.SendMessage{BodyBase64: "!!"}}, status: 400},
		{name: "body and base64", queue: "q", req: admin.SendRequest{SendMessage: admin.SendMessage{Body: "x", BodyBase64: "AA=="}}, status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, b := newServer(t, "")
			resp, err := c.Send(context.Background(), tt.queue, tt.req)
			if tt.status != 0 {
				var se *admin.StatusError
				if !errors.As(err, &se) || se.Status != tt.status || se.Message == "" {
					t.Fatalf("got %v, want status %d with a message", err, tt.status)
				}
				if len(b.got) != 0 {
					t.Fatalf("a refused request enqueued %v", b.got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.IDs) != len(b.got["q"]) {
				t.Fatalf("ids %v for %d messages", resp.IDs, len(b.got["q"]))
			}
			tt.check(t, b.got["q"])
		})
	}
}

func TestUnknownFieldRefused(t *testing.T) {
	t.Parallel()
	c, _ := newServer(t, "")
	resp, err := http.Post(c.BaseURL+"/v1/queues/q/messages", "application/json", strings.NewReader(`{"bdy":"typo"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("status %d, want 400 for a misspelt field", resp.StatusCode)
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	c, b := newServer(t, "")
	b.ready.Store(false)
	if err := c.Ready(context.Background()); err == nil {
		t.Fatal("ready while the backend is not")
	}
	b.ready.Store(true)
	if err := c.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	qs, err := c.Queues(context.Background())
	if err != nil || len(qs) != 1 || qs[0].Name != "q" {
		t.Fatalf("queues %v %v", qs, err)
	}
}
