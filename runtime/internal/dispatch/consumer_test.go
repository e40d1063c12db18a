package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// script is a fake plugin: it maps a body to a result.
type script func(d *engines.Delivery) plugin.Result

type fakeInstance struct {
	f      script
	broken bool
	closed atomic.Bool
	closes *atomic.Int64
}

func (i *fakeInstance) Handle(_ context.Context, d *engines.Delivery, _ time.Time) plugin.Result {
	r := i.f(d)
	if r.Err != nil {
		i.broken = true
	}
	return r
}
func (i *fakeInstance) Broken() bool { return i.broken }
func (i *fakeInstance) Close(context.Context) error {
	if i.closed.CompareAndSwap(false, true) {
		i.closes.Add(1)
	}
	return nil
}

type fixture struct {
	eng     *memory.Engine
	q, dlq  engines.Queue
	c       *dispatch.Consumer
	created atomic.Int64
	closes  atomic.Int64
	settled chan settled
}

type settled struct {
	body    string
	verdict engines.Verdict
	attempt int
}

func (f *fixture) Settled(d *engines.Delivery, v engines.Verdict, _ time.Duration) {
	f.settled <- settled{string(d.Body), v, d.Attempt}
}

// newFixture builds a consumer running f on a memory queue; mod may change
// the consumer's config, and the queue's lease follows its VisibilityTimeout.
func newFixture(t *testing.T, f script, mod func(*dispatch.Config)) *fixture {
	t.Helper()
	return newFixtureOn(t, f, mod, nil)
}

// groupQueue is a memory queue that also implements engines.GroupSettler,
// so the dispatcher's started-then-waited verdict path runs against the
// reference semantics. Every settle is applied at once; Wait counts.
type groupQueue struct {
	engines.Queue
	started, waited atomic.Int64
}

func (g *groupQueue) StartSettle(ctx context.Context, d *engines.Delivery, s engines.Settlement) (engines.Pending, error) {
	if err := d.Settle(ctx, s); err != nil {
		return nil, err
	}
	g.started.Add(1)
	return (*groupPending)(g), nil
}

type groupPending groupQueue

func (p *groupPending) Wait(context.Context) error {
	p.waited.Add(1)
	return nil
}

// newFixtureOn is newFixture with the consumer's queue wrapped by wrap.
func newFixtureOn(t *testing.T, f script, mod func(*dispatch.Config), wrap func(engines.Queue) engines.Queue) *fixture {
	t.Helper()
	fx := &fixture{eng: memory.New(memory.Options{}), settled: make(chan settled, 1000)}
	cfg := dispatch.Config{
		Name: "c", Concurrency: 2, Batch: 8, VisibilityTimeout: 10 * time.Second,
		Retry: dispatch.RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, Multiplier: 2},
		NewInstance: func(context.Context) (dispatch.Instance, error) {
			fx.created.Add(1)
			return &fakeInstance{f: f, closes: &fx.closes}, nil
		},
		Observer: fx,
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx := context.Background()
	var err error
	fx.q, err = fx.eng.Open(ctx, engines.QueueSpec{Name: "q", MaxAttempts: 3, DeadLetter: "q-dlq", VisibilityTimeout: cfg.VisibilityTimeout})
	if err != nil {
		t.Fatal(err)
	}
	fx.dlq, err = fx.eng.Open(ctx, engines.QueueSpec{Name: "q-dlq"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Queue = fx.q
	if wrap != nil {
		cfg.Queue = wrap(fx.q)
	}
	fx.c, err = dispatch.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = fx.c.Stop(ctx)
		_ = fx.eng.Close()
	})
	return fx
}

func (f *fixture) send(t *testing.T, bodies ...string) {
	t.Helper()
	msgs := make([]engines.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = engines.Message{Body: []byte(b)}
	}
	if err := f.q.Enqueue(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) next(t *testing.T) settled {
	t.Helper()
	select {
	case s := <-f.settled:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery settled within 10s")
	}
	return settled{}
}

func receiveOne(t *testing.T, q engines.Queue) engines.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds, err := engines.ReceiveN(ctx, q, 1)
	if err != nil {
		t.Fatalf("receive from %s: %v", q.Name(), err)
	}
	return ds[0]
}

