package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestHostilePluginIsContained runs a consumer whose plugin traps, loops
// forever, exhausts its memory and returns a bad verdict, next to a healthy
// consumer. Every hostile message must end in the dead-letter queue after
// max_attempts (never lost, never retried forever), and the healthy consumer
// must handle everything it is sent meanwhile.
func TestHostilePluginIsContained(t *testing.T) {
	t.Parallel()
	hostile, err := filepath.Abs("../plugin/testdata/ok.wasm")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "bad" {
  engine       = "m"
  max_attempts = 2
  dead_letter  = "bad_dead"
  retry {
    initial = "1ms"
    max     = "5ms"
  }
}
queue "bad_dead" { engine = "m" }
queue "good"     { engine = "m" }
queue "good_out" { engine = "m" }
consumer "hostile" {
  queue        = "bad"
  plugin       = %q
  concurrency  = 2
  # Long enough that only the infinite loop reaches it, even on a loaded
  # machine: a slow trap must still count as a trap.
  timeout      = "1s"
  memory_limit = "1MiB"
}
consumer "healthy" {
  queue   = "good"
  plugin  = %q
  config  = { forward_to = "good_out" }
  publish = ["good_out"]
}`, hostile, forwardWasm(t)))
	srv := start(t, cfg, server.Options{})
	ctx := context.Background()

	// trap, infinite loop, memory bomb, bad verdict, WASI proc_exit.
	bad := []string{"t", "l", "m", "x", "X"}
	msgs := make([]engines.Message, len(bad))
	for i, b := range bad {
		msgs[i].Body = []byte(b)
	}
	if err := srv.Enqueue(ctx, "bad", msgs); err != nil {
		t.Fatal(err)
	}
	const n = 500
	good := make([]engines.Message, n)
	for i := range good {
		good[i].Body = []byte(fmt.Sprintf("good %d", i))
	}
	if err := srv.Enqueue(ctx, "good", good); err != nil {
		t.Fatal(err)
	}

	waitDepths(t, srv, 30*time.Second, map[string]int64{"bad_dead": int64(len(bad)), "good_out": n, "bad": 0, "good": 0})

	var st = map[string]int64{}
	for _, c := range srv.Consumers() {
		s := c.Stats()
		st[c.Name()+".traps"] = s.Traps
		st[c.Name()+".timeouts"] = s.Timeouts
		st[c.Name()+".bad_verdicts"] = s.BadVerdicts
		st[c.Name()+".acked"] = s.Acked
	}
	// Each hostile message failed max_attempts (2) times.
	want := map[string]int64{
		"hostile.traps": 6, "hostile.timeouts": 2, "hostile.bad_verdicts": 2, "hostile.acked": 0,
		"healthy.traps": 0, "healthy.timeouts": 0, "healthy.bad_verdicts": 0, "healthy.acked": n,
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, st[k], v, st)
		}
	}
	// Dead letters say why.
	dead, err := srv.Queue("bad_dead")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, dead, len(bad))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if r := d.Attributes[engines.AttrDeadLetterReason]; !strings.Contains(r, "max attempts") {
			t.Errorf("dead letter %q has reason %q", d.Body, r)
		}
	}
}
