// Package enginetest is the conformance suite every qrun engine must pass.
// An engine's own tests call Run with a Harness that builds engines; each
// subtest skips only when the engine's Capabilities declare the feature it
// needs absent, and says which capability it skipped for.
//
// Timing rules the suite keeps so it is not flaky on a loaded two-core
// machine: it never sleeps to wait for something it can observe (a blocking
// Receive is the event), it proves "not before" by recording times, it bounds
// "eventually" only by generous context deadlines, and it uses short
// (50-200ms) delays, leases and TTLs.
//
// A Harness with a Restart also runs the restart and crash cases: engines
// started one after another on the same storage, and, for an engine that
// declares itself Durable, a child process (this test binary, run by
// Child) killed with SIGKILL in the middle of its work.
package enginetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Harness builds engines for the suite.
type Harness struct {
	// New returns a new engine. Each test calls it once and closes the engine
	// at the end (t.Cleanup). Tests use unique queue names so a durable engine
	// may share storage.
	New func(t testing.TB) engines.Engine
	// Restart, when set, starts engines on storage that outlives them, for
	// the restart and crash cases; without it those cases skip.
	Restart *Restart
	// Waiting, when set, reports how many receivers are blocked on q
	// waiting for a message; one whose context ended may be counted until
	// the next wake-up, as the suite counts up from a reading taken before
	// it starts a receiver. The cases that test waking a blocked receiver
	// wait for it, so they test the blocking path every run; without it
	// they give the receiver a moment and test whichever path it took.
	Waiting func(q engines.Queue) int
}

// Timeouts used throughout. wait bounds anything that should happen "soon";
// it is generous because only its expiry fails a test, never its length.
const (
	wait = 10 * time.Second
	// quiet is how long a receive must stay empty to show that nothing is
	// deliverable. Only a too-short quiet period can hide a bug, never cause
	// a false failure.
	quiet = 200 * time.Millisecond
	// clockSlack tolerates engines whose clock is elsewhere (a database
	// server) when checking that something did not happen before a
	// deadline. It is far below every delay the suite uses, so an engine that
	// ignores a delay still fails.
	clockSlack = 5 * time.Millisecond
)

type subtest struct {
	name string
	fn   func(t *testing.T, x *env)
}

// Run runs every conformance test as a parallel subtest of t. Each subtest
// builds its own engine, so they cannot interfere.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("enginetest: Harness.New is nil")
	}
	for _, st := range slices.Concat(subtests(), opsSubtests(), kvSubtests()) {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			st.fn(t, setup(t, h))
		})
	}
	for _, st := range append(restartSubtests(), kvRestartSubtests()...) {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			st.fn(t, newStorage(t, h))
		})
	}
}

// env is one subtest's engine and helpers.
type env struct {
	t       *testing.T
	e       engines.Engine
	caps    engines.Capabilities
	waiting func(engines.Queue) int // Harness.Waiting
}

func setup(t *testing.T, h Harness) *env {
	e := h.New(t)
	if e == nil {
		t.Fatal("enginetest: Harness.New returned nil")
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil && !errors.Is(err, engines.ErrClosed) {
			t.Errorf("closing engine: %v", err)
		}
	})
	return &env{t: t, e: e, caps: e.Capabilities(), waiting: h.Waiting}
}

// need skips the test when the engine declares a capability absent.
func (x *env) need(have bool, capability string) {
	x.t.Helper()
	if !have {
		x.t.Skipf("engine declares capability %s absent", capability)
	}
}

// ctx returns a context that ends after d or with the test.
func (x *env) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	x.t.Cleanup(cancel)
	return ctx
}

// runTag distinguishes this process's queues from those of earlier runs in a
// durable engine's shared storage.
var (
	runTag  = fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	nameSeq atomic.Uint64
)

// name returns a queue name unique to this run, built only of characters
// every engine can store ([a-z0-9_]), short enough for the tightest limits.
func (x *env) name() string {
	base := x.t.Name()
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	var b strings.Builder
	for _, c := range strings.ToLower(base) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= 20 {
			break
		}
	}
	return fmt.Sprintf("qt_%s_%s_%d", runTag, b.String(), nameSeq.Add(1))
}

// open opens a queue, naming it uniquely when spec.Name is empty, and closes
// the handle with the test.
func (x *env) open(spec engines.QueueSpec) engines.Queue {
	x.t.Helper()
	if spec.Name == "" {
		spec.Name = x.name()
	}
	q, err := x.e.Open(x.ctx(wait), spec)
	if err != nil {
		x.t.Fatalf("Open(%+v): %v", spec, err)
	}
	if q == nil {
		x.t.Fatalf("Open(%+v) returned a nil queue", spec)
	}
	x.t.Cleanup(func() { _ = q.Close() })
	return q
}

// enqueue enqueues msgs and returns them with the IDs the engine wrote back.
func (x *env) enqueue(q engines.Queue, msgs ...engines.Message) []engines.Message {
	x.t.Helper()
	if err := q.Enqueue(x.ctx(wait), msgs...); err != nil {
		x.t.Fatalf("Enqueue(%d messages) to %s: %v", len(msgs), q.Name(), err)
	}
	for i := range msgs {
		if msgs[i].ID == "" {
			x.t.Fatalf("Enqueue did not write an ID back into message %d", i)
		}
	}
	return msgs
}

