package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestQueueNameRules holds the queue name rules the README states, engine
// by engine (issue 12 item 13): qrun's own rule everywhere (1 to 128
// letters, digits, '_', '.', '-', starting with a letter or digit), and
// for posixmq and shm, prefix plus name within NAME_MAX (255 bytes). A
// name that does not fit is refused at its label, never shortened.
func TestQueueNameRules(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("p", 200) // a prefix leaving 55 bytes for the name
	tests := []struct {
		name, engine, queue string
		ok                  bool
	}{
		{"128 characters", `type = "memory"`, strings.Repeat("q", 128), true},
		{"129 characters", `type = "memory"`, strings.Repeat("q", 129), false},
		{"not ASCII", `type = "memory"`, "caf\u00e9", false},
		{"space", `type = "memory"`, "a b", false},
		{"leading dot", `type = "memory"`, ".a", false},
		{"postgres 128", `type = "postgres"` + "\n  dsn = \"host=/nonexistent\"", strings.Repeat("q", 128), true},
		{"posixmq fits", "type = \"posixmq\"\n  prefix = \"" + long + "\"", strings.Repeat("q", 55), true},
		{"posixmq too long", "type = \"posixmq\"\n  prefix = \"" + long + "\"", strings.Repeat("q", 56), false},
		{"shm fits", "type = \"shm\"\n  prefix = \"" + long + "\"", strings.Repeat("q", 55), true},
		{"shm too long", "type = \"shm\"\n  prefix = \"" + long + "\"", strings.Repeat("q", 56), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := fmt.Sprintf("engine \"e\" {\n  %s\n}\nqueue %q { engine = \"e\" }\n", tt.engine, tt.queue)
			_, diags := config.Parse("names.hcl", []byte(src), config.Options{Engines: server.Builtin()})
			var errs hcl.Diagnostics
			for _, d := range diags {
				if d.Severity == hcl.DiagError {
					errs = append(errs, d)
				}
			}
			if tt.ok {
				if len(errs) > 0 {
					t.Fatalf("queue %q refused: %v", tt.queue, errs)
				}
				return
			}
			if len(errs) != 1 || errs[0].Summary != "Invalid name" || errs[0].Subject.Start.Line != strings.Count(tt.engine, "\n")+4 {
				t.Fatalf("diagnostics %v, want one \"Invalid name\" at the queue's label", diags)
			}
		})
	}
}
