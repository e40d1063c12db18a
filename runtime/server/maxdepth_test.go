package server

import (
	"testing"

	"github.com/qrun-dev/qrun/runtime/config"
)

// TestReloadSeesCallDepth: a reload that changes only max_call_depth
// rebuilds the consumer, so the new bound applies.
func TestReloadSeesCallDepth(t *testing.T) {
	a := &config.Consumer{Queue: "q", Plugin: "p.wasm", MaxCallDepth: 10000}
	b := *a
	if !sameConsumer(a, &b) {
		t.Fatal("identical consumers differ")
	}
	b.MaxCallDepth = 500
	if sameConsumer(a, &b) {
		t.Fatal("a change of max_call_depth went unnoticed")
	}
}
