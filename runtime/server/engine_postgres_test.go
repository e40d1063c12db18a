package server_test

import (
	"fmt"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

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