func byBody(d *engines.Delivery) plugin.Result {
	switch string(d.Body) {
	case "ack":
		return plugin.Result{Verdict: engines.Ack}
	case "nack":
		return plugin.Result{Verdict: engines.Nack}
	case "dead":
		return plugin.Result{Verdict: engines.DeadLetter}
	case "trap":
		return plugin.Result{Verdict: engines.Nack, Err: fmt.Errorf("%w: unreachable", plugin.ErrTrap)}
	case "timeout":
		return plugin.Result{Verdict: engines.Nack, Err: fmt.Errorf("%w: 5s", plugin.ErrTimeout)}
	case "requeue-once":
		if d.Attempt == 1 {
			return plugin.Result{Verdict: engines.Requeue, Delay: time.Millisecond, DelaySet: true}
		}
		return plugin.Result{Verdict: engines.Ack}
	}
	return plugin.Result{Verdict: engines.Nack, Err: errors.New("unexpected body")}
}

func TestVerdicts(t *testing.T) {
	t.Parallel()
	tests := []verdictCase{
		{"ack", []engines.Verdict{engines.Ack}, false, func(s dispatch.Stats) bool { return s.Acked == 1 }},
		{"nack", []engines.Verdict{engines.Nack, engines.Nack, engines.Nack}, true, func(s dispatch.Stats) bool { return s.Nacked == 3 }},
		{"dead", []engines.Verdict{engines.DeadLetter}, true, func(s dispatch.Stats) bool { return s.DeadLettered == 1 }},
		{"trap", []engines.Verdict{engines.Nack, engines.Nack, engines.Nack}, true, func(s dispatch.Stats) bool { return s.Traps == 3 }},
		{"timeout", []engines.Verdict{engines.Nack, engines.Nack, engines.Nack}, true, func(s dispatch.Stats) bool { return s.Timeouts == 3 }},
		{"requeue-once", []engines.Verdict{engines.Requeue, engines.Ack}, false, func(s dispatch.Stats) bool { return s.Requeued == 1 && s.Acked == 1 }},
	}
	modes := []struct {
		name string
		wrap func(engines.Queue) engines.Queue
	}{
		{"settle", nil},
		{"settle_batch", func(q engines.Queue) engines.Queue { return &groupQueue{Queue: q} }},
	}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.body, func(t *testing.T) {
				t.Parallel()
				testVerdict(t, newFixtureOn(t, byBody, nil, mode.wrap), tt)
			})
		}
	}
}

// verdictCase is one row of TestVerdicts.
type verdictCase struct {
	body string
	// want is the sequence of verdicts the consumer applies.
	want     []engines.Verdict
	inDLQ    bool
	counters func(dispatch.Stats) bool
}

func testVerdict(t *testing.T, fx *fixture, tt verdictCase) {
	fx.c.Start()
	fx.send(t, tt.body)
	// Two workers may report consecutive attempts in either order: the
	// engine can redeliver to one before the other has reported.
	got := make([]settled, len(tt.want))
	for i := range got {
		got[i] = fx.next(t)
	}
	slices.SortFunc(got, func(a, b settled) int { return a.attempt - b.attempt })
	for i, want := range tt.want {
		got := got[i]
		if got.verdict != want || got.attempt != i+1 {
			t.Fatalf("settlement %d: got %v at attempt %d, want %v at attempt %d", i, got.verdict, got.attempt, want, i+1)
		}
	}
	if tt.inDLQ {
		d := receiveOne(t, fx.dlq)
		if string(d.Body) != tt.body {
			t.Fatalf("DLQ holds %q, want %q", d.Body, tt.body)
		}
	}
	if st := fx.c.Stats(); !tt.counters(st) {
		t.Fatalf("unexpected counters %+v", st)
	}
}

// TestGroupSettlerWaitsForEveryVerdict checks that on a queue whose
// settles share commits every verdict is started and waited for before it
// is counted.
func TestGroupSettlerWaitsForEveryVerdict(t *testing.T) {
	t.Parallel()
	var gq *groupQueue
	fx := newFixtureOn(t, byBody, func(c *dispatch.Config) { c.Concurrency = 1 }, func(q engines.Queue) engines.Queue {
		gq = &groupQueue{Queue: q}
		return gq
	})
	const n = 50
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = "ack"
	}
	fx.send(t, bodies...)
	fx.c.Start()
	for range n {
		if got := fx.next(t); got.verdict != engines.Ack {
			t.Fatalf("verdict %v, want ack", got.verdict)
		}
	}
	if gq.started.Load() != n || gq.waited.Load() != n {
		t.Fatalf("StartSettle %d and Wait %d times, want %d each", gq.started.Load(), gq.waited.Load(), n)
	}
	if st := fx.c.Stats(); st.Acked != n {
		t.Fatalf("Acked = %d, want %d", st.Acked, n)
	}
}

