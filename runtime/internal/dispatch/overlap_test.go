package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// heldTxQueue is a memory queue that offers engines.GroupTxSettler and
// decides each commit only when the test says: the Wait of a commit
// started for body B returns what the test sends for B (then, for nil,
// commits for real on the memory engine), or commits once the test opens
// every commit at once (openAll). It tells the test each commit started
// and each Receive entered, and checks on every Receive that the commits
// of the batches before the last one have been accounted (one batch in
// flight per worker) when the test gave it the consumer (Concurrency 1).
type heldTxQueue struct {
	engines.Queue
	c       atomic.Pointer[dispatch.Consumer]
	started chan string // the body of each commit started
	entered chan int    // the number of each Receive entered
	open    chan struct{}

	mu        sync.Mutex
	decide    map[string]chan error
	commits   int   // commits started
	startedAt []int // commits started when each Receive was entered
	problems  []string
}

func newHeldTxQueue(q engines.Queue) *heldTxQueue {
	return &heldTxQueue{Queue: q, started: make(chan string, 100), entered: make(chan int, 1000),
		open: make(chan struct{}), decide: map[string]chan error{}}
}

// of is the channel that decides body's commits.
func (h *heldTxQueue) of(body string) chan error {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.decide[body]
	if ch == nil {
		ch = make(chan error, 4)
		h.decide[body] = ch
	}
	return ch
}

func (h *heldTxQueue) problem(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.problems = append(h.problems, fmt.Sprintf(format, args...))
}

func (h *heldTxQueue) check(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.problems {
		t.Error(p)
	}
}

// openAll lets every commit, held or still to come, go through.
func (h *heldTxQueue) openAll() { close(h.open) }

func (h *heldTxQueue) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	h.mu.Lock()
	h.startedAt = append(h.startedAt, h.commits)
	k := len(h.startedAt)
	var due int // the commits of batches 1..k-2
	if k >= 2 {
		due = h.startedAt[k-2]
	}
	h.mu.Unlock()
	if c := h.c.Load(); c != nil {
		st := c.Stats()
		// A commit is accounted as an ack, or as a requeue on a conflict.
		if got := st.Acked + st.Requeued; got < int64(due) {
			h.problem("receive %d entered with %d commits accounted, want the %d of the batches before the last", k, got, due)
		}
	}
	h.entered <- k
	return h.Queue.Receive(ctx, buf)
}

func (h *heldTxQueue) StartSettleTx(_ context.Context, d *engines.Delivery, e *engines.Effects) (engines.Pending, error) {
	body := string(d.Body)
	ch := h.of(body)
	h.mu.Lock()
	h.commits++
	h.mu.Unlock()
	h.started <- body
	return pendingFunc(func(ctx context.Context) error {
		select {
		case err := <-ch:
			if err != nil {
				return err
			}
		case <-h.open:
		case <-ctx.Done():
			return ctx.Err()
		}
		// The worker has received since: the delivery must still be this one.
		if string(d.Body) != body {
			h.problem("commit of %q found the delivery overwritten by %q", body, d.Body)
		}
		return d.SettleTx(ctx, e)
	}), nil
}

// incrHandler acks every delivery with an increment of the key named by
// its body, held for its commit.
func incrHandler(d *engines.Delivery) plugin.Result {
	return plugin.Result{Verdict: engines.Ack, Effects: &engines.Effects{KV: []engines.KVBatch{{Store: "s",
		Ops: []engines.KVOp{{Kind: engines.KVIncr, Key: append([]byte(nil), d.Body...), Delta: 1}}}}}}
}

// heldFixture is a consumer of incrHandler on a heldTxQueue; commits
// counts the outcomes OnCommit saw.
func heldFixture(t *testing.T, concurrency, batch int) (*fixture, *heldTxQueue, *atomic.Int64) {
	t.Helper()
	var hq *heldTxQueue
	commits := new(atomic.Int64)
	fx := newFixtureOn(t, incrHandler, func(c *dispatch.Config) {
		c.Concurrency, c.Batch = concurrency, batch
		c.OnCommit = func(*engines.Effects, error) { commits.Add(1) }
	}, func(q engines.Queue) engines.Queue {
		hq = newHeldTxQueue(q)
		return hq
	})
	if concurrency == 1 { // Receive's check numbers one worker's batches
		hq.c.Store(fx.c)
	}
	if _, err := fx.eng.OpenKV(context.Background(), engines.KVSpec{Name: "s"}); err != nil {
		t.Fatal(err)
	}
	return fx, hq, commits
}

// within waits for a value of ch, failing the test after a generous bound
// (a dispatcher that never gets there, not a slow machine).
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s", what)
		panic("unreachable")
	}
}

