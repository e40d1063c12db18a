package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestSoakMixedVerdicts pushes a long stream of messages with every kind of
// outcome through one consumer and checks the books balance exactly: each
// message is acked once or dead-lettered once, none is lost or left behind.
// It is long, so `make test` (-short) skips it; `make soak` runs it.
func TestSoakMixedVerdicts(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: run with `make soak`")
	}
	mod, err := filepath.Abs("../plugin/testdata/ok.wasm")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" {
  engine       = "m"
  max_attempts = 3
  dead_letter  = "dead"
  retry {
    initial = "1ms"
    max     = "2ms"
  }
}
queue "dead" { engine = "m" }
consumer "mixed" {
  queue       = "in"
  plugin      = %q
  concurrency = 2
  timeout     = "1s"
  batch       = 128
}`, mod))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx) }()

	// ack, nack until dead, dead-letter now, trap until dead.
	kinds := []string{"0", "1", "3", "t"}
	const n = 200_000
	const batch = 1000
	var wantAck, wantDead int64
	for sent := 0; sent < n; sent += batch {
		msgs := make([]engines.Message, batch)
		for i := range msgs {
			k := kinds[(sent+i)%len(kinds)]
			msgs[i].Body = []byte(k)
			if k == "0" {
				wantAck++
			} else {
				wantDead++
			}
		}
		if err := srv.Enqueue(ctx, "in", msgs); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		d := depths(t, srv)
		if d["in"] == 0 && d["dead"] == wantDead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not done within 5 minutes: %v", d)
		}
		time.Sleep(50 * time.Millisecond) // polling counters: no event for "all settled"
	}
	st := srv.Consumers()[0].Stats()
	if st.Acked != wantAck || st.Traps != 3*(wantDead/3) {
		t.Fatalf("consumer stats %+v, want %d acked and %d traps", st, wantAck, 3*(wantDead/3))
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
}
