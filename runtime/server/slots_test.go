package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
