package disk_test

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/internal/clock"
)

// TestLeaseOutstandingAtStopIsRetriedWithBackoff: a lease the process left
// outstanding is a failure like any other, so the message waits the
// queue's retry delay before its next attempt instead of being ready at
// once (issue 12 item 2). The policy comes from the stored settings: the
// reopened queue is attached by name only.
func TestLeaseOutstandingAtStopIsRetriedWithBackoff(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := ctxT(t)
	e := openEngine(t, dir)
	q := openQueue(t, e, engines.QueueSpec{Name: "q", MaxAttempts: 5, Retry: engines.RetryPolicy{Initial: time.Hour, Multiplier: 2}})
	if err := q.Enqueue(ctx, engines.Message{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	receive(t, q, 1)
	closeEngine(t, e)

	e = openEngine(t, dir)
	defer e.Close()
	q = openQueue(t, e, engines.QueueSpec{Name: "q"})
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready != 0 || st.Delayed != 1 || st.ExpiredLeaseTotal != 1 {
		t.Fatalf("after reopening: %+v, want the message delayed by its retry backoff, 1 expired lease", st)
	}
	ps, err := q.(engines.Peeker).Peek(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Failures != 1 {
		t.Fatalf("peek %+v, want m with 1 failure", ps)
	}
}

// TestLeaseOutstandingAtStopCountedOnce: the expiry found at one open is
// stored, so later opens (graceful ones included) neither count the lease
// again in ExpiredLeaseTotal and the leases_expired_by_restart log field
// nor charge the message another failure (issue 12 item 3).
func TestLeaseOutstandingAtStopCountedOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := ctxT(t)
	e := openEngine(t, dir)
	q := openQueue(t, e, engines.QueueSpec{Name: "q", MaxAttempts: 10})
	if err := q.Enqueue(ctx, engines.Message{ID: "a"}, engines.Message{ID: "b"}, engines.Message{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	receive(t, q, 3)
	closeEngine(t, e)

	for i, wantLogged := range []int64{3, 0, 0} {
		core, logs := observer.New(zap.InfoLevel)
		e, err := disk.Open(ctx, disk.Options{Dir: dir, Logger: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		opened := logs.FilterMessage("disk engine opened").All()
		if len(opened) != 1 {
			t.Fatalf("open %d: %d \"disk engine opened\" lines, want 1", i+1, len(opened))
		}
		if got := opened[0].ContextMap()["leases_expired_by_restart"]; got != wantLogged {
			t.Errorf("open %d: leases_expired_by_restart = %v, want %d", i+1, got, wantLogged)
		}
		// Opened with its settings, as qrun does at every start: that
		// stores them and the counters with them.
		q := openQueue(t, e, engines.QueueSpec{Name: "q", MaxAttempts: 10})
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExpiredLeaseTotal != 3 || st.Ready != 3 {
			t.Errorf("open %d: %+v, want 3 expired leases, 3 ready", i+1, st)
		}
		ps, err := q.(engines.Peeker).Peek(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.Failures != 1 {
				t.Errorf("open %d: %s has %d failures, want 1", i+1, p.ID, p.Failures)
			}
		}
		closeEngine(t, e)
	}
}

// TestLeaseExhaustedAtStopDeadLetteredOnce: a lease that was the message's
// last attempt dead-letters it at the next open, in the same transaction
// that records the expiry, and later opens count neither again. The dead
// letter keeps its attempts and failures across the opens.
func TestLeaseExhaustedAtStopDeadLetteredOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := ctxT(t)
	e := openEngine(t, dir)
	q := openQueue(t, e, engines.QueueSpec{Name: "q", MaxAttempts: 1, DeadLetter: "dlq"})
	if err := q.Enqueue(ctx, engines.Message{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	receive(t, q, 1)
	closeEngine(t, e)
	for i := range 3 {
		e := openEngine(t, dir)
		q := openQueue(t, e, engines.QueueSpec{Name: "q"})
		dlq := openQueue(t, e, engines.QueueSpec{Name: "dlq"})
		st, _ := q.Stats(ctx)
		dst, _ := dlq.Stats(ctx)
		if st.Depth() != 0 || st.ExpiredLeaseTotal != 1 || st.DeadLetteredTotal != 1 || dst.Ready != 1 || dst.EnqueuedTotal != 1 {
			t.Errorf("open %d: queue %+v, dead-letter queue %+v; want the message moved once", i+1, st, dst)
		}
		// It keeps its history, on disk too (issue 12 item 16).
		if ps, err := dlq.(engines.Peeker).Peek(ctx, 1); err != nil || len(ps) != 1 || ps[0].Attempt != 1 || ps[0].Failures != 1 {
			t.Errorf("open %d: peek of the dead-letter queue = %+v, %v; want m at attempt 1 with 1 failure", i+1, ps, err)
		}
		closeEngine(t, e)
	}
}

// TestLeaseExpiredAtRunTimeCountedOnceAcrossStop: a lease that expires
// while the engine runs counts its failure and waits the retry delay; a
// stop during that delay neither charges the message a second failure nor
// counts a second expired lease, and the message still waits.
func TestLeaseExpiredAtRunTimeCountedOnceAcrossStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := ctxT(t)
	spec := engines.QueueSpec{Name: "q", VisibilityTimeout: 50 * time.Millisecond, MaxAttempts: 5,
		Retry: engines.RetryPolicy{Initial: time.Hour, Multiplier: 2}}
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	openEngine := func() *disk.Engine {
		e, err := disk.OpenWithClock(ctx, disk.Options{Dir: dir}, clk)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := openEngine()
	q := openQueue(t, e, spec)
	if err := q.Enqueue(ctx, engines.Message{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	receive(t, q, 1)
	// Stats applies the expiry once the engine's clock says it is due.
	clk.Advance(spec.VisibilityTimeout)
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Delayed != 1 || st.Ready != 0 || st.InFlight != 0 || st.ExpiredLeaseTotal != 1 {
		t.Fatalf("after the expiry: %+v, want the message delayed by its retry backoff, 1 expired lease", st)
	}
	// Another commit after the expiry stores the counters with it.
	if err := q.Enqueue(ctx, engines.Message{ID: "later", Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	closeEngine(t, e)

	for i := range 2 {
		e := openEngine()
		q := openQueue(t, e, spec)
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Delayed != 2 || st.Ready != 0 || st.ExpiredLeaseTotal != 1 {
			t.Errorf("open %d: %+v, want both messages still delayed, 1 expired lease", i+1, st)
		}
		ps, err := q.(engines.Peeker).Peek(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 2 || ps[0].ID != "m" || ps[0].Failures != 1 || ps[0].Attempt != 1 {
			t.Errorf("open %d: peek %+v, want m first (due sooner) with attempt 1, 1 failure", i+1, ps)
		}
		closeEngine(t, e)
	}
}

// TestLeasesOutstandingAtStopRecoveredWhileTimerFires: thousands of leases
// left outstanding, a retry delay of a microsecond. The queue's timer is
// armed by the first recovered message and fires while the open is still
// loading the rest; the open must not race with it (it did: the timer's
// callback moved records between the heaps the scan was pushing into,
// which failed the open with a nil dereference reported as a damaged file,
// or dropped records from the index, found by the race detector at once).
// Every message comes back, exactly once.
func TestLeasesOutstandingAtStopRecoveredWhileTimerFires(t *testing.T) {
	t.Parallel()
	const n = 3000
	dir := t.TempDir()
	ctx := ctxT(t)
	e := openEngine(t, dir)
	q := openQueue(t, e, engines.QueueSpec{Name: "q", Retry: engines.RetryPolicy{Initial: time.Microsecond, Max: time.Microsecond}})
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i].Body = []byte(fmt.Sprint(i))
	}
	if err := q.Enqueue(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	receive(t, q, n)
	closeEngine(t, e)

	for round := 0; round < 3; round++ { // each open expires the leases of the one before
		e = openEngine(t, dir)
		q = openQueue(t, e, engines.QueueSpec{Name: "q"})
		seen := map[string]bool{}
		for _, d := range receive(t, q, n) {
			if seen[string(d.Body)] {
				t.Fatalf("round %d: message %s delivered twice", round, d.Body)
			}
			seen[string(d.Body)] = true
		}
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.InFlight != n || st.Ready != 0 || st.Delayed != 0 {
			t.Fatalf("round %d: %+v, want all %d in flight", round, st, n)
		}
		closeEngine(t, e)
	}
}
