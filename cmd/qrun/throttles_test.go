package main

import (
	"strings"
	"testing"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// A limit or cap global across nodes says so in `qrun consumers`.
func TestPrintThrottlesScope(t *testing.T) {
	var b strings.Builder
	printThrottles(&b, []admin.ConsumerInfo{{Name: "sync", Throttle: &admin.ThrottleInfo{
		RateLimit: "10/s", Burst: 10, RateLimitScope: "global",
		MaxInFlightPerKey: 2, ConcurrencyKey: "account", ConcurrencyScope: "global",
	}}})
	want := "throttle of sync: rate 10/s burst 10 across nodes, 2 in flight per account across nodes; waiting 0"
	if !strings.HasPrefix(b.String(), want) {
		t.Fatalf("got %q, want it to start with %q", b.String(), want)
	}
}
