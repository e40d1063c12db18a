package plugin

import (
	"strings"
	"testing"
	"time"
)

// TestMonoNow: the delivery start for HTTP deadlines carries a monotonic
// reading and orders with time.Now, so a deadline built from it compares
// as one built from time.Now would.
func TestMonoNow(t *testing.T) {
	before := time.Now()
	m := monoNow()
	after := time.Now()
	if m.Before(before) || after.Before(m) {
		t.Fatalf("monoNow %v outside [%v, %v]", m, before, after)
	}
	if !strings.Contains(m.String(), " m=") {
		t.Fatalf("monoNow %v has no monotonic reading", m)
	}
}
