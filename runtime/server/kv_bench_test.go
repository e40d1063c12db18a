package server_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qrun-dev/qrun/runtime/server"
)

// BenchmarkEndToEndKV is issue 16's performance target: on disk and on
// postgres, a handler that publishes one message and increments one key
// per delivery, transactionally (both applied with the ack, in the ack's
// transaction), against a handler that only acks, in the same run and
// with the same consumer settings. The tx rate is to be at least half the
// ack rate. The tx handler is runtime/server/testdata/exactly_once.wat
// with chaos = "off": it increments id:<message id> (so deliveries do not
// conflict) with kv_add, which reads nothing, and publishes the id to a
// queue of the same engine; tx-incr is the same handler incrementing with
// kv_incr, which returns the sum and so reads the key first (a round trip
// per delivery on postgres). The ack handler is the WAT forward example
// without forward_to.
func BenchmarkEndToEndKV(b *testing.B) {
	txWasm, err := filepath.Abs("testdata/exactly_once.wasm")
	if err != nil {
		b.Fatal(err)
	}
	engines := []struct {
		name  string
		block func(b *testing.B) string
	}{
		{"disk", func(*testing.B) string { return `engine "e" { type = "disk" }` }},
		{"postgres", func(b *testing.B) string {
			return postgresEngine(b, "e")
		}},
	}
	for _, e := range engines {
		for _, h := range []string{"ack", "tx", "tx-incr"} {
			b.Run(e.name+"/handler="+h, func(b *testing.B) {
				plugin, extra := forwardWasm(b), ""
				count := map[string]string{"tx": "add", "tx-incr": "incr"}[h]
				if count != "" {
					plugin, extra = txWasm, fmt.Sprintf(`
  config  = { chaos = "off", count = %q }
  publish = ["out"]
  kv      = ["counts"]`, count)
				}
				cfg := parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
%s
queue "in"  { engine = "e" }
queue "out" { engine = "e" }
kv "counts" { engine = "e" }
consumer "c" {
  queue       = "in"
  plugin      = %q
  concurrency = 4
  batch       = 256%s
}`, e.block(b), plugin, extra))
				obs := newCounter(b.N)
				srv := start(b, cfg, server.Options{Observer: obs})
				runEndToEnd(b, srv, obs, 256)
			})
		}
	}
}
