package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

func TestPostgresSettings(t *testing.T) {
	t.Parallel()
	decode := func(t *testing.T, src string) (hcl.Diagnostics, func() any) {
		f, diags := hclsyntax.ParseConfig([]byte(src), "engine.hcl", hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		o, d := server.PostgresOptions(f.Body, nil)
		return d, func() any { return o }
	}
	t.Run("full", func(t *testing.T) {
		diags, o := decode(t, `
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
}`)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		got := o()
		for _, want := range []string{"jobs", "20", "30s", "NoMigrate:true", "250ms", "1m0s", "1024", "events", "billing audit"} {
			if s := strings.ReplaceAll(stringOf(got), "[", ""); !strings.Contains(s, want) {
				t.Errorf("options %s lack %q", s, want)
			}
		}
	})
	for name, tc := range map[string]struct{ src, want string }{
		"no dsn":          {`schema = "x"`, "dsn"},
		"empty dsn":       {`dsn = ""`, "Empty dsn"},
		"bad duration":    {`dsn = "x"` + "\n" + `statement_timeout = "soon"`, "Invalid statement_timeout"},
		"tiny poll":       {`dsn = "x"` + "\n" + `poll_interval = "1us"`, "Invalid poll_interval"},
		"few conns":       {`dsn = "x"` + "\n" + `max_conns = 1`, "Invalid max_conns"},
		"long schema":     {`dsn = "x"` + "\n" + `schema = "` + strings.Repeat("s", 59) + `"`, "Invalid schema"},
		"self subscribe":  {"dsn = \"x\"\ntopic \"t\" {\nsubscription \"t\" {}\n}", "subscribes to itself"},
		"dup subscriber":  {`dsn = "x"` + "\n" + `topic "t" {` + "\n" + `subscription "a" {}` + "\n" + `subscription "a" {}` + "\n" + `}`, "Duplicate subscription"},
		"dup topic":       {`dsn = "x"` + "\n" + `topic "t" {}` + "\n" + `topic "t" {}`, "Duplicate topic"},
		"topic as sub":    {"dsn = \"x\"\ntopic \"t\" {\nsubscription \"u\" {}\n}\ntopic \"u\" {}", "Subscription is a topic"},
		"unknown setting": {`dsn = "x"` + "\n" + `pool = 3`, "Unsupported argument"},
		"schema 70 bytes": {`dsn = "x"` + "\n" + `schema = "` + strings.Repeat("s", 70) + `"`, "Invalid schema"},
		"huge messages":   {`dsn = "x"` + "\n" + `max_message_size = 1073741824`, "Invalid max_message_size"},
	} {
		t.Run(name, func(t *testing.T) {
			diags, _ := decode(t, tc.src)
			if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
				t.Fatalf("diagnostics %v, want an error mentioning %q", diags, tc.want)
			}
			// Every diagnostic names file:line (issue 12 item 12).
			for _, d := range diags {
				if d.Subject == nil || d.Subject.Filename != "engine.hcl" || d.Subject.Start.Line < 1 {
					t.Errorf("diagnostic %q has no position: %v", d.Summary, d.Subject)
				}
			}
		})
	}
}

func stringOf(v any) string { return fmt.Sprintf("%+v", v) }

// TestConsumerOnTopicRefused: a consumer bound to a postgres topic used to
// pass validate and then fail every receive ("it is a topic") once
// running; it is refused at validate, at the consumer's queue attribute
// (issue 12 item 5). A consumer on a subscription is fine.
func TestConsumerOnTopicRefused(t *testing.T) {
	t.Parallel()
	src := fmt.Sprintf(`engine "pg" {
  type = "postgres"
  dsn  = "host=/nonexistent"
  topic "events" {
    subscription "events_billing" {}
  }
}
queue "events"         { engine = "pg" }
queue "events_billing" { engine = "pg" }
consumer "billing" {
  queue  = "events_billing"
  plugin = %[1]q
}
consumer "wrong" {
  queue  = "events"
  plugin = %[1]q
}
`, forwardWasm(t))
	_, diags := config.Parse("topic.hcl", []byte(src), config.Options{Engines: server.Builtin()})
	var errs hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	if len(errs) != 1 || errs[0].Summary != "Consumer reads a topic" || errs[0].Subject.Start.Line != 15 {
		t.Fatalf("diagnostics %v, want one \"Consumer reads a topic\" at topic.hcl:15", diags)
	}
}
