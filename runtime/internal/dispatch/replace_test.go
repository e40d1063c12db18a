package dispatch_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// versioned is a fake instance of a swappable plugin: it belongs to a
// version, and Acquire fails once that version is no longer current.
type versioned struct {
	version int64
	current *atomic.Int64
	closed  atomic.Bool
	onV2    *atomic.Int64 // deliveries handled by version 2
}

func (v *versioned) Acquire() bool { return v.version == v.current.Load() && !v.closed.Load() }

func (v *versioned) Handle(_ context.Context, d *engines.Delivery, _ time.Time) plugin.Result {
	if v.closed.Load() {
		return plugin.Result{Verdict: engines.Nack, Err: plugin.ErrBroken}
	}
	if v.version == 2 {
		v.onV2.Add(1)
	}
	return plugin.Result{Verdict: engines.Ack}
}

func (v *versioned) Broken() bool { return false }

func (v *versioned) Close(context.Context) error { v.closed.Store(true); return nil }

// After a swap, a worker replaces its instance before the next delivery:
// every delivery after the swap runs on the new version, none fails.
func TestWorkerReplacesInstanceOfSwappedVersion(t *testing.T) {
	t.Parallel()
	var current atomic.Int64
	current.Store(1)
	var made, onV2 atomic.Int64
	fx := newFixture(t, nil, func(c *dispatch.Config) {
		c.Concurrency = 1
		c.NewInstance = func(context.Context) (dispatch.Instance, error) {
			made.Add(1)
			return &versioned{version: current.Load(), current: &current, onV2: &onV2}, nil
		}
	})
	fx.c.Start()
	fx.send(t, "before")
	s := fx.next(t)
	if s.verdict != engines.Ack {
		t.Fatalf("before the swap: %v", s.verdict)
	}
	current.Store(2)
	fx.send(t, "after-1", "after-2")
	for range 2 {
		if s := fx.next(t); s.verdict != engines.Ack {
			t.Fatalf("after the swap: %s %v", s.body, s.verdict)
		}
	}
	st := fx.c.Stats()
	if st.Nacked != 0 || st.Traps != 0 || st.InstanceErrors != 0 {
		t.Fatalf("failures across the swap: %+v", st)
	}
	if onV2.Load() != 2 {
		t.Fatalf("%d deliveries after the swap ran on the new version, want 2", onV2.Load())
	}
	if made.Load() != 2 {
		t.Fatalf("%d instances made, want 2 (one per version)", made.Load())
	}
}