func TestBrokenInstanceIsReplaced(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, byBody, func(c *dispatch.Config) { c.Concurrency = 1 })
	fx.c.Start()
	fx.send(t, "trap", "ack")
	seen := map[string]bool{}
	for len(seen) < 2 || !seen["ack"] {
		s := fx.next(t)
		seen[s.body] = true
	}
	// One instance to start, one after each of the trap's failures that
	// happened so far (at least one).
	if fx.created.Load() < 2 || fx.closes.Load() < 1 {
		t.Fatalf("created %d instances, closed %d: want the trapped one replaced", fx.created.Load(), fx.closes.Load())
	}
}

func TestPerMessageIsolation(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, byBody, func(c *dispatch.Config) { c.Concurrency = 1; c.PerMessage = true })
	fx.c.Start()
	fx.send(t, "ack", "ack", "ack")
	for range 3 {
		fx.next(t)
	}
	// Every delivery closes its instance; the worker makes the next one
	// before receiving again, so 3 deliveries need at least 3 instances.
	if got := fx.closes.Load(); got < 3 {
		t.Fatalf("closed %d instances after 3 deliveries, want 3", got)
	}
}

func TestStopDrainsAndReleases(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	release := make(chan struct{})
	slow := func(d *engines.Delivery) plugin.Result {
		if string(d.Body) == "slow" {
			close(started)
			<-release
		}
		return plugin.Result{Verdict: engines.Ack}
	}
	fx := newFixture(t, slow, func(c *dispatch.Config) { c.Concurrency = 1; c.Batch = 10 })
	fx.c.Start()
	// A fast first delivery shows the worker the handler is quick, so it
	// leases the next four in one batch.
	fx.send(t, "warm")
	fx.next(t)
	fx.send(t, "slow", "b", "c", "d")
	<-started
	stopped := stopAsync(fx)
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
	st := fx.c.Stats()
	if st.Acked != 2 {
		t.Fatalf("acked %d, want the warm-up and the delivery in progress", st.Acked)
	}
	qs, err := fx.q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The three leased but unstarted deliveries are back, visible at once.
	if qs.Ready != 3 || qs.InFlight != 0 || st.Released != 3 {
		t.Fatalf("after stop: queue %+v, released %d; want 3 ready, none in flight", qs, st.Released)
	}
}

func TestStopDeadlineAbortsStuckHandler(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	var once sync.Once
	var inst *blockingInstance
	fx := newFixture(t, nil, func(c *dispatch.Config) {
		c.Concurrency = 1
		c.NewInstance = func(context.Context) (dispatch.Instance, error) {
			inst = &blockingInstance{closed: make(chan struct{}), started: func() { once.Do(func() { close(started) }) }}
			return inst, nil
		}
	})
	fx.send(t, "stuck")
	fx.c.Start()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := fx.c.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stop returned %v, want deadline exceeded", err)
	}
	qs, _ := fx.q.Stats(context.Background())
	if qs.Ready != 1 || qs.NackedTotal != 0 {
		t.Fatalf("the aborted delivery must be released without a failure counted: %+v", qs)
	}
}

// blockingInstance handles nothing until it is closed, like a guest in an
// infinite loop that the host stops by closing the instance.
type blockingInstance struct {
	closed  chan struct{}
	once    sync.Once
	started func()
}

func (b *blockingInstance) Handle(context.Context, *engines.Delivery, time.Time) plugin.Result {
	b.started()
	<-b.closed
	return plugin.Result{Verdict: engines.Nack, Err: plugin.ErrTrap}
}
func (b *blockingInstance) Broken() bool { return true }
func (b *blockingInstance) Close(context.Context) error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

func TestInstanceStartFailureBacksOffAndRecovers(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var fx *fixture
	fx = newFixture(t, byBody, func(c *dispatch.Config) {
		c.Concurrency, c.Batch = 1, 1
		c.NewInstance = func(context.Context) (dispatch.Instance, error) {
			if calls.Add(1) < 3 {
				return nil, errors.New("qrun_init returned 1")
			}
			return &fakeInstance{f: byBody, closes: &fx.closes}, nil
		}
	})
	fx.send(t, "ack")
	start := time.Now()
	fx.c.Start()
	if s := fx.next(t); s.verdict != engines.Ack || s.attempt != 1 {
		t.Fatalf("got %+v: the message must wait for a working instance, not be failed", s)
	}
	// Two failures back off 50ms then 100ms before the third try: proof
	// that a plugin that cannot start is not retried in a hot loop.
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("instance retried after %v, want backoff of at least 150ms", el)
	}
}

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	p := dispatch.RetryPolicy{Initial: time.Second, Max: 10 * time.Second, Multiplier: 2}
	for failures, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		if got := p.Delay(failures); got != want {
			t.Errorf("Delay(%d) = %v, want %v", failures, got, want)
		}
	}
	p.Jitter = 0.5
	for range 100 {
		if d := p.Delay(0); d < 500*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("jittered delay %v outside [0.5s, 1.5s]", d)
		}
	}
}

