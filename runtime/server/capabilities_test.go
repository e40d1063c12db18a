package server_test

import (
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestOrderedNeedsOrdering: a queue asking for ordered delivery on an
// engine without the Ordering capability is refused at validate, at its
// ordered attribute, instead of failing when qrun opens the queue at start.
func TestOrderedNeedsOrdering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		engine string
		ok     bool
	}{
		{"memory", true},
		{"disk", true},
		{`postgres"` + "\n  dsn = \"host=/nonexistent", true},
		{"posixmq", false},
		{"shm", false},
	}
	for _, tt := range tests {
		t.Run(tt.engine, func(t *testing.T) {
			t.Parallel()
			src := "engine \"e\" {\n  type = \"" + tt.engine + "\"\n}\nqueue \"q\" {\n  engine  = \"e\"\n  ordered = true\n}\n"
			_, diags := config.Parse("ordered.hcl", []byte(src), config.Options{Engines: server.Builtin()})
			var errs hcl.Diagnostics
			for _, d := range diags {
				if d.Severity == hcl.DiagError {
					errs = append(errs, d)
				}
			}
			if tt.ok {
				if len(errs) > 0 {
					t.Fatalf("ordered queue refused: %v", errs)
				}
				return
			}
			line := 6 + countLines(tt.engine)
			if len(errs) != 1 || errs[0].Summary != "Ordered delivery unsupported" || errs[0].Subject.Start.Line != line || errs[0].Subject.Start.Column != 13 {
				t.Fatalf("diagnostics %v, want one \"Ordered delivery unsupported\" at ordered.hcl:%d:13", diags, line)
			}
		})
	}
}

func countLines(s string) int {
	n := 0
	for _, r := range s {
		if r == '\n' {
			n++
		}
	}
	return n
}
