package server_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/server"
)

// kvScript builds a body for the plugin host's kv.wat test module (see
// runtime/plugin/testdata/kv.wat): a sequence of commands.
type kvScript []byte

func (s kvScript) cmd(op byte, store, key string, val []byte) kvScript {
	s = append(s, op, byte(len(store)), byte(len(key)), byte(len(val)))
	s = append(s, store...)
	s = append(s, key...)
	return append(s, val...)
}

func kvWasm(tb testing.TB) string {
	tb.Helper()
	p, err := filepath.Abs("../plugin/testdata/kv.wasm")
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestKVEffectsCommitWithAck runs deliveries that increment one shared
// counter and publish, four at a time, on the memory engine: acked ones
// count and publish exactly once (concurrent increments conflict at commit
// and are redelivered, never lost), and a delivery that traps after its
// increment and publish leaves neither behind.
func TestKVEffectsCommitWithAck(t *testing.T) {
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "mem" { type = "memory" }
queue "in" {
  engine       = "mem"
  max_attempts = 1
  dead_letter  = "dead"
  retry { initial = "1ms" }
}
queue "dead" { engine = "mem" }
queue "out"  { engine = "mem" }
kv "counts" { engine = "mem" }
consumer "c" {
  queue       = "in"
  plugin      = %q
  concurrency = 4
  batch       = 1
  publish     = ["out"]
  kv          = ["counts"]
}
`, kvWasm(t)))
	ln := listen(t)
	srv := start(t, cfg, server.Options{Listener: ln})
	ctx := context.Background()
	one := binary.LittleEndian.AppendUint64(nil, 1)
	const n = 40
	var msgs []engines.Message
	for i := range n {
		msgs = append(msgs, engines.Message{Body: kvScript(nil).
			cmd('i', "counts", "total", one).
			cmd('p', "out", "", []byte(fmt.Sprint(i)))})
	}
	msgs = append(msgs, engines.Message{Body: kvScript(nil).
		cmd('i', "counts", "total", one).
		cmd('p', "out", "", []byte("trapped")).
		cmd('X', "", "", nil)})
	if err := srv.Enqueue(ctx, "in", msgs); err != nil {
		t.Fatal(err)
	}
	waitDepths(t, srv, 30*time.Second, map[string]int64{"in": 0, "out": n, "dead": 1})
	kv, err := srv.KV(ctx, "counts")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, []byte("total"))
	if err != nil || string(e.Value) != fmt.Sprint(n) {
		t.Fatalf("total = %q (%v), want %d", e.Value, err, n)
	}
	// Every handled delivery made one kv_incr: 40 acked, 1 trapped, and
	// one more per conflict at commit, which the store counts too.
	conflicts := srv.Consumers()[0].Stats().Conflicts
	mfs := scrape(t, "http://"+ln.Addr().String(), "")
	store := map[string]string{"store": "counts", "engine": "mem"}
	if got := value(t, mfs, "qrun_kv_operations_total", store); got != float64(n+1+conflicts) {
		t.Errorf("qrun_kv_operations_total = %v, want %d", got, n+1+conflicts)
	}
	if got := value(t, mfs, "qrun_kv_conflicts_total", store); got != float64(conflicts) {
		t.Errorf("qrun_kv_conflicts_total = %v, want %d", got, conflicts)
	}
	if got := value(t, mfs, "qrun_kv_commit_errors_total", store); got != 0 {
		t.Errorf("qrun_kv_commit_errors_total = %v, want 0", got)
	}
	if _, err := srv.KV(ctx, "nope"); err == nil {
		t.Error("KV of an undeclared store succeeded")
	}
}
