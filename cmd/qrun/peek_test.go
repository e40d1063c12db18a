package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// TestPeekCommand streams a queue larger than one API page with
// `qrun peek --all --json`, shows the first messages without --all, and
// shows a message in flight only with --in-flight.
func TestPeekCommand(t *testing.T) {
	t.Parallel()
	srv := startQrun(t, "", `drain_timeout = "1s"`, fmt.Sprintf(`
engine "m" { type = "memory" }
queue "big" { engine = "m" }
queue "busy" {
  engine             = "m"
  visibility_timeout = "10m"
}
consumer "stuck" {
  queue       = "busy"
  plugin      = %q
  concurrency = 1
  batch       = 1
  timeout     = "1m"
}
`, repoPath(t, "runtime/plugin/testdata/log_loop.wasm")))
	addr, c := srv.addr, srv.c
	ctx := context.Background()

	const n = admin.MaxPeekLimit*2 + 345 // three pages
	msgs := make([]admin.SendMessage, n)
	for i := range msgs {
		msgs[i].Body = fmt.Sprintf("m%d", i)
	}
	if _, err := c.Send(ctx, "big", admin.SendRequest{Messages: msgs}); err != nil {
		t.Fatal(err)
	}

	lines := func(args ...string) []admin.MessageInfo {
		t.Helper()
		out, errOut, code := qrunRun(t, nil, append([]string{"peek", "--addr", addr}, args...)...)
		if code != 0 {
			t.Fatalf("qrun peek %v: exit %d\n%s", args, code, errOut)
		}
		var ms []admin.MessageInfo
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l == "" {
				continue
			}
			var m admin.MessageInfo
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("qrun peek %v: line %q is not a message: %v", args, l, err)
			}
			ms = append(ms, m)
		}
		return ms
	}
	all := lines("big", "--all", "--json")
	if len(all) != n {
		t.Fatalf("peek --all printed %d messages, want %d", len(all), n)
	}
	seen := map[string]bool{}
	for i, m := range all {
		if seen[m.ID] || m.State != "ready" || m.Body != fmt.Sprintf("m%d", i) {
			t.Fatalf("message %d: %+v (duplicate: %v); want m%d, ready, once each in enqueue order", i, m, seen[m.ID], i)
		}
		seen[m.ID] = true
	}
	if first := lines("big", "--json", "-n", "7"); len(first) != 7 || first[6].Body != "m6" {
		t.Fatalf("peek -n 7 printed %d messages, want the first 7", len(first))
	}
	out, _, code := qrunRun(t, nil, "peek", "big", "--addr", addr, "-n", "2")
	if code != 0 || !strings.Contains(out, "ready  attempt 0") || !strings.Contains(out, "body (2 B): m1") {
		t.Fatalf("peek as text: exit %d\n%s", code, out)
	}
	if _, errOut, code := qrunRun(t, nil, "peek", "--addr", addr); code != 2 || !strings.Contains(errOut, "one QUEUE") {
		t.Fatalf("peek without a queue: exit %d\n%s", code, errOut)
	}

	// Last, since it keeps a core busy until qrun is killed: the handler
	// logs, then loops until its minute is up, so the message stays in
	// flight.
	if _, err := c.Send(ctx, "busy", admin.SendRequest{SendMessage: admin.SendMessage{Body: "loop"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the busy message in flight", 30*time.Second, func() (bool, string) {
		info, err := c.Consumer(ctx, "stuck")
		return err == nil && info.InFlight == 1, fmt.Sprint(info, err)
	})
	if got := lines("busy", "--json"); len(got) != 0 {
		t.Fatalf("peek without --in-flight showed %+v", got)
	}
	if got := lines("busy", "--json", "--in-flight"); len(got) != 1 || got[0].State != "in_flight" || got[0].Body != "loop" {
		t.Fatalf("peek --in-flight showed %+v, want the looping message in_flight", got)
	}
}
