package admin_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/admin/console"
)

// TestConsoleServedWithoutToken: /ui/ serves the console's assets without
// the token (they hold no data) under its security headers; the API next
// to it still wants the token, and / and /ui lead to /ui/.
func TestConsoleServedWithoutToken(t *testing.T) {
	t.Parallel()
	c, _ := newServer(t, "s3cret")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, c.BaseURL+path, nil)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for _, tc := range []struct{ path, ctype, has string }{
		{"/ui/", "text/html", `<script type="module" src="app.js">`},
		{"/ui/app.js", "text/javascript", "PAGES"},
		{"/ui/pages/overview.js", "text/javascript", "/v1/queues"},
		{"/ui/app.css", "text/css", "prefers-color-scheme"},
		{"/ui/icon.svg", "image/svg+xml", "<svg"},
	} {
		resp, body := get("GET", tc.path)
		h := resp.Header
		if resp.StatusCode != 200 || !strings.HasPrefix(h.Get("Content-Type"), tc.ctype) || !strings.Contains(body, tc.has) {
			t.Errorf("%s: %d %q, body has %q: %v", tc.path, resp.StatusCode, h.Get("Content-Type"), tc.has, strings.Contains(body, tc.has))
		}
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'", "connect-src 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", tc.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("%s: CSP %q allows inline code or another origin", tc.path, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", tc.path, h)
		}
	}
	for _, p := range []string{"/", "/ui"} {
		if resp, _ := get("GET", p); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("GET %s: %d to %q, want a redirect to /ui/", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := get("POST", "/ui/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d", resp.StatusCode)
	}
	if resp, _ := get("GET", "/ui/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/nope.js: %d", resp.StatusCode)
	}
	resp, _ := get("GET", "/v1/queues")
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("API without token: %d %v", resp.StatusCode, resp.Header)
	}
	if console.ContentSecurityPolicy == "" {
		t.Fatal("no policy")
	}
}

// configBackend is a Backend that can show its configuration.
type configBackend struct {
	fakeBackend
	src admin.ConfigSource
	err error
}

func (b *configBackend) ConfigSource(context.Context) (admin.ConfigSource, error) {
	return b.src, b.err
}

func TestConfigRoute(t *testing.T) {
	t.Parallel()
	serve := func(b admin.Backend) *admin.Client {
		ts := httptest.NewServer(admin.Handler(admin.Options{Backend: b}))
		t.Cleanup(ts.Close)
		return &admin.Client{BaseURL: ts.URL}
	}
	want := admin.ConfigSource{Path: "/etc/qrun.hcl", Source: "queue \"q\" {}\n", Redacted: 1}
	got, err := serve(&configBackend{src: want}).Config(context.Background())
	if err != nil || got != want {
		t.Fatalf("got %+v, %v", got, err)
	}
	var se *admin.StatusError
	if _, err := serve(&configBackend{err: admin.ErrNoConfigFile}).Config(context.Background()); !errors.As(err, &se) || se.Status != 404 {
		t.Fatalf("no file: %v, want 404", err)
	}
	if _, err := serve(&fakeBackend{}).Config(context.Background()); !errors.As(err, &se) || se.Status != 501 {
		t.Fatalf("a backend without configuration: %v, want 501", err)
	}
}
