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
	srv := start(t, cfg, server.Options{})
	ctx := context.Background()

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
	waitDepths(t, srv, 5*time.Minute, map[string]int64{"in": 0, "dead": wantDead})
	st := srv.Consumers()[0].Stats()
	if st.Acked != wantAck || st.Traps != 3*(wantDead/3) {
		t.Fatalf("consumer stats %+v, want %d acked and %d traps", st, wantAck, 3*(wantDead/3))
	}
}