// TestLeaseRenewedForTheTailOfASlowBatch: a batch leased when the handler
// looked fast, then slowed down by one long delivery, must not let the
// leases of the deliveries behind it run out unhandled (which would count
// failures against messages nobody tried).
func TestLeaseRenewedForTheTailOfASlowBatch(t *testing.T) {
	t.Parallel()
	slow := func(d *engines.Delivery) plugin.Result {
		if string(d.Body) == "slow" {
			time.Sleep(700 * time.Millisecond) // the handler's work, not synchronisation
		}
		return plugin.Result{Verdict: engines.Ack}
	}
	fx := newFixture(t, slow, func(c *dispatch.Config) {
		c.Concurrency, c.Batch = 1, 10
		c.VisibilityTimeout, c.HandlerTimeout = time.Second, 200*time.Millisecond
	})
	fx.c.Start()
	fx.send(t, "warm") // teaches the worker the handler is fast: next batch is big
	fx.next(t)
	// Two deliveries of 700ms outlast the 1s lease of the batch; the third
	// waits behind both.
	fx.send(t, "slow", "slow", "c")
	for range 3 {
		if s := fx.next(t); s.verdict != engines.Ack || s.attempt != 1 {
			t.Fatalf("%q settled %v at attempt %d, want ack at attempt 1", s.body, s.verdict, s.attempt)
		}
	}
	qs, err := fx.q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if qs.ExpiredLeaseTotal != 0 || qs.DeadLetteredTotal != 0 || qs.AckedTotal != 4 {
		t.Fatalf("queue %+v: no lease may expire and nothing be dead-lettered", qs)
	}
}

// extendCounter wraps a queue so every delivery settles through it, counting
// lease extensions.
type extendCounter struct {
	engines.Queue
	extends atomic.Int64
	mu      sync.Mutex
	orig    map[engines.Ticket]engines.Delivery
}

func (e *extendCounter) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	n, err := e.Queue.Receive(ctx, buf)
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range buf[:n] {
		e.orig[buf[i].Ticket()] = buf[i]
		buf[i] = engines.NewDelivery(buf[i], e, buf[i].Ticket())
	}
	return n, err
}

func (e *extendCounter) delivery(t engines.Ticket) engines.Delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.orig[t]
}

func (e *extendCounter) Settle(ctx context.Context, t engines.Ticket, s engines.Settlement) error {
	d := e.delivery(t)
	return d.Settle(ctx, s)
}

func (e *extendCounter) Extend(ctx context.Context, t engines.Ticket, by time.Duration) (time.Time, error) {
	e.extends.Add(1)
	d := e.delivery(t)
	err := d.Extend(ctx, by)
	return d.LeaseExpires, err
}

// TestNoLeaseExtensionWhenTimeoutExceedsHalfTheLease: with a handler
// timeout of more than half the visibility timeout, renewing "whenever
// less than twice the timeout is left" meant every delivery extended the
// rest of its batch before it ran (an engine write each, on postgres a
// commit each: issue 12 item 4). Fast handlers finish a batch well inside
// its lease and must extend nothing. The lease is long (20s) so only a
// batch that takes 5s could make an extension legitimate.
func TestNoLeaseExtensionWhenTimeoutExceedsHalfTheLease(t *testing.T) {
	t.Parallel()
	var counter *extendCounter
	fx := newFixtureOn(t, byBody, func(c *dispatch.Config) {
		c.Concurrency, c.Batch = 1, 64
		c.VisibilityTimeout, c.HandlerTimeout = 20*time.Second, 20*time.Second
	}, func(q engines.Queue) engines.Queue {
		counter = &extendCounter{Queue: q, orig: map[engines.Ticket]engines.Delivery{}}
		return counter
	})
	bodies := make([]string, 200)
	for i := range bodies {
		bodies[i] = "ack"
	}
	fx.send(t, bodies...)
	fx.c.Start()
	for range bodies {
		if s := fx.next(t); s.verdict != engines.Ack {
			t.Fatalf("%q settled %v, want ack", s.body, s.verdict)
		}
	}
	if n := counter.extends.Load(); n != 0 {
		t.Fatalf("%d lease extensions for 200 fast deliveries, want 0", n)
	}
}
