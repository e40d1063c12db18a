package dispatch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// startRecorder is an instance that reports the start each delivery is
// handed.
type startRecorder struct {
	fakeInstance
	starts chan time.Time
}

func (s *startRecorder) Handle(_ context.Context, _ *engines.Delivery, start time.Time) plugin.Result {
	s.starts <- start
	return plugin.Result{Verdict: engines.Ack}
}

// TestHandleGetsTheDeliveryStart: the worker hands Handle the clock reading
// it took for the delivery (the instance bounds HTTP requests by it instead
// of reading the clock again), monotonic, and taken before the call.
func TestHandleGetsTheDeliveryStart(t *testing.T) {
	starts := make(chan time.Time, 1)
	var fx *fixture
	fx = newFixture(t, byBody, func(c *dispatch.Config) {
		c.Concurrency = 1
		c.NewInstance = func(context.Context) (dispatch.Instance, error) {
			return &startRecorder{fakeInstance: fakeInstance{closes: &fx.closes}, starts: starts}, nil
		}
	})
	before := time.Now()
	fx.send(t, "ack")
	fx.c.Start()
	var start time.Time
	select {
	case start = <-starts:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery handled within 10s")
	}
	after := time.Now()
	if start.Before(before) || after.Before(start) {
		t.Fatalf("start %v outside [%v, %v]", start, before, after)
	}
	if !strings.Contains(start.String(), " m=") {
		t.Fatalf("start %v has no monotonic reading", start)
	}
}