// receive calls Receive once and checks the parts of its contract that hold
// for every call: never more than max, never empty without an error.
func (x *env) receive(ctx context.Context, q engines.Queue, max int) ([]engines.Delivery, error) {
	x.t.Helper()
	ds, err := engines.ReceiveN(ctx, q, max)
	if err != nil {
		if len(ds) > 0 {
			x.t.Errorf("Receive returned %d deliveries together with error %v", len(ds), err)
		}
		return nil, err
	}
	if len(ds) == 0 {
		x.t.Fatalf("Receive returned no deliveries and no error; it must block until one is available")
	}
	if len(ds) > max {
		x.t.Fatalf("Receive(max=%d) returned %d deliveries", max, len(ds))
	}
	return ds, nil
}

// receiveOne receives exactly one delivery within d.
func (x *env) receiveOne(q engines.Queue, d time.Duration) engines.Delivery {
	x.t.Helper()
	ds, err := x.receive(x.ctx(d), q, 1)
	if err != nil {
		x.t.Fatalf("Receive from %s: %v", q.Name(), err)
	}
	return ds[0]
}

// receiveN receives until it holds exactly n deliveries, asking for no more
// than are still missing.
func (x *env) receiveN(q engines.Queue, n int, d time.Duration) []engines.Delivery {
	x.t.Helper()
	ctx := x.ctx(d)
	var got []engines.Delivery
	for len(got) < n {
		ds, err := x.receive(ctx, q, n-len(got))
		if err != nil {
			x.t.Fatalf("Receive from %s after %d of %d deliveries: %v", q.Name(), len(got), n, err)
		}
		got = append(got, ds...)
	}
	return got
}

// expectNone asserts that nothing is deliverable for the quiet period.
func (x *env) expectNone(q engines.Queue, why string) {
	x.t.Helper()
	ds, err := x.receive(x.ctx(quiet), q, 10)
	if err == nil {
		x.t.Fatalf("%s: received %d unexpected deliveries, first %q (body %q)", why, len(ds), ds[0].ID, ds[0].Body)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		x.t.Fatalf("%s: Receive on an empty queue returned %v, want context.DeadlineExceeded", why, err)
	}
}

func (x *env) ack(d engines.Delivery) {
	x.t.Helper()
	if err := d.Ack(x.ctx(wait)); err != nil {
		x.t.Fatalf("Ack %s (attempt %d): %v", d.ID, d.Attempt, err)
	}
}

func (x *env) ackAll(ds []engines.Delivery) {
	x.t.Helper()
	for _, d := range ds {
		x.ack(d)
	}
}

func (x *env) stats(q engines.Queue) engines.Stats {
	x.t.Helper()
	s, err := q.Stats(x.ctx(wait))
	if err != nil {
		x.t.Fatalf("Stats of %s: %v", q.Name(), err)
	}
	return s
}

// wantErr fails unless err wraps target.
func (x *env) wantErr(err, target error, what string) {
	x.t.Helper()
	if !errors.Is(err, target) {
		x.t.Fatalf("%s: got error %v, want one wrapping %v", what, err, target)
	}
}

// notBefore fails if at is earlier than earliest, allowing clockSlack.
func (x *env) notBefore(at, earliest time.Time, what string) {
	x.t.Helper()
	if at.Before(earliest.Add(-clockSlack)) {
		x.t.Fatalf("%s at %v, %v before it was due", what, at.Format(time.StampMicro), earliest.Sub(at))
	}
}

// result carries a Receive made in another goroutine back to the test.
type result struct {
	ds  []engines.Delivery
	err error
	at  time.Time
}

// receiveAsync starts a Receive in a goroutine. started is closed just before
// Receive is called.
func receiveAsync(ctx context.Context, q engines.Queue, max int) (started chan struct{}, done chan result) {
	started = make(chan struct{})
	done = make(chan result, 1)
	go func() {
		close(started)
		ds, err := engines.ReceiveN(ctx, q, max)
		done <- result{ds: ds, err: err, at: time.Now()}
	}()
	return started, done
}

// await returns the goroutine's result or fails when it does not come.
func (x *env) await(done chan result, what string) result {
	x.t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(wait):
		x.t.Fatalf("%s: Receive did not return within %v", what, wait)
		return result{}
	}
}

// blocked is the number of receivers blocked on q by Harness.Waiting, 0
// without it. Taken before starting a receiver, it is the base letBlock
// counts from: a receiver whose context ended may still be counted.
func (x *env) blocked(q engines.Queue) int {
	if x.waiting == nil {
		return 0
	}
	return x.waiting(q)
}

// letBlock returns once n receivers on q are blocked, when the harness can
// tell (Harness.Waiting): it polls that count, the deadline only bounding a
// hang. An engine that cannot tell gets a best-effort pause that makes the
// blocking path the one usually exercised; every assertion after letBlock
// holds whether or not the receivers got there first, so the pause only
// steers coverage and never decides a result.
func (x *env) letBlock(q engines.Queue, n int) {
	x.t.Helper()
	if x.waiting == nil {
		time.Sleep(50 * time.Millisecond)
		return
	}
	deadline := time.Now().Add(wait)
	for x.waiting(q) < n {
		if time.Now().After(deadline) {
			x.t.Fatalf("%s: %d receivers blocked after %v, want %d", q.Name(), x.waiting(q), wait, n)
		}
		time.Sleep(time.Millisecond)
	}
}
