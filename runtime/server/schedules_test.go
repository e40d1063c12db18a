package server_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// Schedules follow the config: a reload that adds, changes or removes
// schedule blocks is what the running qrun lists and fires afterwards.
func TestSchedulesReloadWithTheConfig(t *testing.T) {
	t.Parallel()
	base := `
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "q" { engine = "m" }
`
	cfg := parse(t, base)
	srv := start(t, cfg, server.Options{})
	if got := srv.Schedules(); len(got) != 0 {
		t.Fatalf("schedules before any: %+v", got)
	}
	reload := func(src string) {
		t.Helper()
		if err := os.WriteFile(cfg.Path, []byte(base+src), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	reload(`schedule "nightly" {
  cron      = "0 3 * * *"
  time_zone = "Asia/Tokyo"
  queue     = "q"
}`)
	got := srv.Schedules()
	if len(got) != 1 || got[0].Name != "nightly" || got[0].Expr != "0 3 * * *" || got[0].TimeZone != "Asia/Tokyo" {
		t.Fatalf("after adding: %+v", got)
	}
	// 03:00 in Tokyo is 18:00 UTC, within a day from now.
	if n := got[0].Next.UTC(); n.Hour() != 18 || n.Minute() != 0 || !n.After(time.Now()) || n.Sub(time.Now()) > 24*time.Hour {
		t.Fatalf("next tick %s", got[0].Next)
	}
	reload(`schedule "hourly" {
  every = "1h"
  queue = "q"
}`)
	got = srv.Schedules()
	if len(got) != 1 || got[0].Name != "hourly" || got[0].Expr != "every 1h" ||
		!got[0].Next.Truncate(time.Hour).Equal(got[0].Next) || got[0].Next.Sub(time.Now()) > time.Hour {
		t.Fatalf("after replacing: %+v", got)
	}
	reload(``)
	if got := srv.Schedules(); len(got) != 0 {
		t.Fatalf("after removing: %+v", got)
	}
}

// A global rate limit needs an engine shared between machines: validate
// refuses it on memory at the attribute, and accepts it on postgres.
func TestGlobalRateLimitNeedsASharedEngine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "qrun.hcl")
	src := `engine "m" { type = "memory" }
queue "q" { engine = "m" }
consumer "c" {
  queue            = "q"
  plugin           = "h.wasm"
  rate_limit       = "10/s"
  rate_limit_scope = "global"
}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, diags := config.Load(path, config.Options{Engines: server.Builtin()})
	var found bool
	for _, d := range diags {
		if d.Summary == "Global rate limit unsupported" && d.Subject.Start.Line == 7 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no error at line 7 among %v", diags)
	}
}
