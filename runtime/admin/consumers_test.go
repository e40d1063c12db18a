package admin_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// reloadBackend adds consumers and reloads to fakeBackend.
type reloadBackend struct {
	*fakeBackend
	err error
}

func (r *reloadBackend) ConsumerInfos(context.Context) ([]admin.ConsumerInfo, error) {
	return []admin.ConsumerInfo{{Name: "c", Queue: "q", Concurrency: 2, Isolation: "instance",
		Plugin: &admin.PluginInfo{Path: "/p.wasm", Version: "abc", LoadedAt: time.Unix(1, 0).UTC(), Reloads: 3, FailedReloads: 1}}}, nil
}

func (r *reloadBackend) Reload(context.Context) (admin.ReloadResult, error) {
	return admin.ReloadResult{Config: "/q.hcl", Changes: []string{`consumer "c" added`}}, r.err
}

func TestConsumersAndReloadRoutes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		err   error
		check func(t *testing.T, res admin.ReloadResult, err error)
	}{
		{"ok", nil, func(t *testing.T, res admin.ReloadResult, err error) {
			if err != nil || res.Config != "/q.hcl" || len(res.Changes) != 1 {
				t.Fatalf("reload: %+v, %v", res, err)
			}
		}},
		{"invalid config", &admin.InvalidConfigError{Diagnostics: "q.hcl:3:7: Error: Unknown engine\n"}, func(t *testing.T, _ admin.ReloadResult, err error) {
			var ice *admin.InvalidConfigError
			if !errors.As(err, &ice) || !strings.HasPrefix(ice.Diagnostics, "q.hcl:3:7: ") {
				t.Fatalf("reload: %v, want the diagnostics back", err)
			}
		}},
		{"shutting down", admin.ErrShuttingDown, func(t *testing.T, _ admin.ReloadResult, err error) {
			if !isHTTPStatus(err, 503) {
				t.Fatalf("reload: %v, want 503", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := &reloadBackend{fakeBackend: &fakeBackend{}, err: tt.err}
			ts := httptest.NewServer(admin.Handler(admin.Options{Token: "t", Backend: b}))
			defer ts.Close()
			c := &admin.Client{BaseURL: ts.URL, Token: "t"}
			res, err := c.Reload(context.Background())
			tt.check(t, res, err)
			cs, err := c.Consumers(context.Background())
			if err != nil || len(cs) != 1 || cs[0].Plugin.Reloads != 3 || cs[0].Plugin.Version != "abc" {
				t.Fatalf("consumers: %+v, %v", cs, err)
			}
			if _, err := (&admin.Client{BaseURL: ts.URL}).Reload(context.Background()); !isHTTPStatus(err, 401) {
				t.Fatalf("reload without the token: %v, want 401", err)
			}
		})
	}
}

// A backend that cannot list consumers or reload says so with 501.
func TestConsumersAndReloadNotImplemented(t *testing.T) {
	t.Parallel()
	c, _ := newServer(t, "")
	if _, err := c.Consumers(context.Background()); !isHTTPStatus(err, 501) {
		t.Fatalf("consumers: %v, want 501", err)
	}
	if _, err := c.Reload(context.Background()); !isHTTPStatus(err, 501) {
		t.Fatalf("reload: %v, want 501", err)
	}
}

func isHTTPStatus(err error, code int) bool {
	var se *admin.StatusError
	return errors.As(err, &se) && se.Status == code
}
