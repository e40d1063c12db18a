package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// A global per-key cap needs an engine that keeps shared slots: validate
// refuses it on memory and on redis (shared between machines, but keeping
// no slots) at the attribute, and accepts it on postgres.
func TestGlobalPerKeyCapNeedsSlots(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		engine string
		ok     bool
	}{
		{`type = "memory"`, false},
		{`type = "redis"
  url = "redis://127.0.0.1:1"`, false},
		{`type = "postgres"
  dsn = "postgres://127.0.0.1:1/none"`, true},
	} {
		path := filepath.Join(t.TempDir(), "qrun.hcl")
		src := `engine "e" {
  ` + tc.engine + `
}
queue "q" { engine = "e" }
consumer "c" {
  queue                 = "q"
  plugin                = "h.wasm"
  max_in_flight_per_key = 1
  concurrency_key       = "acct"
  concurrency_scope     = "global"
}
`
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		_, diags := config.Load(path, config.Options{Engines: server.Builtin()})
		var found bool
		for _, d := range diags {
			if d.Summary == "Global per-key cap unsupported" {
				found = true
				line := 10 + strings.Count(tc.engine, "\n") // the line of concurrency_scope
				if d.Subject.Filename != path || d.Subject.Start.Line != line || d.Subject.Start.Column != 27 {
					t.Errorf("%s: error at %s:%d:%d, want %s:%d:27", tc.engine, d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, path, line)
				}
			}
		}
		if found == tc.ok {
			t.Errorf("%s: refused %v, want %v (%v)", tc.engine, found, !tc.ok, diags)
		}
	}
}

// Two qrun nodes on one postgres schema with a global cap of one delivery
// in flight per key: of the six workers between them, each holding a
// message of the same key, one handles it (a handler that sleeps) and the
// five others wait, on both nodes. With the per-node cap each node would
// handle one.
func TestTwoPostgresNodesShareAPerKeyCap(t *testing.T) {
	t.Parallel()
	pgEngine := postgresEngine(t, "pg")
	src := fmt.Sprintf(`
runtime {
  admin_listen  = "off"
  drain_timeout = "1s"
}
%s
queue "jobs" {
  engine             = "pg"
  visibility_timeout = "1h"
}
consumer "c" {
  queue                 = "jobs"
  plugin                = %q
  concurrency           = 3
  batch                 = 1
  timeout               = "20m"
  max_in_flight_per_key = 1
  concurrency_key       = "acct"
  concurrency_scope     = "global"
}`, pgEngine, testWasm(t, "runaway"))
	a := start(t, parse(t, src), server.Options{})
	b := start(t, parse(t, src), server.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msgs := make([]engines.Message, 6)
	for i := range msgs {
		msgs[i] = engines.Message{Body: []byte("s"), Attributes: map[string]string{"acct": "x"}} // sleeps an hour
	}
	if err := a.Enqueue(ctx, "jobs", msgs); err != nil {
		t.Fatal(err)
	}
	info := func(s *server.Server) admin.ConsumerInfo { return theConsumer(t, ctx, s) }
	waitUntil(t, ctx, "five workers of two nodes waiting for the key's one slot", func() bool {
		wa, wb := info(a).Throttle.Waiting, info(b).Throttle.Waiting
		if wa+wb > 5 {
			t.Fatalf("%d+%d waiting: more than 5", wa, wb)
		}
		return wa+wb == 5 && wa > 0 && wb > 0
	})
	if sc := info(a).Throttle.ConcurrencyScope; sc != "global" {
		t.Fatalf("scope %q", sc)
	}
}
