package plugin

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/config"
)

// The instrumentation (package interrupt) through qrun: what a runaway guest
// costs is one timeout and one instance. No test here asserts an upper bound
// on time, which a loaded machine could break; a guest that is not stopped
// hangs the test, which fails it. BenchmarkLoopGuest measures the cost.

func handleRunaway(t *testing.T, s Spec, body string) (Result, time.Duration, *Instance) {
	t.Helper()
	h := newTestHost(t, nil)
	p := load(t, h, "runaway", s, nil)
	in := newInstance(t, p)
	start := time.Now()
	r := in.Handle(context.Background(), delivery(body, nil), time.Now())
	return r, time.Since(start), in
}

// TestRunawayIsStopped: a loop with no calls and no memory writes, which a
// compiler could most easily run without re-reading the stop flag, and a
// guest sleeping an hour in WASI poll_oneoff, are each stopped with a
// timeout error, not before their timeout, and their instance is broken.
func TestRunawayIsStopped(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"tight loop", "t"},
		{"sleep", "s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = 50 * time.Millisecond
			r, elapsed, in := handleRunaway(t, Spec{Timeout: timeout}, tc.body)
			if !errors.Is(r.Err, ErrTimeout) || r.Verdict != engines.Nack {
				t.Fatalf("got %+v, want ErrTimeout", r)
			}
			if elapsed < timeout {
				t.Fatalf("stopped after %v, before the timeout %v", elapsed, timeout)
			}
			if !in.Broken() {
				t.Fatal("stopped instance not broken")
			}
		})
	}
}

// TestCloseStopsSleep: closing an instance ends a sleep in progress too.
func TestCloseStopsSleep(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "runaway", Spec{Timeout: time.Hour}, nil)
	in := newInstance(t, p)
	done := make(chan Result, 1)
	go func() { done <- in.Handle(context.Background(), delivery("s", nil), time.Now()) }()
	// Close once the call runs (seq is odd): whether the guest is asleep
	// by then or gets there after, the sleep ends.
	for in.seq.Load()&1 == 0 {
		runtime.Gosched()
	}
	_ = in.Close(context.Background())
	if r := <-done; !errors.Is(r.Err, ErrTrap) {
		t.Fatalf("got %+v, want ErrTrap", r)
	}
}

// TestRecursionIsBounded: recursion without end traps with ErrCallDepth at
// the bound (the default here) instead of growing the stack to wazero's
// 400 MB ceiling, and the instance is replaced.
func TestRecursionIsBounded(t *testing.T) {
	r, _, in := handleRunaway(t, Spec{}, "r")
	if !errors.Is(r.Err, ErrCallDepth) || !errors.Is(r.Err, ErrTrap) {
		t.Fatalf("got %+v, want ErrCallDepth", r)
	}
	if !in.Broken() {
		t.Fatal("instance not broken")
	}
}

// TestMaxCallDepth: the bound is per consumer. 5000 nested calls are fine
// under the default and refused under a bound of 1000.
func TestMaxCallDepth(t *testing.T) {
	if r, _, _ := handleRunaway(t, Spec{}, "d"); r.Err != nil || r.Verdict != engines.Ack {
		t.Fatalf("default bound: %+v", r)
	}
	if r, _, _ := handleRunaway(t, Spec{MaxCallDepth: 1000}, "d"); !errors.Is(r.Err, ErrCallDepth) {
		t.Fatalf("bound 1000: got %+v, want ErrCallDepth", r)
	}
}

// TestLoopGuestCompletes: the counting loop of BenchmarkLoopGuest runs to
// its verdict under the instrumentation.
func TestLoopGuestCompletes(t *testing.T) {
	if r, _, _ := handleRunaway(t, Spec{}, "c"); r.Err != nil || r.Verdict != engines.Ack {
		t.Fatalf("got %+v", r)
	}
}

// TestDefaultMaxCallDepthMatchesConfig: the plugin host's default is the
// one the config documents.
func TestDefaultMaxCallDepthMatchesConfig(t *testing.T) {
	if DefaultMaxCallDepth != config.DefaultMaxCallDepth {
		t.Fatalf("plugin default %d, config default %d", DefaultMaxCallDepth, config.DefaultMaxCallDepth)
	}
}

// blockingPublisher waits for its context, as a stuck engine would.
type blockingPublisher struct{}

func (blockingPublisher) Publish(ctx context.Context, _ string, _ engines.Message) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestBlockedHostCallIsStopped: a guest waiting in a host function (here
// publish, on an engine that never answers) gets its answer when its time is
// up, and the instance is replaced.
func TestBlockedHostCallIsStopped(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{Timeout: 50 * time.Millisecond, Publish: []string{"out"}}, blockingPublisher{})
	in := newInstance(t, p)
	r := in.Handle(context.Background(), delivery("pout", nil), time.Now())
	if r.Verdict == engines.Ack || !in.Broken() {
		t.Fatalf("got %+v (broken %v), want a failed publish and a broken instance", r, in.Broken())
	}
}

// TestCheckReportsUnstoppable: `qrun plugin check` names what the
// instrumentation refuses.
func TestCheckReportsUnstoppable(t *testing.T) {
	b, err := os.ReadFile("../internal/interrupt/testdata/reserved_export.wasm")
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := Check(context.Background(), b)
	for _, p := range rep.Problems {
		if strings.Contains(p, "cannot be made stoppable") && strings.Contains(p, "qrun:stop") {
			return
		}
	}
	t.Fatalf("problems %q do not name the reserved export", rep.Problems)
}
