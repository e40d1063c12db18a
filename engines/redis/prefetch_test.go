package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/redis"
)

// aheadQueue opens a queue on a new engine whose batches leased ahead wait
// hold for a Receive, and enqueues n messages "m0".."m<n-1>". Started
// settles wait for their Wait however slow the machine, so that the end
// of each batch is what sends them.
func aheadQueue(t *testing.T, hold time.Duration, n int) (*redis.Engine, engines.Queue) {
	t.Helper()
	return aheadQueueOn(t, "", hold, n)
}

// aheadQueueOn is aheadQueue on the server at url ("": the package's).
func aheadQueueOn(t *testing.T, url string, hold time.Duration, n int) (*redis.Engine, engines.Queue) {
	t.Helper()
	e := newEngine(t, "", redis.Options{URL: url})
	redis.SetTimings(e, hold, time.Hour)
	q, err := e.Open(context.Background(), engines.QueueSpec{Name: "ahead", VisibilityTimeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i].Body = fmt.Appendf(nil, "m%d", i)
	}
	if err := q.Enqueue(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	return e, q
}

// receiveFull receives exactly len(buf) deliveries in one Receive (a full
// buffer: the queue has a backlog) and checks their bodies, from m<first>
// on, and that each is a first attempt.
func receiveFull(t *testing.T, q engines.Queue, buf []engines.Delivery, first int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := q.Receive(ctx, buf)
	if err != nil || n != len(buf) {
		t.Fatalf("Receive = %d, %v; want %d", n, err, len(buf))
	}
	for i := range buf {
		if want := fmt.Sprintf("m%d", first+i); string(buf[i].Body) != want || buf[i].Attempt != 1 || buf[i].Failures != 0 {
			t.Fatalf("delivery %d: %q attempt %d failures %d; want %q, attempt 1, failures 0", i, buf[i].Body, buf[i].Attempt, buf[i].Failures, want)
		}
	}
}

// ackBatch acks ds the way the dispatcher does at the end of a batch:
// every verdict started, then each waited for.
func ackBatch(t *testing.T, q engines.Queue, ds []engines.Delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gs := q.(engines.GroupSettler)
	ps := make([]engines.Pending, len(ds))
	for i := range ds {
		p, err := gs.StartSettle(ctx, &ds[i], engines.Settlement{Verdict: engines.Ack})
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
	}
	for _, p := range ps {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func stats(t *testing.T, q engines.Queue) engines.Stats {
	t.Helper()
	s, err := q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLeaseAhead: after a full batch, the Wait at its end leases the next
// batch in the same round trip (in flight before anyone asks), the next
// Receive hands it out in stream order as first attempts, and a batch that
// came back short leases nothing more ahead.
func TestLeaseAhead(t *testing.T) {
	_, q := aheadQueue(t, time.Hour, 10)
	buf := make([]engines.Delivery, 4)
	receiveFull(t, q, buf, 0)
	ackBatch(t, q, buf)
	if s := stats(t, q); s.InFlight != 4 || s.Ready != 2 || s.AckedTotal != 4 {
		t.Fatalf("after the first batch: in flight %d, ready %d, acked %d; want 4 leased ahead, 2 ready, 4 acked", s.InFlight, s.Ready, s.AckedTotal)
	}
	receiveFull(t, q, buf, 4)
	ackBatch(t, q, buf) // leases the last 2 ahead
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := q.Receive(ctx, buf)
	if err != nil || n != 2 || string(buf[0].Body) != "m8" || string(buf[1].Body) != "m9" {
		t.Fatalf("Receive = %d, %v; want m8 and m9", n, err)
	}
	ackBatch(t, q, buf[:n]) // a short batch: nothing leased ahead
	if s := stats(t, q); s.InFlight != 0 || s.Ready != 0 || s.AckedTotal != 10 || s.ExpiredLeaseTotal != 0 {
		t.Fatalf("at the end: in flight %d, ready %d, acked %d, expired leases %d; want 0, 0, 10, 0", s.InFlight, s.Ready, s.AckedTotal, s.ExpiredLeaseTotal)
	}
}

// TestLeaseAheadPerWorker: two workers' batches end one after the other,
// and each end leases a batch ahead (one full Receive each allowed it), so
// that both workers' next Receives find one; each hands out its own
// entries, in stream order.
func TestLeaseAheadPerWorker(t *testing.T) {
	_, q := aheadQueue(t, time.Hour, 12)
	a, b := make([]engines.Delivery, 3), make([]engines.Delivery, 3)
	receiveFull(t, q, a, 0)
	receiveFull(t, q, b, 3)
	ackBatch(t, q, a)
	ackBatch(t, q, b)
	if s := stats(t, q); s.InFlight != 6 || s.Ready != 0 || s.AckedTotal != 6 {
		t.Fatalf("after two batch ends: in flight %d, ready %d, acked %d; want 6 leased ahead, 0 ready, 6 acked", s.InFlight, s.Ready, s.AckedTotal)
	}
	receiveFull(t, q, a, 6)
	receiveFull(t, q, b, 9)
	ackBatch(t, q, a)
	ackBatch(t, q, b)
	if s := stats(t, q); s.InFlight != 0 || s.Ready != 0 || s.AckedTotal != 12 || s.ExpiredLeaseTotal != 0 {
		t.Fatalf("at the end: %+v; want all 12 acked and nothing left", s)
	}
}

// TestLeaseAheadGivenBack: a batch leased ahead that no Receive takes goes
// back to the queue when its hold ends, with no attempt and no failure
// counted and its lease released, not left to expire.
func TestLeaseAheadGivenBack(t *testing.T) {
	_, q := aheadQueue(t, time.Millisecond, 6)
	buf := make([]engines.Delivery, 3)
	receiveFull(t, q, buf, 0)
	ackBatch(t, q, buf)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The hold ends on the engine's own timer: poll the server for it.
	for s := stats(t, q); s.InFlight != 0 || s.Ready != 3; s = stats(t, q) {
		select {
		case <-ctx.Done():
			t.Fatalf("the batch leased ahead was not given back: in flight %d, ready %d", s.InFlight, s.Ready)
		case <-time.After(10 * time.Millisecond):
		}
	}
	receiveFull(t, q, buf, 3)
	if s := stats(t, q); s.ExpiredLeaseTotal != 0 || s.NackedTotal != 0 {
		t.Fatalf("giving back counted %d expired leases and %d nacks; want none", s.ExpiredLeaseTotal, s.NackedTotal)
	}
}

// TestLeaseAheadClose: closing a handle gives back the batch it leased
// ahead before Close returns, so another handle receives it at once, as
// first attempts.
func TestLeaseAheadClose(t *testing.T) {
	e, q := aheadQueue(t, time.Hour, 6)
	buf := make([]engines.Delivery, 3)
	receiveFull(t, q, buf, 0)
	ackBatch(t, q, buf)
	if s := stats(t, q); s.InFlight != 3 {
		t.Fatalf("in flight %d after the first batch; want 3 leased ahead", s.InFlight)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q2, err := e.Open(context.Background(), engines.QueueSpec{Name: "ahead"})
	if err != nil {
		t.Fatal(err)
	}
	if s := stats(t, q2); s.InFlight != 0 || s.Ready != 3 {
		t.Fatalf("after Close: in flight %d, ready %d; want 0 and 3", s.InFlight, s.Ready)
	}
	receiveFull(t, q2, buf, 3)
}

// TestAckDeletesExactly: acked entries leave the stream (trimmed from its
// head when they lead it, deleted one by one when an older batch is still
// out), and nothing else does: acking a newer batch first, then an older
// one, and the other way round, leaves the counts exact and every other
// message deliverable.
func TestAckDeletesExactly(t *testing.T) {
	_, q := aheadQueue(t, time.Hour, 14)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := make([]engines.Delivery, 3), make([]engines.Delivery, 3)
	want := func(step string, inFlight, ready, acked int64) {
		t.Helper()
		if s := stats(t, q); s.InFlight != inFlight || s.Ready != ready || s.AckedTotal != acked {
			t.Fatalf("%s: in flight %d, ready %d, acked %d; want %d, %d, %d", step, s.InFlight, s.Ready, s.AckedTotal, inFlight, ready, acked)
		}
	}
	ack := func(ds []engines.Delivery) {
		t.Helper()
		for i := range ds {
			if err := ds[i].Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The newer batch first: its entries lie after the older batch's.
	receiveFull(t, q, a, 0)
	receiveFull(t, q, b, 3)
	ack(b)
	want("newer batch acked first", 3, 8, 3)
	ack(a)
	want("then the older", 0, 8, 6)
	// The older batch first: it leads the stream while the newer is out.
	receiveFull(t, q, a, 6)
	receiveFull(t, q, b, 9)
	ack(a)
	want("older batch acked first", 3, 2, 9)
	ack(b)
	want("then the newer", 0, 2, 12)
	rest := make([]engines.Delivery, 2)
	receiveFull(t, q, rest, 12)
	ack(rest)
	want("at the end", 0, 0, 14)
}

// TestAckDeletesAroundFloor: one settle whose acks straddle the floor
// (a delivery of the same batch, extended onto a lease of its own, is
// still out in the middle of them) trims the acks before it and deletes
// those after it, and none else; the dispatcher's verdicts may come in
// any order, so they go here newest first.
func TestAckDeletesAroundFloor(t *testing.T) {
	_, q := aheadQueue(t, time.Hour, 10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := func(step string, inFlight, ready, acked int64) {
		t.Helper()
		if s := stats(t, q); s.InFlight != inFlight || s.Ready != ready || s.AckedTotal != acked {
			t.Fatalf("%s: in flight %d, ready %d, acked %d; want %d, %d, %d", step, s.InFlight, s.Ready, s.AckedTotal, inFlight, ready, acked)
		}
	}
	a := make([]engines.Delivery, 6)
	receiveFull(t, q, a, 0)
	if err := a[2].Extend(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	rest := []engines.Delivery{a[5], a[4], a[3], a[1], a[0]}
	ackBatch(t, q, rest)
	// The settle ran before the read of the next 4, leased ahead with it.
	want("acked around the extended one", 5, 0, 5)
	ackBatch(t, q, a[2:3])
	want("the extended one acked", 4, 0, 6)
	b := make([]engines.Delivery, 4)
	receiveFull(t, q, b, 6)
	ackBatch(t, q, []engines.Delivery{b[3], b[1], b[2], b[0]})
	want("at the end", 0, 0, 10)
}
