package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/internal/settings/settingstest"
)

func TestSettings(t *testing.T) {
	t.Parallel()
	t.Run("full", func(t *testing.T) {
		s, diags := settingstest.Decode(t, `
dsn               = "host=/tmp"
schema            = "jobs"
max_conns         = 20
statement_timeout = "30s"
migrate           = false
poll_interval     = "250ms"
dedup_window      = "1m"
max_message_size  = 1024
topic "events" {
  subscription "billing" {}
  subscription "audit" {}
}`, postgres.DecodeSettings)
		settingstest.Expect(t, diags)
		o := s.Options
		if o.DSN != "host=/tmp" || o.Schema != "jobs" || o.MaxConns != 20 || o.StatementTimeout != 30*time.Second || !o.NoMigrate ||
			o.PollInterval != 250*time.Millisecond || o.DedupWindow != time.Minute || o.MaxMessageSize != 1024 ||
			len(o.Topics) != 1 || o.Topics[0].Name != "events" || strings.Join(o.Topics[0].Subscriptions, " ") != "billing audit" {
			t.Errorf("options %+v", o)
		}
		if got := s.Topics(); len(got) != 1 || got[0] != "events" {
			t.Errorf("Topics() = %v", got)
		}
	})
	t.Run("size string", func(t *testing.T) {
		s, diags := settingstest.Decode(t, "dsn = \"x\"\nmax_message_size = \"8MiB\"", postgres.DecodeSettings)
		settingstest.Expect(t, diags)
		if s.MaxMessageSize != 8<<20 {
			t.Errorf("max_message_size = %d, want %d", s.MaxMessageSize, 8<<20)
		}
	})
	for name, tc := range map[string]struct{ src, want string }{
		"no dsn":          {`schema = "x"`, "engine.hcl:1:1: Missing required argument"},
		"empty dsn":       {`dsn = ""`, "engine.hcl:1:7: Empty dsn"},
		"null dsn":        {"dsn = null\npool = 1", "engine.hcl:1:7: Empty dsn"},
		"bad duration":    {"dsn = \"x\"\nstatement_timeout = \"soon\"", "engine.hcl:2:21: Invalid duration"},
		"tiny poll":       {"dsn = \"x\"\npoll_interval = \"1us\"", "engine.hcl:2:17: Invalid poll_interval"},
		"negative":        {"dsn = \"x\"\ndedup_window = \"-1s\"", "engine.hcl:2:16: Invalid dedup_window"},
		"few conns":       {"dsn = \"x\"\nmax_conns = 1", "engine.hcl:2:13: Invalid max_conns"},
		"long schema":     {"dsn = \"x\"\nschema = \"" + strings.Repeat("s", 59) + `"`, "engine.hcl:2:10: Invalid schema"},
		"self subscribe":  {"dsn = \"x\"\ntopic \"t\" {\nsubscription \"t\" {}\n}", "engine.hcl:3:1: Topic subscribes to itself"},
		"dup subscriber":  {"dsn = \"x\"\ntopic \"t\" {\nsubscription \"a\" {}\nsubscription \"a\" {}\n}", "engine.hcl:4:1: Duplicate subscription"},
		"dup topic":       {"dsn = \"x\"\ntopic \"t\" {}\ntopic \"t\" {}", "engine.hcl:3:1: Duplicate topic"},
		"topic as sub":    {"dsn = \"x\"\ntopic \"t\" {\nsubscription \"u\" {}\n}\ntopic \"u\" {}", "engine.hcl:3:1: Subscription is a topic"},
		"unknown setting": {"dsn = \"x\"\npool = 3", "engine.hcl:2:1: Unsupported argument"},
		"sub setting":     {"dsn = \"x\"\ntopic \"t\" {\nsubscription \"u\" { x = 1 }\n}", "engine.hcl:3:20: Unsupported argument"},
		"schema 70 bytes": {"dsn = \"x\"\nschema = \"" + strings.Repeat("s", 70) + `"`, "Invalid schema"},
		"huge messages":   {"dsn = \"x\"\nmax_message_size = 1073741824", "engine.hcl:2:20: Invalid max_message_size"},
		"huge as string":  {"dsn = \"x\"\nmax_message_size = \"1GiB\"", "engine.hcl:2:20: Invalid max_message_size"},
	} {
		t.Run(name, func(t *testing.T) {
			_, diags := settingstest.Decode(t, tc.src, postgres.DecodeSettings)
			settingstest.Expect(t, diags, tc.want)
		})
	}
}