// quiet reports a value of ch that comes within a short while: it gives a
// dispatcher that does not wait where it must the time to show it. A
// right one passes however slow the machine.
func quiet[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s (%v) while a commit it must wait for is outstanding", what, v)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestCommitsLandWhileTheNextBatchRuns: a batch's commits of effects are
// waited for while the worker receives and handles the next batch, and
// the worker receives the batch after that only once they are accounted;
// a conflict found in an overlapped commit requeues the delivery without
// a failure, and its next attempt commits.
func TestCommitsLandWhileTheNextBatchRuns(t *testing.T) {
	t.Parallel()
	fx, hq, commits := heldFixture(t, 1, 1)
	fx.send(t, "a")
	fx.c.Start()
	if n := within(t, hq.entered, "first receive"); n != 1 {
		t.Fatalf("receive %d, want 1", n)
	}
	if b := within(t, hq.started, "commit of a"); b != "a" {
		t.Fatalf("commit of %q, want a", b)
	}
	// a's commit is held, and the worker receives again all the same.
	if n := within(t, hq.entered, "receive while a's commit is outstanding"); n != 2 {
		t.Fatalf("receive %d, want 2", n)
	}
	if st := fx.c.Stats(); st.Acked != 0 || commits.Load() != 0 {
		t.Fatalf("stats %+v, %d commits seen: a's commit is still held", st, commits.Load())
	}
	fx.send(t, "b")
	if b := within(t, hq.started, "commit of b"); b != "b" {
		t.Fatalf("commit of %q, want b", b)
	}
	quiet(t, hq.entered, "third receive")
	hq.of("a") <- engines.ErrConflict
	// Receive 3 now comes, with a accounted (heldTxQueue.Receive checks),
	// and brings a back for its second attempt.
	if n := within(t, hq.entered, "third receive"); n != 3 {
		t.Fatalf("receive %d, want 3", n)
	}
	if b := within(t, hq.started, "second commit of a"); b != "a" {
		t.Fatalf("commit of %q, want a", b)
	}
	hq.of("b") <- nil
	hq.of("a") <- nil
	got := map[string][]engines.Verdict{}
	for len(got["a"]) < 2 || len(got["b"]) < 1 {
		s := fx.next(t)
		got[s.body] = append(got[s.body], s.verdict)
	}
	if v := got["a"]; v[0] != engines.Requeue || v[1] != engines.Ack {
		t.Errorf("a: verdicts %v, want requeue (conflict) then ack", v)
	}
	if st := fx.c.Stats(); st.Acked != 2 || st.Conflicts != 1 || st.Requeued != 1 || st.Nacked != 0 || st.EngineErrors != 0 {
		t.Errorf("stats %+v, want 2 acks and one conflict requeued, no failure", st)
	}
	if n := commits.Load(); n != 3 {
		t.Errorf("OnCommit saw %d commits, want 3", n)
	}
	hq.check(t)
}

// TestStopAccountsOutstandingCommits: Stop returns only once every commit
// the workers started is accounted, the one in flight and the one of the
// batch in hand; every message is then either acked, with its effect, or
// back in the queue, and the counters say exactly which.
func TestStopAccountsOutstandingCommits(t *testing.T) {
	t.Parallel()
	fx, hq, commits := heldFixture(t, 1, 1)
	fx.send(t, "a", "b")
	fx.c.Start()
	within(t, hq.started, "commit of a")
	within(t, hq.started, "commit of b") // the next batch ran meanwhile
	stopped := stopAsync(fx)
	quiet(t, stopped, "Stop returned")
	hq.of("a") <- nil
	quiet(t, stopped, "Stop returned")
	hq.of("b") <- engines.ErrConflict
	if err := within(t, stopped, "return from Stop"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st := fx.c.Stats()
	if st.Acked != 1 || st.Conflicts != 1 || st.Requeued != 1 || st.Nacked != 0 || commits.Load() != 2 {
		t.Errorf("stats %+v, %d commits seen: want a acked and b requeued on its conflict, both seen", st, commits.Load())
	}
	hq.check(t)
}

// TestStopAccountsEveryCommitOfManyWorkers: with several workers and
// batches, commits held until Stop has begun are all accounted when Stop
// returns: acked messages, the store's counts and the queue's remainder
// add up exactly.
func TestStopAccountsEveryCommitOfManyWorkers(t *testing.T) {
	t.Parallel()
	fx, hq, commits := heldFixture(t, 3, 4)
	const n = 60
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = fmt.Sprintf("m%d", i)
	}
	fx.send(t, bodies...)
	fx.c.Start()
	for range 8 { // a few batches, their commits held
		within(t, hq.started, "a commit")
	}
	stopped := stopAsync(fx)
	hq.openAll()
	if err := within(t, stopped, "return from Stop"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	ctx := context.Background()
	st := fx.c.Stats()
	hq.mu.Lock()
	started := hq.commits
	hq.mu.Unlock()
	if st.Acked != int64(started) || commits.Load() != int64(started) || st.Nacked != 0 || st.EngineErrors != 0 {
		t.Errorf("stats %+v, %d commits seen: want every one of the %d started acked", st, commits.Load(), started)
	}
	kv, err := fx.eng.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for _, b := range bodies {
		if _, err := kv.Get(ctx, []byte(b)); err == nil {
			applied++
		} else if !errors.Is(err, engines.ErrNotFound) {
			t.Fatal(err)
		}
	}
	qs, err := fx.q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if applied != started || qs.Depth() != int64(n-started) {
		t.Errorf("%d effects applied and %d messages left, want %d and %d", applied, qs.Depth(), started, n-started)
	}
	hq.check(t)
}

// TestPauseAccountsOutstandingCommits: Pause returns only once the commit
// still in flight when the worker stopped receiving is accounted.
func TestPauseAccountsOutstandingCommits(t *testing.T) {
	t.Parallel()
	fx, hq, commits := heldFixture(t, 1, 1)
	fx.send(t, "a")
	fx.c.Start()
	within(t, hq.started, "commit of a")
	within(t, hq.entered, "first receive")
	within(t, hq.entered, "receive while a's commit is outstanding")
	paused := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		paused <- fx.c.Pause(ctx)
	}()
	quiet(t, paused, "Pause returned")
	hq.of("a") <- nil
	if err := within(t, paused, "return from Pause"); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st := fx.c.Stats(); st.Acked != 1 || commits.Load() != 1 {
		t.Errorf("stats %+v, %d commits seen, want a acked when Pause returns", st, commits.Load())
	}
	hq.check(t)
}

// stopAsync starts Stop (bounded, so a hang fails rather than blocks) and
// returns its outcome's channel once the consumer is draining.
func stopAsync(fx *fixture) <-chan error {
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped <- fx.c.Stop(ctx)
	}()
	<-fx.c.Draining()
	return stopped
}
