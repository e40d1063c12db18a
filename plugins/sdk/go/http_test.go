//go:build !wasip1

package qrun

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/abi"
)

// httpHost is a fake host with one canned response.
type httpHost struct {
	fakeHost
	status        int32
	body, headers []byte
	method, url   string
	sentHeaders   []byte
	sentBody      []byte
	bodyCalls     int
	nowNanos      int64
}

func (h *httpHost) httpRequest(method, url string, headers, body []byte) int32 {
	h.method, h.url, h.sentHeaders, h.sentBody = method, url, append([]byte(nil), headers...), append([]byte(nil), body...)
	return h.status
}

func (h *httpHost) httpResponseHeaders(buf []byte) int32 { return h.put(string(h.headers), buf) }

func (h *httpHost) httpResponseBody(buf []byte) int32 {
	h.bodyCalls++
	return h.put(string(h.body), buf)
}

func (h *httpHost) now() int64 { return h.nowNanos }

func useHTTPHost(t *testing.T, h *httpHost) {
	old := host
	host = h
	t.Cleanup(func() { host = old })
}

func TestFetch(t *testing.T) {
	big := strings.Repeat("b", 1000) // larger than the first buffer: read again, not re-sent
	h := &httpHost{status: 201, body: []byte(big),
		headers: mustEncode(t, map[string]string{"Content-Type": "text/plain"})}
	useHTTPHost(t, h)
	resp, err := Fetch(&Request{Method: "POST", URL: "https://x.example.com/h", Header: map[string]string{"X-A": "1"}, Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 201 || string(resp.Body) != big || resp.Get("content-type") != "text/plain" || h.bodyCalls != 2 {
		t.Fatalf("response %d %d bytes %v, body calls %d", resp.Status, len(resp.Body), resp.Header, h.bodyCalls)
	}
	if h.method != "POST" || h.url != "https://x.example.com/h" || string(h.sentBody) != "hi" || string(h.sentHeaders) != string(mustEncode(t, map[string]string{"X-A": "1"})) {
		t.Fatalf("sent %s %s %q %q", h.method, h.url, h.sentBody, h.sentHeaders)
	}
	if _, err := Fetch(&Request{URL: "u"}); err != nil || h.method != "GET" {
		t.Fatalf("default method %q, %v", h.method, err)
	}
	for code, want := range map[int32]error{
		abi.ErrDenied: ErrDenied, abi.ErrTimeout: ErrTimeout, abi.ErrConnect: ErrConnect,
		abi.ErrTooLarge: ErrTooLarge, abi.ErrLimit: ErrLimit, abi.ErrInvalid: ErrInvalid, abi.ErrNoMessage: ErrNoMessage,
	} {
		h.status = code
		if _, err := Fetch(&Request{URL: "u"}); !errors.Is(err, want) {
			t.Errorf("code %d: %v, want %v", code, err, want)
		}
	}
}

func mustEncode(t *testing.T, m map[string]string) []byte {
	t.Helper()
	b, err := encodeAttrs(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	h := &httpHost{nowNanos: now.UnixNano()}
	useHTTPHost(t, h)
	for _, tc := range []struct {
		status int
		header string
		want   time.Duration
		ok     bool
	}{
		{429, "120", 2 * time.Minute, true},
		{503, " 7 ", 7 * time.Second, true},
		{503, now.Add(90 * time.Second).Format(httpTimeFormat), 90 * time.Second, true},
		{503, now.Add(-time.Hour).Format(httpTimeFormat), 0, true},
		{429, "soon", 0, false},
		{429, "-5", 0, false},
		{429, "", 0, false},
		{500, "120", 0, false},
		{429, "99999999999", 7 * 24 * time.Hour, true},
	} {
		r := &Response{Status: tc.status, Header: map[string][]string{}}
		if tc.header != "" {
			r.Header["Retry-After"] = []string{tc.header}
		}
		d, ok := r.RetryAfter()
		if d != tc.want || ok != tc.ok {
			t.Errorf("%d Retry-After %q: %v %v, want %v %v", tc.status, tc.header, d, ok, tc.want, tc.ok)
		}
	}
}

func TestRetryLater(t *testing.T) {
	h := &httpHost{}
	useHTTPHost(t, h)
	h.delay = -1
	if v := RetryLater(&Response{Status: 500, Header: map[string][]string{"Retry-After": {"3"}}}); v != Nack || h.delay != -1 {
		t.Fatalf("500: %v, delay %d; want nack and the retry policy's delay", v, h.delay)
	}
	if v := RetryLater(&Response{Status: 429, Header: map[string][]string{"Retry-After": {"3"}}}); v != Nack || h.delay != 3000 {
		t.Fatalf("429: %v, delay %d; want nack after 3000 ms", v, h.delay)
	}
}
