package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
)

// fakeOps is a test double for the runtime's Operator; the real one is
// tested against real engines in runtime/server.
type fakeOps struct {
	peekErr error
	paused  bool
}

func (f *fakeOps) consumers() ([]admin.ConsumerInfo, error) {
	state := admin.StateRunning
	if f.paused {
		state = admin.StatePaused
	}
	return []admin.ConsumerInfo{{Name: "c", Queue: "q", State: state}}, nil
}

func (f *fakeOps) Peek(_ context.Context, queue string, max int) ([]engines.Delivery, error) {
	if f.peekErr != nil {
		return nil, f.peekErr
	}
	if queue != "q" {
		return nil, fmt.Errorf("%w: %q", admin.ErrUnknownQueue, queue)
	}
	big := strings.Repeat("é", 100) // 200 bytes of two-byte runes
	return []engines.Delivery{
		{Message: engines.Message{ID: "1", Body: []byte(big)}, Attempt: 2, EnqueuedAt: time.Unix(1, 0)},
		{Message: engines.Message{ID: "2", Body: []byte{0xff, 0xfe}}},
	}[:min(max, 2)], nil
}

// PeekPage serves a queue of five messages, the third in flight, with the
// index as cursor.
func (f *fakeOps) PeekPage(_ context.Context, queue string, opts engines.PeekOptions) (engines.PeekPage, error) {
	if queue != "q" {
		return engines.PeekPage{}, fmt.Errorf("%w: %q", admin.ErrUnknownQueue, queue)
	}
	start := 0
	if opts.After != "" {
		n, err := strconv.Atoi(opts.After)
		if err != nil {
			return engines.PeekPage{}, fmt.Errorf("cursor %q: %w", opts.After, engines.ErrInvalid)
		}
		start = n
	}
	var page engines.PeekPage
	i := start
	for ; i < 5 && len(page.Messages) < opts.Max; i++ {
		st := engines.StateReady
		if i == 2 {
			if !opts.InFlight {
				continue
			}
			st = engines.StateInFlight
		}
		page.Messages = append(page.Messages, engines.Peeked{State: st, Delivery: engines.Delivery{Message: engines.Message{ID: strconv.Itoa(i), Body: []byte("b")}}})
	}
	if i < 5 {
		page.Next = strconv.Itoa(i)
	}
	return page, nil
}

func (f *fakeOps) Purge(context.Context, string) (int64, error) { return 7, nil }

func (f *fakeOps) Redrive(_ context.Context, _ string, ids []string) (int, error) {
	if len(ids) == 0 {
		return 5, nil
	}
	return len(ids), nil
}

func (f *fakeOps) Pause(_ context.Context, name string) (admin.ConsumerInfo, error) {
	if name != "c" {
		return admin.ConsumerInfo{}, fmt.Errorf("%w: %q", admin.ErrUnknownConsumer, name)
	}
	f.paused = true
	cs, _ := f.consumers()
	return cs[0], nil
}

func (f *fakeOps) Resume(_ context.Context, name string) (admin.ConsumerInfo, error) {
	f.paused = false
	cs, _ := f.consumers()
	return cs[0], nil
}

func newOpsServer(t *testing.T, ops admin.Operator) (*admin.Client, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	b := &fakeBackend{got: map[string][]engines.Message{}}
	ts := httptest.NewServer(admin.Handler(admin.Options{Backend: b, Ops: ops, Logger: zap.New(core), Token: "t"}))
	t.Cleanup(ts.Close)
	return &admin.Client{BaseURL: ts.URL, Token: "t"}, logs
}

func TestMutatingCallsAreAudited(t *testing.T) {
	t.Parallel()
	c, logs := newOpsServer(t, &fakeOps{})
	ctx := context.Background()
	calls := []struct {
		what string
		call func() error
		want map[string]any
	}{
		{"admin: queue purged", func() error { _, err := c.Purge(ctx, "q"); return err }, map[string]any{"queue": "q", "purged": int64(7)}},
		{"admin: dead letters redriven", func() error { _, err := c.Redrive(ctx, "q", []string{"a", "b"}); return err }, map[string]any{"queue": "q", "redriven": int64(2), "requested_ids": int64(2)}},
		{"admin: consumer paused", func() error { _, err := c.Pause(ctx, "c"); return err }, map[string]any{"consumer": "c"}},
		{"admin: consumer resumed", func() error { _, err := c.Resume(ctx, "c"); return err }, map[string]any{"consumer": "c"}},
		{"admin: messages enqueued", func() error {
			_, err := c.Send(ctx, "q", admin.SendRequest{SendMessage: admin.SendMessage{Body: "x"}})
			return err
		}, map[string]any{"queue": "q", "count": int64(1)}},
	}
	for _, tc := range calls {
		if err := tc.call(); err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		lines := logs.FilterMessage(tc.what).AllUntimed()
		if len(lines) != 1 {
			t.Fatalf("%d %q lines, want 1", len(lines), tc.what)
		}
		m := lines[0].ContextMap()
		if r, _ := m["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") || m["token"] != true || m["method"] != "POST" {
			t.Errorf("%s: who is missing: %v", tc.what, m)
		}
		for k, v := range tc.want {
			if m[k] != v {
				t.Errorf("%s: %s = %v (%T), want %v", tc.what, k, m[k], m[k], v)
			}
		}
	}
	// A failed mutation is logged too, at warn.
	if _, err := c.Pause(ctx, "nobody"); err == nil {
		t.Fatal("pausing an unknown consumer succeeded")
	}
	if logs.FilterMessage("admin: consumer paused failed").Len() != 1 {
		t.Fatal("failed pause not audited")
	}
}

