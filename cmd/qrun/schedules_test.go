package main_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// TestSchedulesAndThrottleCommands: a running qrun fires an interval
// schedule, lists its schedules with their next ticks (qrun schedules, GET
// /v1/schedules), and shows a consumer's throttle (qrun consumers).
func TestSchedulesAndThrottleCommands(t *testing.T) {
	t.Parallel()
	srv := startQrun(t, "", "", fmt.Sprintf(`
engine "d" { type = "disk" }
queue "ticks" { engine = "d" }
queue "jobs" { engine = "d" }
schedule "heartbeat" {
  every      = "1s"
  queue      = "ticks"
  body       = "beat"
  attributes = { kind = "heartbeat" }
}
schedule "nightly" {
  cron      = "0 3 * * *"
  time_zone = "Europe/Paris"
  queue     = "ticks"
}
consumer "worker" {
  queue                 = "jobs"
  plugin                = %q
  concurrency           = 2
  rate_limit            = "1000/s"
  burst                 = 10
  rate_limit_key        = "tenant"
  max_in_flight_per_key = 1
  concurrency_key       = "tenant"
}
`, repoPath(t, "plugins/examples/wat/forward/forward.wasm")))
	waitFor(t, "a heartbeat tick enqueued", 30*time.Second, func() (bool, string) {
		d := depths(t, srv.c)
		return d["ticks"] >= 1, fmt.Sprint(d)
	})
	out, errOut, code := qrunRun(t, nil, "schedules", "-c", srv.cfg)
	if code != 0 {
		t.Fatalf("qrun schedules exited %d: %s %s", code, out, errOut)
	}
	for _, want := range []string{"SCHEDULE", "heartbeat", "every 1s", "nightly", "0 3 * * *", "Europe/Paris"} {
		if !strings.Contains(out, want) {
			t.Fatalf("qrun schedules lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = qrunRun(t, nil, "schedules", "-c", srv.cfg, "--json")
	var js struct {
		Schedules []admin.ScheduleInfo `json:"schedules"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || len(js.Schedules) != 2 {
		t.Fatalf("schedules --json: %v\n%s", err, out)
	}
	hb, nightly := js.Schedules[0], js.Schedules[1]
	if hb.Name != "heartbeat" || hb.Fired < 1 || hb.LastTick.IsZero() || !hb.Next.After(hb.LastTick) {
		t.Errorf("heartbeat %+v", hb)
	}
	// The next 03:00 in Paris is 01:00 or 02:00 UTC.
	if n := nightly.Next.UTC(); n.Minute() != 0 || (n.Hour() != 1 && n.Hour() != 2) || !n.After(time.Now()) {
		t.Errorf("nightly next %s", nightly.Next)
	}
	out, _, _ = qrunRun(t, nil, "consumers", "-c", srv.cfg)
	if !strings.Contains(out, "throttle of worker: rate 1000/s burst 10 per tenant, 1 in flight per tenant; waiting 0") {
		t.Fatalf("qrun consumers lacks the throttle line:\n%s", out)
	}
	out, _, _ = qrunRun(t, nil, "schedules", "--help")
	if !strings.Contains(out, "next tick") {
		t.Fatalf("qrun schedules --help:\n%s", out)
	}
}
