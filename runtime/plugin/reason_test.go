package plugin

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/engines"
)

// Offsets in reason.wasm's memory (see reason.wat).
const (
	offReasonInit = 0x100
	offReasonRes  = 0x104
)

// TestSetReason: set_reason's text comes back in Result.Reason for nack and
// dead-letter verdicts, as given, and for nothing else (ABI.md section 4).
func TestSetReason(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "reason", Spec{}, nil)
	in := newInstance(t, p)
	if got := memI32(t, in, offReasonInit); got != abi.ErrNoMessage {
		t.Errorf("set_reason in qrun_init = %d, want %d", got, abi.ErrNoMessage)
	}
	long := strings.Repeat("a", MaxGuestReason-1) + "é" // the é straddles the cap
	for _, c := range []struct {
		body    string
		verdict engines.Verdict
		reason  string
		rc      int32
	}{
		{"3swebhook: 404 Not Found", engines.DeadLetter, "webhook: 404 Not Found", 0},
		{"1stry later", engines.Nack, "try later", 0},
		{"3Sreplaced", engines.DeadLetter, "replaced", 0},
		{"3n", engines.DeadLetter, "", 0}, // the last delivery's reason is gone
		{"0signored on ack", engines.Ack, "", 0},
		{"2signored on requeue", engines.Requeue, "", 0},
		{"3S", engines.DeadLetter, "", 0}, // empty clears
		{"3s" + long, engines.DeadLetter, long[:MaxGuestReason-1], 0},
		{"3s" + strings.Repeat("ü", 600), engines.DeadLetter, strings.Repeat("ü", 512), 0},
		{"3Sbad \xff utf-8", engines.DeadLetter, "init", abi.ErrInvalid}, // refused: the earlier reason stays
	} {
		r := mustHandle(t, in, delivery(c.body, nil))
		if r.Verdict != c.verdict || r.Reason != c.reason || memI32(t, in, offReasonRes) != c.rc {
			t.Errorf("%.20q: verdict %v reason %.30q rc %d, want %v %.30q %d",
				c.body, r.Verdict, r.Reason, memI32(t, in, offReasonRes), c.verdict, c.reason, c.rc)
		}
	}
}

// TestSetReasonFailure: a delivery that fails after set_reason reports the
// failure, not the reason, and an out-of-range reason traps like any other
// host function's.
func TestSetReasonFailure(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "reason", Spec{}, nil)
	r := newInstance(t, p).Handle(context.Background(), delivery("1tbefore the trap", nil), time.Now())
	if !errors.Is(r.Err, ErrTrap) || r.Reason != "" {
		t.Errorf("trap after set_reason: %+v, want ErrTrap and no reason", r)
	}
	r = newInstance(t, p).Handle(context.Background(), delivery("3b", nil), time.Now())
	var pe *PointerError
	if !errors.As(r.Err, &pe) || pe.Func != abi.FuncSetReason || r.Reason != "" {
		t.Errorf("out-of-range set_reason: %+v, want a PointerError", r)
	}
}

// TestSetReasonAddsNoAllocations: a handler that sets a reason on every
// delivery costs no allocation per delivery unless the reason is used.
func TestSetReasonAddsNoAllocations(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "reason", Spec{}, nil)
	in := newInstance(t, p)
	d := delivery("0sa reason an ack ignores", nil)
	ctx := context.Background()
	start := time.Now()
	in.Handle(ctx, d, start) // first call allocates the body region and the reason buffer
	if n := testing.AllocsPerRun(1000, func() { in.Handle(ctx, d, start) }); n != 0 {
		t.Errorf("Handle with set_reason and ack allocates %.1f per call, want 0", n)
	}
}