func TestPeekEncodesBodies(t *testing.T) {
	t.Parallel()
	c, _ := newOpsServer(t, &fakeOps{})
	req, _ := http.NewRequest("GET", c.BaseURL+"/v1/queues/q/messages?body_limit=5", nil)
	req.Header.Set("Authorization", "Bearer t")
	var r admin.PeekResponse
	if err := doJSON(req, &r); err != nil {
		t.Fatal(err)
	}
	m := r.Messages[0]
	// Cut at 5 bytes, then back to a rune boundary: two "é".
	if m.Body != "éé" || !m.BodyTruncated || m.BodySize != 200 || m.Attempt != 2 {
		t.Fatalf("text body: %+v", m)
	}
	if b := r.Messages[1]; b.BodyBase64 != "//4=" || b.Body != "" {
		t.Fatalf("binary body: %+v", b)
	}
}

func TestOperationsErrors(t *testing.T) {
	t.Parallel()
	c, _ := newOpsServer(t, &fakeOps{peekErr: fmt.Errorf("queue %q: %w", "q", engines.ErrUnsupported)})
	noOps, _ := newOpsServer(t, nil)
	for _, tc := range []struct {
		name, method, path, body string
		client                   *admin.Client
		want                     int
	}{
		{"unsupported engine", "GET", "/v1/queues/q/messages", "", c, 501},
		{"no operator", "POST", "/v1/consumers/c/pause", "", noOps, 501},
		{"no consumer list", "GET", "/v1/consumers", "", c, 501},
		{"no metrics", "GET", "/metrics", "", c, 404},
		{"limit not a number", "GET", "/v1/queues/q/messages?limit=ten", "", c, 400},
		{"limit too big", "GET", "/v1/queues/q/messages?limit=1001", "", c, 400},
		{"redrive bad body", "POST", "/v1/queues/q/redrive", `{"ids": "x"}`, c, 400},
		{"redrive unknown field", "POST", "/v1/queues/q/redrive", `{"id": ["x"]}`, c, 400},
		{"redrive empty body means all", "POST", "/v1/queues/q/redrive", ``, c, 200},
		{"unknown consumer", "POST", "/v1/consumers/nobody/pause", "", c, 404},
	} {
		req, _ := http.NewRequest(tc.method, tc.client.BaseURL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer t")
		err := doJSON(req, nil)
		got := 200
		if se, ok := err.(*admin.StatusError); ok {
			got = se.Status
			if se.Message == "" {
				t.Errorf("%s: no error message", tc.name)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: %d (%v), want %d", tc.name, got, err, tc.want)
		}
	}
}

// doJSON sends req and decodes a 2xx answer into out (if not nil); other
// answers become *admin.StatusError.
func doJSON(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e admin.ErrorResponse
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return &admin.StatusError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// TestPeekScan pages through a queue with the cursor: the answer carries
// each message's state and the cursor of the next page, none after the
// last; in_flight adds leased messages; a bad cursor or in_flight is 400.
func TestPeekScan(t *testing.T) {
	t.Parallel()
	c, _ := newOpsServer(t, &fakeOps{})
	ctx := context.Background()
	scan := func(inFlight bool) (ids, states []string, pages int) {
		q := admin.PeekQuery{Limit: 2, Scan: true, InFlight: inFlight}
		for {
			r, err := c.PeekQuery(ctx, "q", q)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, m := range r.Messages {
				ids, states = append(ids, m.ID), append(states, m.State)
			}
			if r.NextCursor == "" {
				return ids, states, pages
			}
			q.Cursor = r.NextCursor
		}
	}
	ids, states, pages := scan(false)
	if strings.Join(ids, ",") != "0,1,3,4" || strings.Join(states, ",") != "ready,ready,ready,ready" || pages != 2 {
		t.Fatalf("scan: ids %v states %v in %d pages; want 0,1,3,4 all ready in 2", ids, states, pages)
	}
	ids, states, _ = scan(true)
	if strings.Join(ids, ",") != "0,1,2,3,4" || states[2] != "in_flight" {
		t.Fatalf("scan with in-flight: ids %v states %v; want 0-4 with 2 in_flight", ids, states)
	}
	// Without a cursor the route answers as before: no state, no cursor.
	r, err := c.PeekQuery(ctx, "q", admin.PeekQuery{Limit: 1})
	if err != nil || r.NextCursor != "" || len(r.Messages) != 1 || r.Messages[0].State != "" {
		t.Fatalf("peek without a cursor: %+v, %v", r, err)
	}
	for _, bad := range []string{"cursor=x", "in_flight=maybe"} {
		req, _ := http.NewRequest("GET", c.BaseURL+"/v1/queues/q/messages?"+bad, nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("?%s: status %d, want 400", bad, resp.StatusCode)
		}
	}
}
