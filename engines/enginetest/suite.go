package enginetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

func subtests() []subtest {
	return []subtest{
		{"round_trip", testRoundTrip},
		{"open_twice_shares_queue", testOpenTwice},
		{"batch", testBatch},
		{"delay", testDelay},
		{"nack_delay", testNackDelay},
		{"visibility_timeout", testVisibilityTimeout},
		{"extend", testExtend},
		{"attempts_counted", testAttemptsCounted},
		{"lease_expiry_dead_letters", testLeaseExpiryDeadLetters},
		{"lease_expiry_backs_off", testLeaseExpiryBacksOff},
		{"max_attempts_dead_letter", testMaxAttemptsDeadLetter},
		{"explicit_dead_letter", testExplicitDeadLetter},
		{"dead_letter_without_queue", testDeadLetterWithoutQueue},
		{"requeue_no_failure", testRequeueNoFailure},
		{"priority", testPriority},
		{"ttl", testTTL},
		{"dedup", testDedup},
		{"concurrent_receivers", testConcurrentReceivers},
		{"empty_body", testEmptyBody},
		{"large_body", testLargeBody},
		{"receive_blocks", testReceiveBlocks},
		{"receive_cancel", testReceiveCancel},
		{"receive_cancel_race", testReceiveCancelRace},
		{"close_queue", testCloseQueue},
		{"close_engine", testCloseEngine},
		{"double_settle", testDoubleSettle},
		{"stats", testStats},
		{"ordered", testOrdered},
		{"ordered_head_lease_expires", testOrderedHeadLeaseExpires},
		{"ttl_not_applied_once_delivered", testTTLNotAppliedOnceDelivered},
		{"invalid", testInvalid},
		{"far_future", testFarFuture},
	}
}

func testRoundTrip(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	prio := uint8(0)
	if x.caps.Priority {
		prio = 7
	}
	msgs := []engines.Message{
		{
			Body:          []byte("hello, qrun"),
			Attributes:    map[string]string{"k": "v", "empty": "", "unicode": "héllo ✓"},
			ContentType:   "text/plain; charset=utf-8",
			CorrelationID: "corr-42",
			OrderingKey:   "key-1",
			Priority:      prio,
		},
		{ID: "caller-chosen-id", Body: []byte("second"), Priority: prio},
	}
	before := time.Now()
	x.enqueue(q, msgs...)
	after := time.Now()
	if msgs[0].ID == msgs[1].ID {
		t.Fatalf("two messages got the same ID %q", msgs[0].ID)
	}
	if msgs[1].ID != "caller-chosen-id" {
		t.Fatalf("Enqueue replaced a caller-chosen ID with %q", msgs[1].ID)
	}

	ds := x.receiveN(q, 2, wait)
	byID := map[string]engines.Delivery{}
	for _, d := range ds {
		byID[d.ID] = d
	}
	d, ok := byID[msgs[0].ID]
	if !ok {
		t.Fatalf("delivered IDs %q, %q; want %q among them", ds[0].ID, ds[1].ID, msgs[0].ID)
	}
	want := msgs[0]
	if !bytes.Equal(d.Body, want.Body) {
		t.Errorf("Body = %q, want %q", d.Body, want.Body)
	}
	if !maps.Equal(d.Attributes, want.Attributes) {
		t.Errorf("Attributes = %v, want %v", d.Attributes, want.Attributes)
	}
	if d.ContentType != want.ContentType {
		t.Errorf("ContentType = %q, want %q", d.ContentType, want.ContentType)
	}
	if d.CorrelationID != want.CorrelationID {
		t.Errorf("CorrelationID = %q, want %q", d.CorrelationID, want.CorrelationID)
	}
	if d.OrderingKey != want.OrderingKey {
		t.Errorf("OrderingKey = %q, want %q", d.OrderingKey, want.OrderingKey)
	}
	if d.Priority != want.Priority {
		t.Errorf("Priority = %d, want %d", d.Priority, want.Priority)
	}
	if d.Queue != q.Name() {
		t.Errorf("Queue = %q, want %q", d.Queue, q.Name())
	}
	if d.Attempt != 1 || d.Failures != 0 {
		t.Errorf("Attempt, Failures = %d, %d; want 1, 0", d.Attempt, d.Failures)
	}
	// Wall clocks of a remote engine may differ a little; a second is far
	// tighter than any real bug (zero time, wrong unit, wrong zone).
	if d.EnqueuedAt.Before(before.Add(-time.Second)) || d.EnqueuedAt.After(after.Add(time.Second)) {
		t.Errorf("EnqueuedAt = %v, want within a second of [%v, %v]", d.EnqueuedAt, before, after)
	}
	if x.caps.Visibility && !d.LeaseExpires.After(d.EnqueuedAt) {
		t.Errorf("LeaseExpires = %v, not after EnqueuedAt %v", d.LeaseExpires, d.EnqueuedAt)
	}
	if d2 := byID["caller-chosen-id"]; string(d2.Body) != "second" {
		t.Errorf("message with caller-chosen ID has body %q, want %q", d2.Body, "second")
	}
	x.ackAll(ds)
	x.expectNone(q, "after acking everything")
}

func testOpenTwice(t *testing.T, x *env) {
	q1 := x.open(engines.QueueSpec{})
	q2 := x.open(engines.QueueSpec{Name: q1.Name()})
	if q2.Name() != q1.Name() {
		t.Fatalf("second handle Name() = %q, want %q", q2.Name(), q1.Name())
	}
	msgs := x.enqueue(q1, engines.Message{Body: []byte("a")}, engines.Message{Body: []byte("b")})
	d := x.receiveOne(q2, wait)
	if d.ID != msgs[0].ID {
		t.Fatalf("second handle received %q, want %q", d.ID, msgs[0].ID)
	}
	held := x.receiveOne(q1, wait)
	x.ack(d)
	if s := x.stats(q1); s.AckedTotal != 1 || s.EnqueuedTotal != 2 {
		t.Fatalf("Stats through the first handle: AckedTotal=%d EnqueuedTotal=%d, want 1, 2", s.AckedTotal, s.EnqueuedTotal)
	}
	// Closing one handle leaves the other, and leases taken through the
	// closed one, working.
	if err := q1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	x.ack(held)
	x.enqueue(q2, engines.Message{Body: []byte("c")})
	if d := x.receiveOne(q2, wait); string(d.Body) != "c" {
		t.Fatalf("after closing the other handle received %q, want %q", d.Body, "c")
	} else {
		x.ack(d)
	}
}

func testBatch(t *testing.T, x *env) {
	const n = 500
	q := x.open(engines.QueueSpec{VisibilityTimeout: time.Minute})
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i].Body = fmt.Appendf(nil, "msg-%03d", i)
	}
	x.enqueue(q, msgs...)
	ids := make(map[string]int, n)
	for i, m := range msgs {
		if j, dup := ids[m.ID]; dup {
			t.Fatalf("messages %d and %d were both given ID %q", j, i, m.ID)
		}
		ids[m.ID] = i
	}

	ctx := x.ctx(wait)
	seen := make(map[string]bool, n)
	next := 0
	for next < n {
		ds, err := x.receive(ctx, q, 64)
		if err != nil {
			t.Fatalf("Receive after %d of %d: %v", next, n, err)
		}
		for _, d := range ds {
			if seen[d.ID] {
				t.Fatalf("message %q delivered twice", d.ID)
			}
			seen[d.ID] = true
			if want := fmt.Sprintf("msg-%03d", next); string(d.Body) != want {
				t.Fatalf("delivery %d has body %q, want %q (FIFO within one priority)", next, d.Body, want)
			}
			if i, ok := ids[d.ID]; !ok || i != next {
				t.Fatalf("delivery %d has ID %q, which Enqueue gave to message %d", next, d.ID, i)
			}
			next++
		}
		x.ackAll(ds)
	}
	x.expectNone(q, "after receiving the whole batch")
}

func testDelay(t *testing.T, x *env) {
	x.need(x.caps.Delay, "Delay")
	const delay = 150 * time.Millisecond
	q := x.open(engines.QueueSpec{})
	start := time.Now()
	msgs := x.enqueue(q,
		engines.Message{Body: []byte("delayed"), Delay: delay},
		engines.Message{Body: []byte("now")},
	)
	// The undelayed message must not wait behind the delayed one.
	ds, err := x.receive(x.ctx(wait), q, 10)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	at := time.Now()
	if string(ds[0].Body) != "now" {
		// Legitimate only if the machine stalled past the delay, so that
		// both were ready and the older came first.
		x.notBefore(at, start.Add(delay), "delayed message delivered before the undelayed one")
		if len(ds) == 1 {
			ds = append(ds, x.receiveOne(q, wait))
		}
		ds[0], ds[1] = ds[1], ds[0]
	}
	if string(ds[0].Body) != "now" {
		t.Fatalf("deliveries %q and %q, want %q and the delayed message", ds[0].Body, ds[1].Body, "now")
	}
	if len(ds) > 1 {
		// Legitimate only if the machine stalled past the delay.
		x.notBefore(at, start.Add(delay), "delayed message delivered with the undelayed one")
	} else {
		d := x.receiveOne(q, wait)
		at = time.Now()
		ds = append(ds, d)
	}
	if ds[1].ID != msgs[0].ID {
		t.Fatalf("got %q, want the delayed message %q", ds[1].ID, msgs[0].ID)
	}
	x.notBefore(at, start.Add(delay), "delayed message delivered")
	x.ackAll(ds)
}

func testNackDelay(t *testing.T, x *env) {
	x.need(x.caps.Delay, "Delay")
	const delay = 150 * time.Millisecond
	q := x.open(engines.QueueSpec{})
	msgs := x.enqueue(q, engines.Message{Body: []byte("retry me")})
	d := x.receiveOne(q, wait)
	nackAt := time.Now()
	if err := d.Nack(x.ctx(wait), delay, "try later"); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	d2 := x.receiveOne(q, wait)
	x.notBefore(time.Now(), nackAt.Add(delay), "nacked message redelivered")
	if d2.ID != msgs[0].ID || string(d2.Body) != "retry me" {
		t.Fatalf("redelivered %q (%q), want %q", d2.ID, d2.Body, msgs[0].ID)
	}
	if x.caps.DeadLetter && (d2.Attempt != 2 || d2.Failures != 1) {
		t.Fatalf("after one nack: Attempt, Failures = %d, %d; want 2, 1", d2.Attempt, d2.Failures)
	}
	x.ack(d2)
}

func testVisibilityTimeout(t *testing.T, x *env) {
	x.need(x.caps.Visibility, "Visibility")
	const vt = 100 * time.Millisecond
	q := x.open(engines.QueueSpec{VisibilityTimeout: vt})
	msgs := x.enqueue(q, engines.Message{Body: []byte("lease me")})

	leasedAfter := time.Now()
	a := x.receiveOne(q, wait)
	if a.LeaseExpires.Before(leasedAfter.Add(vt - clockSlack)) {
		t.Errorf("LeaseExpires = %v, want at least %v after the Receive started", a.LeaseExpires, vt)
	}
	// B blocks: the lease is the only thing standing between B and the message.
	b := x.receiveOne(q, wait)
	x.notBefore(time.Now(), leasedAfter.Add(vt), "leased message redelivered")
	if b.ID != msgs[0].ID {
		t.Fatalf("B got %q, want %q", b.ID, msgs[0].ID)
	}
	if x.caps.DeadLetter && (b.Attempt != 2 || b.Failures != 1) {
		t.Fatalf("after one lease expiry: Attempt, Failures = %d, %d; want 2, 1", b.Attempt, b.Failures)
	}
	x.wantErr(a.Ack(x.ctx(wait)), engines.ErrLeaseLost, "Ack by the holder of the expired lease")
	if err := b.Ack(x.ctx(wait)); err != nil {
		t.Fatalf("Ack by the current holder: %v", err)
	}
	s := x.stats(q)
	if s.ExpiredLeaseTotal != 1 || s.AckedTotal != 1 || s.Depth() != 0 {
		t.Fatalf("Stats: ExpiredLeaseTotal=%d AckedTotal=%d Depth=%d, want 1, 1, 0", s.ExpiredLeaseTotal, s.AckedTotal, s.Depth())
	}
}

func testExtend(t *testing.T, x *env) {
	x.need(x.caps.Visibility, "Visibility")
	// Both cases hold several leases at once, so an engine that records the
	// new deadline without reordering its lease bookkeeping is caught.
	t.Run("longer", func(t *testing.T) {
		x := &env{t: t, e: x.e, caps: x.caps}
		// Long enough that the Extend below still finds its lease held even
		// if the machine stalls between Receive and Extend.
		const vt = 300 * time.Millisecond
		q := x.open(engines.QueueSpec{VisibilityTimeout: vt})
		x.enqueue(q, engines.Message{Body: []byte("extended")}, engines.Message{Body: []byte("left alone")})
		leasedAfter := time.Now()
		ds := x.receiveN(q, 2, wait)
		ext := ds[0]
		if string(ext.Body) != "extended" {
			ext = ds[1]
		}
		old := ext.LeaseExpires
		// Far longer than the waits below, so a slow machine cannot make the
		// extended lease run out before the Ack.
		if err := ext.Extend(x.ctx(wait), 10*time.Second); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		if !ext.LeaseExpires.After(old.Add(5 * time.Second)) {
			t.Fatalf("LeaseExpires after Extend = %v, want well after %v", ext.LeaseExpires, old)
		}
		// The other lease lapses as usual...
		d := x.receiveOne(q, wait)
		x.notBefore(time.Now(), leasedAfter.Add(vt), "unextended message redelivered")
		if string(d.Body) != "left alone" || d.Attempt != 2 {
			t.Fatalf("redelivered %q attempt %d, want %q attempt 2", d.Body, d.Attempt, "left alone")
		}
		x.ack(d)
		// ...while the extended one stays leased past its original expiry.
		x.expectNone(q, "while the lease is extended")
		if err := ext.Ack(x.ctx(wait)); err != nil {
			t.Fatalf("Ack under the extended lease: %v", err)
		}
		x.wantErr(ext.Extend(x.ctx(wait), time.Second), engines.ErrLeaseLost, "Extend after Ack")
		if s := x.stats(q); s.ExpiredLeaseTotal != 1 {
			t.Fatalf("ExpiredLeaseTotal = %d, want 1 (only the unextended lease)", s.ExpiredLeaseTotal)
		}
	})
	t.Run("shorter", func(t *testing.T) {
		x := &env{t: t, e: x.e, caps: x.caps}
		q := x.open(engines.QueueSpec{VisibilityTimeout: time.Hour})
		x.enqueue(q, engines.Message{Body: []byte("1")}, engines.Message{Body: []byte("2")}, engines.Message{Body: []byte("3")})
		ds := x.receiveN(q, 3, wait)
		d := ds[len(ds)-1]
		extendAt := time.Now()
		// Extend sets the lease to now+by, so it can also bring it forward;
		// the redelivery below comes long before the hour-long original.
		if err := d.Extend(x.ctx(wait), 100*time.Millisecond); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		if d.LeaseExpires.After(extendAt.Add(time.Minute)) {
			t.Fatalf("LeaseExpires after Extend(100ms) = %v, want about %v", d.LeaseExpires, extendAt.Add(100*time.Millisecond))
		}
		d2 := x.receiveOne(q, wait)
		x.notBefore(time.Now(), extendAt.Add(100*time.Millisecond), "redelivered after the shortened lease")
		if d2.ID != d.ID {
			t.Fatalf("redelivered %q, want %q", d2.ID, d.ID)
		}
		x.ackAll([]engines.Delivery{ds[0], ds[1], d2})
	})
}

func testAttemptsCounted(t *testing.T, x *env) {
	x.need(x.caps.DeadLetter, "DeadLetter")
	q := x.open(engines.QueueSpec{})
	x.enqueue(q, engines.Message{Body: []byte("flaky")})
	for i := 1; i <= 3; i++ {
		d := x.receiveOne(q, wait)
		if d.Attempt != i || d.Failures != i-1 {
			t.Fatalf("delivery %d: Attempt, Failures = %d, %d; want %d, %d", i, d.Attempt, d.Failures, i, i-1)
		}
		if err := d.Nack(x.ctx(wait), 0, fmt.Sprintf("failure %d", i)); err != nil {
			t.Fatalf("Nack %d: %v", i, err)
		}
	}
	d := x.receiveOne(q, wait)
	if d.Attempt != 4 || d.Failures != 3 {
		t.Fatalf("after 3 nacks: Attempt, Failures = %d, %d; want 4, 3", d.Attempt, d.Failures)
	}
	x.ack(d)
	if s := x.stats(q); s.NackedTotal != 3 || s.AckedTotal != 1 || s.DeadLetteredTotal != 0 {
		t.Fatalf("Stats: NackedTotal=%d AckedTotal=%d DeadLetteredTotal=%d, want 3, 1, 0", s.NackedTotal, s.AckedTotal, s.DeadLetteredTotal)
	}
}

// checkDeadLetter receives one message from the dead-letter queue and checks
// it carries the original and the dead-letter attributes, and the attempts
// and failures it had in its source queue: a dead letter keeps its history
// (shown by Peek as it was; its delivery from the dead-letter queue is the
// next attempt).
func (x *env) checkDeadLetter(dlq engines.Queue, want engines.Message, source string, reasonHas string, attempts, failures int) engines.Delivery {
	x.t.Helper()
	if p, ok := dlq.(engines.Peeker); ok {
		x.waitReady(dlq, 1)
		ps, err := p.Peek(x.ctx(wait), 1)
		if err != nil || len(ps) != 1 {
			x.t.Fatalf("Peek of the dead-letter queue = %d messages, %v; want 1", len(ps), err)
		}
		if ps[0].Attempt != attempts || ps[0].Failures != failures {
			x.t.Errorf("peeked dead letter: Attempt %d, Failures %d; want %d, %d (its history in the source queue)", ps[0].Attempt, ps[0].Failures, attempts, failures)
		}
	}
	d := x.receiveOne(dlq, wait)
	if d.Attempt != attempts+1 || d.Failures != failures {
		x.t.Errorf("dead letter delivered with Attempt %d, Failures %d; want %d, %d (its history in the source queue, then this delivery)", d.Attempt, d.Failures, attempts+1, failures)
	}
	if !bytes.Equal(d.Body, want.Body) {
		x.t.Fatalf("dead letter body = %q, want %q", d.Body, want.Body)
	}
	for k, v := range want.Attributes {
		if d.Attributes[k] != v {
			x.t.Errorf("dead letter attribute %q = %q, want %q", k, d.Attributes[k], v)
		}
	}
	if d.ContentType != want.ContentType || d.CorrelationID != want.CorrelationID {
		x.t.Errorf("dead letter ContentType, CorrelationID = %q, %q; want %q, %q", d.ContentType, d.CorrelationID, want.ContentType, want.CorrelationID)
	}
	if got := d.Attributes[engines.AttrDeadLetterSource]; got != source {
		x.t.Errorf("dead letter %s = %q, want %q", engines.AttrDeadLetterSource, got, source)
	}
	reason := d.Attributes[engines.AttrDeadLetterReason]
	if reason == "" || !strings.Contains(reason, reasonHas) {
		x.t.Errorf("dead letter %s = %q, want a reason containing %q", engines.AttrDeadLetterReason, reason, reasonHas)
	}
	if d.Queue != dlq.Name() {
		x.t.Errorf("dead letter Queue = %q, want %q", d.Queue, dlq.Name())
	}
	return d
}

func testLeaseExpiryDeadLetters(t *testing.T, x *env) {
	x.need(x.caps.Visibility, "Visibility")
	x.need(x.caps.DeadLetter, "DeadLetter")
	name := x.name()
	q := x.open(engines.QueueSpec{Name: name, VisibilityTimeout: 80 * time.Millisecond, MaxAttempts: 2, DeadLetter: name + "-dlq"})
	msg := engines.Message{Body: []byte("crashes its consumer"), Attributes: map[string]string{"a": "1"}}
	x.enqueue(q, msg)
	// Two consumers that "crash": they take the message and never settle.
	d1 := x.receiveOne(q, wait)
	d2 := x.receiveOne(q, wait)
	if d2.Attempt != 2 || d2.Failures != 1 {
		t.Fatalf("second delivery: Attempt, Failures = %d, %d; want 2, 1", d2.Attempt, d2.Failures)
	}
	// The second expiry is the second failure: the message must go to the
	// dead-letter queue, never back to q.
	dlq := x.open(engines.QueueSpec{Name: name + "-dlq"})
	dl := x.checkDeadLetter(dlq, msg, name, "", 2, 2)
	x.ack(dl)
	x.expectNone(q, "source queue after the message was dead-lettered")
	for i, d := range []engines.Delivery{d1, d2} {
		x.wantErr(d.Ack(x.ctx(wait)), engines.ErrLeaseLost, fmt.Sprintf("Ack by crashed consumer %d", i+1))
	}
	s := x.stats(q)
	if s.ExpiredLeaseTotal != 2 || s.DeadLetteredTotal != 1 || s.Depth() != 0 {
		t.Fatalf("Stats: ExpiredLeaseTotal=%d DeadLetteredTotal=%d Depth=%d, want 2, 1, 0", s.ExpiredLeaseTotal, s.DeadLetteredTotal, s.Depth())
	}
}

// testLeaseExpiryBacksOff: an expired lease is a failure only the engine
// sees (its holder died or hung), so the engine applies the queue's retry
// policy to it as the runtime does to a nack: the message waits
// Retry.Delay(failures before this one) after the expiry, which grows with
// each expiry, and the failure is counted once. At MaxAttempts it is
// dead-lettered at once, with no delay first.
//
// No engine has a clock the suite can move, so, as everywhere in the
// suite, "not before" is proved by recorded times (a correct engine cannot
// fail it however loaded the machine) and "eventually" is bounded only by
// the generous wait. An engine that redelivers at once misses the first
// bound by the whole initial delay; one that waits Delay(0) every time
// misses the second by half of it.
func testLeaseExpiryBacksOff(t *testing.T, x *env) {
	x.need(x.caps.Visibility, "Visibility")
	x.need(x.caps.Delay, "Delay")
	x.need(x.caps.DeadLetter, "DeadLetter")
	const (
		vt      = 80 * time.Millisecond
		initial = 200 * time.Millisecond // Delay(0); Delay(1) is twice it
	)
	retry := engines.RetryPolicy{Initial: initial, Max: time.Minute, Multiplier: 2}
	t.Run("backs_off", func(t *testing.T) {
		x := &env{t: t, e: x.e, caps: x.caps}
		q := x.open(engines.QueueSpec{VisibilityTimeout: vt, Retry: retry})
		msgs := x.enqueue(q, engines.Message{Body: []byte("hangs its consumer")})
		leasedAfter := time.Now()
		d1 := x.receiveOne(q, wait)
		// The holder "hangs": the lease runs out, then the backoff; this
		// Receive blocks through both.
		d2 := x.receiveOne(q, wait)
		x.notBefore(time.Now(), leasedAfter.Add(vt+initial), "first expired lease redelivered")
		// Each delivery reports the failures before it: one per expiry.
		if d2.ID != msgs[0].ID || d2.Attempt != 2 || d2.Failures != 1 {
			t.Fatalf("after one lease expiry: %q Attempt %d Failures %d; want %q, 2, 1", d2.ID, d2.Attempt, d2.Failures, msgs[0].ID)
		}
		// The second expiry follows one failure, so it waits Delay(1).
		// LeaseExpires is never later than the engine's own deadline.
		d3 := x.receiveOne(q, wait)
		x.notBefore(time.Now(), d2.LeaseExpires.Add(2*initial), "second expired lease redelivered")
		if d3.Attempt != 3 || d3.Failures != 2 {
			t.Fatalf("after two lease expiries: Attempt %d Failures %d; want 3, 2", d3.Attempt, d3.Failures)
		}
		for i, d := range []engines.Delivery{d1, d2} {
			x.wantErr(d.Ack(x.ctx(wait)), engines.ErrLeaseLost, fmt.Sprintf("Ack by hung consumer %d", i+1))
		}
		// d3's short lease may itself run out on a stalled machine, so the
		// exact count is checked in waits_delayed, where nothing can
		// expire after the one lease; here only that expiries are not
		// counted as nacks.
		if s := x.stats(q); s.ExpiredLeaseTotal < 2 || s.NackedTotal != 0 {
			t.Fatalf("Stats: ExpiredLeaseTotal=%d NackedTotal=%d, want at least 2 and 0", s.ExpiredLeaseTotal, s.NackedTotal)
		}
	})
	t.Run("waits_delayed", func(t *testing.T) {
		x := &env{t: t, e: x.e, caps: x.caps}
		// A backoff far beyond the wait: once the expiry is counted, the
		// message is delayed, not ready and not leased.
		q := x.open(engines.QueueSpec{VisibilityTimeout: vt, Retry: engines.RetryPolicy{Initial: time.Hour, Max: time.Hour, Multiplier: 2}})
		x.enqueue(q, engines.Message{Body: []byte("hangs its consumer")})
		d := x.receiveOne(q, wait)
		s := x.waitStats(q, "the lease to expire", func(s engines.Stats) bool { return s.ExpiredLeaseTotal > 0 })
		if s.ExpiredLeaseTotal != 1 || s.Delayed != 1 || s.Ready != 0 || s.InFlight != 0 {
			t.Fatalf("after the lease expired: ExpiredLeaseTotal=%d Delayed=%d Ready=%d InFlight=%d; want 1, 1, 0, 0", s.ExpiredLeaseTotal, s.Delayed, s.Ready, s.InFlight)
		}
		x.expectNone(q, "an expired lease during its retry delay")
		x.wantErr(d.Ack(x.ctx(wait)), engines.ErrLeaseLost, "Ack by the hung consumer")
	})
	t.Run("max_attempts_dead_letters_at_once", func(t *testing.T) {
		x := &env{t: t, e: x.e, caps: x.caps}
		name := x.name()
		// A backoff far beyond the wait: the dead letter must not wait it.
		q := x.open(engines.QueueSpec{Name: name, VisibilityTimeout: vt, MaxAttempts: 1, DeadLetter: name + "-dlq",
			Retry: engines.RetryPolicy{Initial: time.Hour, Max: time.Hour, Multiplier: 2}})
		msg := engines.Message{Body: []byte("hangs once, too many")}
		x.enqueue(q, msg)
		d := x.receiveOne(q, wait)
		dlq := x.open(engines.QueueSpec{Name: name + "-dlq"})
		x.ack(x.checkDeadLetter(dlq, msg, name, "", 1, 1))
		x.wantErr(d.Ack(x.ctx(wait)), engines.ErrLeaseLost, "Ack by the hung consumer")
		// An engine may count the move once the dead letter is placed.
		s := x.waitStats(q, "the dead letter to be counted", func(s engines.Stats) bool { return s.DeadLetteredTotal > 0 })
		if s.ExpiredLeaseTotal != 1 || s.DeadLetteredTotal != 1 || s.Depth() != 0 {
			t.Fatalf("Stats: ExpiredLeaseTotal=%d DeadLetteredTotal=%d Depth=%d, want 1, 1, 0", s.ExpiredLeaseTotal, s.DeadLetteredTotal, s.Depth())
		}
	})
}

func testMaxAttemptsDeadLetter(t *testing.T, x *env) {
	x.need(x.caps.DeadLetter, "DeadLetter")
	name := x.name()
	q := x.open(engines.QueueSpec{Name: name, MaxAttempts: 3, DeadLetter: name + "-dlq"})
	attrs := map[string]string{"tenant": "acme", "trace": "t-1"}
	msg := engines.Message{Body: []byte("poison"), Attributes: attrs, ContentType: "application/octet-stream", CorrelationID: "c-9"}
	x.enqueue(q, msg)
	for i := 1; i <= 3; i++ {
		d := x.receiveOne(q, wait)
		if d.Attempt != i {
			t.Fatalf("delivery %d has Attempt %d", i, d.Attempt)
		}
		if err := d.Nack(x.ctx(wait), 0, "handler exploded"); err != nil {
			t.Fatalf("Nack %d: %v", i, err)
		}
	}
	// The dead-letter queue is opened only now: the move must have created it.
	dlq := x.open(engines.QueueSpec{Name: name + "-dlq"})
	x.ack(x.checkDeadLetter(dlq, msg, name, "", 3, 3))
	x.expectNone(q, "source queue after MaxAttempts nacks")
	if len(attrs) != 2 {
		t.Errorf("the engine modified the enqueuer's attribute map: %v", attrs)
	}
	s := x.stats(q)
	if s.DeadLetteredTotal != 1 || s.NackedTotal != 3 || s.Depth() != 0 {
		t.Fatalf("Stats: DeadLetteredTotal=%d NackedTotal=%d Depth=%d, want 1, 3, 0", s.DeadLetteredTotal, s.NackedTotal, s.Depth())
	}
}

func testExplicitDeadLetter(t *testing.T, x *env) {
	x.need(x.caps.DeadLetter, "DeadLetter")
	name := x.name()
	q := x.open(engines.QueueSpec{Name: name, MaxAttempts: 5, DeadLetter: name + "-dlq"})
	dlq := x.open(engines.QueueSpec{Name: name + "-dlq"})
	msg := engines.Message{Body: []byte("malformed"), Attributes: map[string]string{"k": "v"}}
	x.enqueue(q, msg)
	d := x.receiveOne(q, wait)
	if err := d.DeadLetter(x.ctx(wait), "schema violation"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	x.ack(x.checkDeadLetter(dlq, msg, name, "schema violation", 1, 0))
	x.expectNone(q, "source queue after an explicit dead-letter")
	if s := x.stats(q); s.DeadLetteredTotal != 1 || s.NackedTotal != 0 || s.Depth() != 0 {
		t.Fatalf("Stats: DeadLetteredTotal=%d NackedTotal=%d Depth=%d, want 1, 0, 0", s.DeadLetteredTotal, s.NackedTotal, s.Depth())
	}
}

func testDeadLetterWithoutQueue(t *testing.T, x *env) {
	x.need(x.caps.DeadLetter, "DeadLetter")
	q := x.open(engines.QueueSpec{MaxAttempts: 1})
	x.enqueue(q, engines.Message{Body: []byte("a")}, engines.Message{Body: []byte("b")})
	ds := x.receiveN(q, 2, wait)
	if err := ds[0].Nack(x.ctx(wait), 0, "boom"); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	if err := ds[1].DeadLetter(x.ctx(wait), "bad"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	x.expectNone(q, "after dropping both messages")
	if s := x.stats(q); s.DeadLetteredTotal != 2 || s.Depth() != 0 {
		t.Fatalf("Stats: DeadLetteredTotal=%d Depth=%d, want 2, 0 (dropped and counted)", s.DeadLetteredTotal, s.Depth())
	}
}

func testRequeueNoFailure(t *testing.T, x *env) {
	x.need(x.caps.DeadLetter, "DeadLetter")
	name := x.name()
	q := x.open(engines.QueueSpec{Name: name, MaxAttempts: 2, DeadLetter: name + "-dlq"})
	msgs := x.enqueue(q, engines.Message{Body: []byte("not yet")})
	const requeues = 5 // well past MaxAttempts
	var requeuedAt time.Time
	var delay time.Duration
	for i := 1; i <= requeues; i++ {
		d := x.receiveOne(q, wait)
		if delay > 0 {
			x.notBefore(time.Now(), requeuedAt.Add(delay), "message requeued with a delay redelivered")
		}
		if d.ID != msgs[0].ID || d.Attempt != i || d.Failures != 0 {
			t.Fatalf("delivery %d: ID %q Attempt %d Failures %d; want %q, %d, 0", i, d.ID, d.Attempt, d.Failures, msgs[0].ID, i)
		}
		delay = 0
		if x.caps.Delay && i == 1 {
			delay = 100 * time.Millisecond
		}
		requeuedAt = time.Now()
		if err := d.Requeue(x.ctx(wait), delay); err != nil {
			t.Fatalf("Requeue %d: %v", i, err)
		}
	}
	d := x.receiveOne(q, wait)
	if d.Attempt != requeues+1 || d.Failures != 0 {
		t.Fatalf("final delivery: Attempt %d Failures %d, want %d, 0", d.Attempt, d.Failures, requeues+1)
	}
	x.ack(d)
	if s := x.stats(q); s.DeadLetteredTotal != 0 || s.NackedTotal != 0 || s.AckedTotal != 1 {
		t.Fatalf("Stats: DeadLetteredTotal=%d NackedTotal=%d AckedTotal=%d, want 0, 0, 1", s.DeadLetteredTotal, s.NackedTotal, s.AckedTotal)
	}
}

func testPriority(t *testing.T, x *env) {
	x.need(x.caps.Priority, "Priority")
	q := x.open(engines.QueueSpec{VisibilityTimeout: time.Minute})
	m := func(body string, p uint8) engines.Message { return engines.Message{Body: []byte(body), Priority: p} }
	// Low priorities first and in a separate call, so arrival order alone
	// would give the wrong answer.
	x.enqueue(q, m("a0", 0), m("b0", 0))
	x.enqueue(q, m("c5", 5), m("d9", 9), m("e5", 5), m("f0", 0), m("g255", engines.MaxPriority))
	want := []string{"g255", "d9", "c5", "e5", "a0", "b0", "f0"}
	var got []string
	for len(got) < len(want) {
		// One at a time, so an engine that orders only within a batch fails.
		d := x.receiveOne(q, wait)
		got = append(got, string(d.Body))
		x.ack(d)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("delivery order %v, want %v", got, want)
	}
}

func testTTL(t *testing.T, x *env) {
	x.need(x.caps.TTL, "TTL")
	spec := engines.QueueSpec{}
	if x.caps.DeadLetter {
		spec.Name = x.name()
		spec.DeadLetter = spec.Name + "-dlq"
	}
	q := x.open(spec)
	const ttl = 60 * time.Millisecond
	enqueuedAt := time.Now()
	x.enqueue(q,
		engines.Message{Body: []byte("short-lived"), TTL: ttl},
		engines.Message{Body: []byte("long-lived"), TTL: time.Hour},
	)
	// Let the short TTL run out, by the engine's own clock, before anyone
	// receives.
	x.outlive(3 * ttl)
	ds, err := x.receive(x.ctx(wait), q, 10)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	for _, d := range ds {
		if string(d.Body) == "short-lived" {
			t.Fatalf("message delivered %v after enqueue despite a %v TTL", time.Since(enqueuedAt), ttl)
		}
	}
	if len(ds) != 1 || string(ds[0].Body) != "long-lived" {
		t.Fatalf("received %d deliveries, want only the long-lived one", len(ds))
	}
	x.ack(ds[0])
	x.expectNone(q, "after the TTL expired")
	if s := x.stats(q); s.ExpiredTotal != 1 || s.DeadLetteredTotal != 0 || s.Depth() != 0 {
		t.Fatalf("Stats: ExpiredTotal=%d DeadLetteredTotal=%d Depth=%d, want 1, 0, 0", s.ExpiredTotal, s.DeadLetteredTotal, s.Depth())
	}
	if spec.DeadLetter != "" {
		x.expectNone(x.open(engines.QueueSpec{Name: spec.DeadLetter}), "dead-letter queue after a TTL expiry")
	}
}

func testDedup(t *testing.T, x *env) {
	x.need(x.caps.Dedup, "Dedup")
	q := x.open(engines.QueueSpec{})
	x.enqueue(q, engines.Message{Body: []byte("first"), DedupID: "order-1"})
	// A repeat in a later call, and one inside a single batch.
	x.enqueue(q, engines.Message{Body: []byte("again"), DedupID: "order-1"})
	x.enqueue(q,
		engines.Message{Body: []byte("other"), DedupID: "order-2"},
		engines.Message{Body: []byte("other again"), DedupID: "order-2"},
		engines.Message{Body: []byte("no dedup id")},
	)
	ds := x.receiveN(q, 3, wait)
	var bodies []string
	for _, d := range ds {
		bodies = append(bodies, string(d.Body))
	}
	if strings.Join(bodies, ",") != "first,other,no dedup id" {
		t.Fatalf("received %q, want first, other, no dedup id", bodies)
	}
	x.ackAll(ds)
	x.expectNone(q, "after the deduplicated messages")
	if s := x.stats(q); s.DuplicateTotal != 2 || s.EnqueuedTotal != 3 {
		t.Fatalf("Stats: DuplicateTotal=%d EnqueuedTotal=%d, want 2, 3", s.DuplicateTotal, s.EnqueuedTotal)
	}
}

func testConcurrentReceivers(t *testing.T, x *env) {
	const (
		total     = 2000
		producers = 2
		receivers = 8
		batch     = 50
	)
	// Leases far longer than the test, so "exactly once" is what the engine
	// promises rather than luck.
	q := x.open(engines.QueueSpec{VisibilityTimeout: 5 * time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Receivers stop on their own context once everything arrived. The
	// producers and acks keep ctx: an engine may hand a message out before
	// the Enqueue that wrote it returns (disk with sync = "batch" waits for
	// its group's fsync), and cancelling that wait would fail the test.
	recvCtx, stop := context.WithCancel(ctx)
	defer stop()

	var (
		mu       sync.Mutex
		seen     = make(map[string]int, total)
		received atomic.Int64
		wg       sync.WaitGroup
	)
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < total/producers; i += batch {
				msgs := make([]engines.Message, batch)
				for j := range msgs {
					msgs[j].Body = fmt.Appendf(nil, "p%d-%d", p, i+j)
				}
				if err := q.Enqueue(ctx, msgs...); err != nil {
					t.Errorf("producer %d: Enqueue: %v", p, err)
					return
				}
			}
		}()
	}
	for r := 0; r < receivers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ds, err := engines.ReceiveN(recvCtx, q, 16)
				if err != nil {
					if recvCtx.Err() == nil || received.Load() < total {
						t.Errorf("receiver %d: Receive: %v", r, err)
					}
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[string(d.Body)]++
				}
				mu.Unlock()
				for _, d := range ds {
					if err := d.Ack(ctx); err != nil {
						t.Errorf("receiver %d: Ack: %v", r, err)
					}
				}
				if received.Add(int64(len(ds))) >= total {
					stop() // everything arrived: release the receivers still blocked
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(seen) != total {
		t.Fatalf("received %d distinct messages, want %d", len(seen), total)
	}
	for body, n := range seen {
		if n != 1 {
			t.Fatalf("message %s delivered %d times", body, n)
		}
	}
	if s := x.stats(q); s.Depth() != 0 || s.AckedTotal != total || s.EnqueuedTotal != total {
		t.Fatalf("Stats: Depth=%d AckedTotal=%d EnqueuedTotal=%d, want 0, %d, %d", s.Depth(), s.AckedTotal, s.EnqueuedTotal, total, total)
	}
}

func testEmptyBody(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	x.enqueue(q, engines.Message{}, engines.Message{Body: []byte{}}, engines.Message{Attributes: map[string]string{}})
	ds := x.receiveN(q, 3, wait)
	for i, d := range ds {
		if len(d.Body) != 0 {
			t.Errorf("delivery %d: body %q, want empty", i, d.Body)
		}
		if len(d.Attributes) != 0 {
			t.Errorf("delivery %d: attributes %v, want none", i, d.Attributes)
		}
	}
	x.ackAll(ds)
}

func testLargeBody(t *testing.T, x *env) {
	size := 1 << 20
	if limit := x.caps.MaxMessageSize; limit > 0 && limit < size {
		size = limit
	}
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i*7 + i>>8) // a pattern that catches shifted or truncated copies
	}
	q := x.open(engines.QueueSpec{})
	x.enqueue(q, engines.Message{Body: body})
	d := x.receiveOne(q, wait)
	if !bytes.Equal(d.Body, body) {
		t.Fatalf("%d-byte body came back as %d bytes, different", size, len(d.Body))
	}
	x.ack(d)

	if limit := x.caps.MaxMessageSize; limit > 0 {
		err := q.Enqueue(x.ctx(wait), engines.Message{Body: make([]byte, limit+1)})
		x.wantErr(err, engines.ErrTooLarge, fmt.Sprintf("Enqueue of %d bytes with MaxMessageSize %d", limit+1, limit))
		x.expectNone(q, "after a rejected oversize message")
	}
}

func testReceiveBlocks(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})

	// With nothing to deliver, Receive waits out its context rather than
	// returning early or empty.
	const short = 150 * time.Millisecond
	start := time.Now()
	ds, err := x.receive(x.ctx(short), q, 1)
	if err == nil {
		t.Fatalf("Receive on an empty queue returned %d deliveries", len(ds))
	}
	x.wantErr(err, context.DeadlineExceeded, "Receive on an empty queue")
	x.notBefore(time.Now(), start.Add(short), "Receive on an empty queue returned")

	// A message enqueued while a receiver waits wakes it.
	base := x.blocked(q)
	started, done := receiveAsync(x.ctx(wait), q, 5)
	<-started
	x.letBlock(q, base+1)
	msgs := x.enqueue(q, engines.Message{Body: []byte("wake up")})
	r := x.await(done, "waiting receiver after an enqueue")
	if r.err != nil {
		t.Fatalf("blocked Receive: %v", r.err)
	}
	if len(r.ds) != 1 || r.ds[0].ID != msgs[0].ID {
		t.Fatalf("blocked Receive got %d deliveries, want the one enqueued", len(r.ds))
	}
	x.ack(r.ds[0])
}

func testReceiveCancel(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := x.blocked(q)
	started, done := receiveAsync(ctx, q, 1)
	<-started
	x.letBlock(q, base+1)
	cancelledAt := time.Now()
	cancel()
	r := x.await(done, "Receive after cancellation")
	x.wantErr(r.err, context.Canceled, "Receive after cancellation")
	if late := r.at.Sub(cancelledAt); late > 2*time.Second {
		t.Fatalf("Receive returned %v after its context was cancelled", late)
	}
	// The cancelled receiver must not have consumed a later message.
	x.enqueue(q, engines.Message{Body: []byte("after cancel")})
	x.ack(x.receiveOne(q, wait))
}

// testReceiveCancelRace cancels receives while they run, many times, on a
// queue of ready messages. However each race goes, a Receive
// either returns what it leased (the caller's to settle) or leases
// nothing: no message may end up leased to nobody, hidden for a whole
// lease and then counted as a failure. So afterwards every message is
// ready at once, and its Attempt counts only the deliveries returned.
func testReceiveCancelRace(t *testing.T, x *env) {
	// A lease longer than the test: a message leased to nobody stays hidden.
	q := x.open(engines.QueueSpec{VisibilityTimeout: time.Hour})
	const total, rounds = 16, 100
	msgs := make([]engines.Message, total)
	for i := range msgs {
		msgs[i].Body = []byte(fmt.Sprint(i))
	}
	x.enqueue(q, msgs...)
	returned := map[string]int{}
	buf := make([]engines.Delivery, 4)
	for round := range rounds {
		// The cancellation lands at a point that moves through the first
		// 10ms of the call, a few database round trips: the test must pass
		// whichever way each race goes, so the timer only spreads them.
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(time.Duration(round)*100*time.Microsecond, cancel)
		n, err := q.Receive(ctx, buf)
		timer.Stop()
		cancel()
		if err != nil && (n != 0 || !errors.Is(err, context.Canceled)) {
			t.Fatalf("round %d: cancelled Receive returned %d, %v; want deliveries or context.Canceled alone", round, n, err)
		}
		for i := range buf[:n] {
			returned[buf[i].ID]++
			if err := buf[i].Requeue(x.ctx(wait), 0); err != nil {
				t.Fatalf("round %d: Requeue %s: %v", round, buf[i].ID, err)
			}
		}
	}
	if s := x.stats(q); s.Ready != total || s.InFlight != 0 {
		t.Fatalf("after %d cancelled receives: Ready %d InFlight %d, want %d, 0", rounds, s.Ready, s.InFlight, total)
	}
	got := x.receiveN(q, total, wait)
	for _, d := range got {
		if x.caps.DeadLetter && (d.Attempt != returned[d.ID]+1 || d.Failures != 0) {
			t.Errorf("%s: Attempt %d Failures %d after being returned %d times, want %d, 0", d.ID, d.Attempt, d.Failures, returned[d.ID], returned[d.ID]+1)
		}
	}
	x.ackAll(got)
}

func testCloseQueue(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	other := x.open(engines.QueueSpec{Name: q.Name()})
	base := x.blocked(q)
	started, done := receiveAsync(x.ctx(wait), q, 1)
	<-started
	x.letBlock(q, base+1)
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := x.await(done, "Receive blocked at Close")
	x.wantErr(r.err, engines.ErrClosed, "Receive blocked when its queue handle closed")
	x.wantErr(q.Enqueue(x.ctx(wait), engines.Message{Body: []byte("x")}), engines.ErrClosed, "Enqueue after Close")
	_, err := engines.ReceiveN(x.ctx(wait), q, 1)
	x.wantErr(err, engines.ErrClosed, "Receive after Close")
	_, err = q.Stats(x.ctx(wait))
	x.wantErr(err, engines.ErrClosed, "Stats after Close")
	if err := q.Close(); err != nil && !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	// Another handle on the same queue is unaffected.
	x.enqueue(other, engines.Message{Body: []byte("still open")})
	x.ack(x.receiveOne(other, wait))
}

func testCloseEngine(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	base := x.blocked(q)
	started, done := receiveAsync(x.ctx(wait), q, 1)
	<-started
	x.letBlock(q, base+1)
	if err := x.e.Close(); err != nil {
		t.Fatalf("engine Close: %v", err)
	}
	r := x.await(done, "Receive blocked at engine Close")
	x.wantErr(r.err, engines.ErrClosed, "Receive blocked when the engine closed")
	x.wantErr(q.Enqueue(x.ctx(wait), engines.Message{Body: []byte("x")}), engines.ErrClosed, "Enqueue after engine Close")
	_, err := engines.ReceiveN(x.ctx(wait), q, 1)
	x.wantErr(err, engines.ErrClosed, "Receive after engine Close")
	_, err = x.e.Open(x.ctx(wait), engines.QueueSpec{Name: x.name()})
	x.wantErr(err, engines.ErrClosed, "Open after engine Close")
}

func testDoubleSettle(t *testing.T, x *env) {
	var zero engines.Delivery
	x.wantErr(zero.Ack(x.ctx(wait)), engines.ErrNotLeased, "Ack of a Delivery not from an engine")

	type step struct {
		name string
		do   func(ctx context.Context, d *engines.Delivery) error
		back bool // the message returns to the queue
		cap  bool
		capN string
	}
	steps := []step{
		{"ack", func(ctx context.Context, d *engines.Delivery) error { return d.Ack(ctx) }, false, true, ""},
		{"nack", func(ctx context.Context, d *engines.Delivery) error { return d.Nack(ctx, 0, "x") }, true, true, ""},
		{"requeue", func(ctx context.Context, d *engines.Delivery) error { return d.Requeue(ctx, 0) }, true, true, ""},
		{"dead_letter", func(ctx context.Context, d *engines.Delivery) error { return d.DeadLetter(ctx, "x") }, false, x.caps.DeadLetter, "DeadLetter"},
	}
	for _, first := range steps {
		t.Run(first.name, func(t *testing.T) {
			x := &env{t: t, e: x.e, caps: x.caps}
			x.need(first.cap, first.capN)
			q := x.open(engines.QueueSpec{VisibilityTimeout: time.Minute})
			x.enqueue(q, engines.Message{Body: []byte(first.name)})
			d := x.receiveOne(q, wait)
			if err := first.do(x.ctx(wait), &d); err != nil {
				t.Fatalf("first %s: %v", first.name, err)
			}
			check := func(when string) {
				t.Helper()
				for _, second := range steps[:3] {
					x.wantErr(second.do(x.ctx(wait), &d), engines.ErrLeaseLost, fmt.Sprintf("%s after %s (%s)", second.name, first.name, when))
				}
				if x.caps.Visibility {
					x.wantErr(d.Extend(x.ctx(wait), time.Minute), engines.ErrLeaseLost, fmt.Sprintf("extend after %s (%s)", first.name, when))
				}
			}
			check("before redelivery")
			if !first.back {
				x.expectNone(q, "after a final settlement")
				return
			}
			// The stale delivery must not match the new lease either, and
			// its failed settles must not have disturbed the new holder.
			d2 := x.receiveOne(q, wait)
			check("after redelivery")
			x.ack(d2)
		})
	}
}

func testStats(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{VisibilityTimeout: time.Minute})
	want := engines.Stats{}
	check := func(step string) {
		t.Helper()
		got := x.stats(q)
		if got != want {
			t.Fatalf("after %s:\n got %+v\nwant %+v", step, got, want)
		}
	}
	check("nothing")

	msgs := make([]engines.Message, 5)
	for i := range msgs {
		msgs[i].Body = []byte{byte('a' + i)}
	}
	if x.caps.Delay {
		msgs = append(msgs, engines.Message{Body: []byte("later"), Delay: time.Hour}, engines.Message{Body: []byte("later"), Delay: time.Hour})
		want.Delayed = 2
	}
	x.enqueue(q, msgs...)
	want.Ready, want.EnqueuedTotal = 5, int64(len(msgs))
	check("enqueueing")

	ds := x.receiveN(q, 3, wait)
	want.Ready, want.InFlight = 2, 3
	check("receiving 3")

	x.ack(ds[0])
	want.InFlight, want.AckedTotal = 2, 1
	check("one ack")

	if err := ds[1].Nack(x.ctx(wait), 0, "x"); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	want.InFlight, want.Ready, want.NackedTotal = 1, 3, 1
	check("one nack")

	if err := ds[2].Requeue(x.ctx(wait), 0); err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	want.InFlight, want.Ready = 0, 4
	check("one requeue")

	x.ackAll(x.receiveN(q, 4, wait))
	want.Ready, want.AckedTotal = 0, 5
	check("acking the rest")
	if d := x.stats(q).Depth(); d != want.Delayed {
		t.Fatalf("Depth = %d, want %d", d, want.Delayed)
	}
}

func testOrdered(t *testing.T, x *env) {
	x.need(x.caps.Ordering, "Ordering")
	q := x.open(engines.QueueSpec{Ordered: true, VisibilityTimeout: time.Minute})
	m := func(key string, n int) engines.Message {
		return engines.Message{Body: fmt.Appendf(nil, "%s%d", key, n), OrderingKey: key}
	}
	x.enqueue(q, m("A", 1), m("B", 1), m("A", 2), m("C", 1), m("B", 2), m("A", 3))

	// Different keys are in flight together, but only each key's head.
	heads := x.receiveN(q, 3, wait)
	got := map[string]engines.Delivery{}
	for _, d := range heads {
		if _, dup := got[d.OrderingKey]; dup {
			t.Fatalf("two messages of key %s in flight at once", d.OrderingKey)
		}
		got[d.OrderingKey] = d
	}
	for _, k := range []string{"A", "B", "C"} {
		if d, ok := got[k]; !ok || string(d.Body) != k+"1" {
			t.Fatalf("in flight: %v; want A1, B1 and C1", bodies(heads))
		}
	}
	x.expectNone(q, "while every key has a message in flight")

	// A retried head keeps its place: A2 must not overtake A1.
	a1held := got["A"]
	if err := a1held.Nack(x.ctx(wait), 0, "retry"); err != nil {
		t.Fatalf("Nack A1: %v", err)
	}
	a1 := x.receiveOne(q, wait)
	if string(a1.Body) != "A1" {
		t.Fatalf("after nacking A1 received %s, want A1 again", a1.Body)
	}
	x.ack(a1)
	want := func(body string) engines.Delivery {
		t.Helper()
		d := x.receiveOne(q, wait)
		if string(d.Body) != body {
			t.Fatalf("received %s, want %s", d.Body, body)
		}
		return d
	}
	a2 := want("A2")
	x.ack(got["B"])
	b2 := want("B2")
	x.ack(a2)
	a3 := want("A3")
	x.ackAll([]engines.Delivery{got["C"], b2, a3})
	x.expectNone(q, "after every key drained")
}

// testOrderedHeadLeaseExpires: the head of a key whose holder died keeps
// its place. Its lease expiring is a failure like a nack, so the head is
// redelivered, before the next message of its key, and its successor is
// never in flight together with it; other keys are not held up meanwhile.
func testOrderedHeadLeaseExpires(t *testing.T, x *env) {
	x.need(x.caps.Ordering, "Ordering")
	x.need(x.caps.Visibility, "Visibility")
	// Leases far longer than the test, and A1's alone shortened, so a
	// stalled machine cannot make any other lease lapse and muddle what is
	// redelivered below.
	q := x.open(engines.QueueSpec{Ordered: true, VisibilityTimeout: time.Hour})
	m := func(body, key string) engines.Message { return engines.Message{Body: []byte(body), OrderingKey: key} }
	x.enqueue(q, m("A1", "A"), m("A2", "A"), m("B1", "B"))
	heads := x.receiveN(q, 2, wait)
	var a1 engines.Delivery
	for _, d := range heads {
		switch string(d.Body) {
		case "A1":
			a1 = d // its holder "dies": never settled
		case "B1":
			defer x.ack(d)
		default:
			t.Fatalf("first deliveries %v; want the heads A1 and B1", bodies(heads))
		}
	}
	const vt = 100 * time.Millisecond
	shortenedAt := time.Now()
	if err := a1.Extend(x.ctx(wait), vt); err != nil {
		t.Fatalf("Extend(%v) of A1: %v", vt, err)
	}
	// This blocks through A1's lease: A2 must not be handed out while A1 is
	// neither settled nor expired, nor instead of A1 once it expired.
	again := x.receiveOne(q, wait)
	x.notBefore(time.Now(), shortenedAt.Add(vt), "next delivery of key A")
	if string(again.Body) != "A1" {
		t.Fatalf("after the head's lease expired received %s, want A1 again before A2", again.Body)
	}
	if x.caps.DeadLetter && (again.Attempt != 2 || again.Failures != 1) {
		t.Fatalf("A1 after its lease expired: Attempt %d Failures %d, want 2, 1", again.Attempt, again.Failures)
	}
	x.expectNone(q, "while the redelivered head of key A is in flight")
	x.wantErr(a1.Ack(x.ctx(wait)), engines.ErrLeaseLost, "Ack by the holder of A1's expired lease")
	x.ack(again)
	a2 := x.receiveOne(q, wait)
	if string(a2.Body) != "A2" || a2.Attempt != 1 {
		t.Fatalf("after acking A1 received %s attempt %d, want A2 attempt 1", a2.Body, a2.Attempt)
	}
	x.ack(a2)
	if s := x.stats(q); s.ExpiredLeaseTotal != 1 || s.AckedTotal != 2 {
		t.Fatalf("Stats: ExpiredLeaseTotal=%d AckedTotal=%d, want 1, 2", s.ExpiredLeaseTotal, s.AckedTotal)
	}
}

// testTTLNotAppliedOnceDelivered: TTL bounds how long a message may wait
// to be delivered, not how long its handling takes. Once a message has
// been delivered it is no longer subject to its TTL: it is not dropped
// while leased, an Ack after the TTL has passed succeeds, and a nack or a
// lapsed lease redelivers it rather than expiring it.
func testTTLNotAppliedOnceDelivered(t *testing.T, x *env) {
	x.need(x.caps.TTL, "TTL")
	x.need(x.caps.Visibility, "Visibility")
	var (
		q  engines.Queue
		ds []engines.Delivery
	)
	// A machine that stalls for longer than the TTL between the enqueue
	// and the lease expires the messages before delivery, legitimately:
	// that is not what this case is about, so it starts again on a fresh
	// queue with a longer TTL. Only the TTL's passing after delivery is
	// under test.
	ttl := 100 * time.Millisecond
	for {
		q = x.open(engines.QueueSpec{VisibilityTimeout: time.Minute})
		x.enqueue(q,
			engines.Message{Body: []byte("acked late"), TTL: ttl},
			engines.Message{Body: []byte("nacked late"), TTL: ttl},
			engines.Message{Body: []byte("lapsed late"), TTL: ttl},
		)
		var expired bool
		ds, expired = x.receiveUnlessExpired(q, 3)
		if !expired {
			break
		}
		x.ackAll(ds)
		if ttl *= 4; ttl > wait {
			t.Fatalf("messages with a %v TTL keep expiring before they are leased", ttl/4)
		}
	}
	byBody := map[string]*engines.Delivery{}
	for i := range ds {
		byBody[string(ds[i].Body)] = &ds[i]
	}
	x.outlive(3 * ttl)
	if s := x.stats(q); s.InFlight != 3 || s.ExpiredTotal != 0 {
		t.Fatalf("Stats after the TTL passed: InFlight=%d ExpiredTotal=%d, want 3 still leased, none expired", s.InFlight, s.ExpiredTotal)
	}
	x.ack(*byBody["acked late"])
	if err := byBody["nacked late"].Nack(x.ctx(wait), 0, "retry after the TTL"); err != nil {
		t.Fatalf("Nack after the TTL: %v", err)
	}
	if err := byBody["lapsed late"].Extend(x.ctx(wait), 50*time.Millisecond); err != nil {
		t.Fatalf("Extend after the TTL: %v", err)
	}
	got := x.receiveN(q, 2, wait)
	if b := bodies(got); !((b[0] == "nacked late" && b[1] == "lapsed late") || (b[0] == "lapsed late" && b[1] == "nacked late")) {
		t.Fatalf("redelivered %v, want the nacked and the lapsed message", b)
	}
	x.ackAll(got)
	if s := x.stats(q); s.ExpiredTotal != 0 || s.AckedTotal != 3 || s.Depth() != 0 {
		t.Fatalf("Stats: ExpiredTotal=%d AckedTotal=%d Depth=%d, want 0, 3, 0", s.ExpiredTotal, s.AckedTotal, s.Depth())
	}
}

// receiveUnlessExpired receives n messages from q, or stops early and
// says so when the queue reports a message expired (its TTL ran out before
// it was leased). It fails the test when neither happens within wait.
func (x *env) receiveUnlessExpired(q engines.Queue, n int) ([]engines.Delivery, bool) {
	x.t.Helper()
	deadline := time.Now().Add(wait)
	var got []engines.Delivery
	for len(got) < n {
		ds, err := x.receive(x.ctx(quiet), q, n-len(got))
		switch {
		case err == nil:
			got = append(got, ds...)
			continue
		case !errors.Is(err, context.DeadlineExceeded):
			x.t.Fatalf("Receive from %s after %d of %d deliveries: %v", q.Name(), len(got), n, err)
		}
		if x.stats(q).ExpiredTotal > 0 {
			return got, true
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("Receive from %s: %d of %d deliveries in %v, none expired", q.Name(), len(got), n, wait)
		}
	}
	return got, false
}

// outlive returns once at least d has passed by the engine's own clock:
// with the Delay capability it receives a probe message delayed by d from
// a queue of its own (so an engine whose clock is elsewhere, a database
// server, is waited for too); otherwise it sleeps, as the passing of a TTL
// has no event of its own.
func (x *env) outlive(d time.Duration) {
	x.t.Helper()
	if !x.caps.Delay {
		// Without Delay the engine offers no clock event, and the suite
		// cannot inject one into every engine: wait the window out.
		time.Sleep(d)
		return
	}
	probe := x.open(engines.QueueSpec{})
	x.enqueue(probe, engines.Message{Body: []byte("clock"), Delay: d})
	x.ack(x.receiveOne(probe, wait))
}

func bodies(ds []engines.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Body)
	}
	return out
}

// testInvalid runs each malformed request as its own subtest, so one
// engine's wrong answer to one case does not hide its answers to the rest.
// Cases marked tolerable are rejected by some engines and accepted by
// others; a rejection must still be recognisable (wrap ErrInvalid).
func testInvalid(t *testing.T, x *env) {
	type invalidCase struct {
		name string
		fn   func(t *testing.T, x *env)
	}
	// openSpec checks Open(spec): ErrInvalid when strict, and otherwise
	// either success or ErrInvalid.
	openSpec := func(spec func(name string) engines.QueueSpec, strict bool) func(t *testing.T, x *env) {
		return func(t *testing.T, x *env) {
			s := spec(x.name())
			q, err := x.e.Open(x.ctx(wait), s)
			if err == nil {
				_ = q.Close()
				if strict {
					t.Fatalf("Open(%+v) succeeded, want ErrInvalid", s)
				}
				return
			}
			x.wantErr(err, engines.ErrInvalid, fmt.Sprintf("Open(%+v)", s))
		}
	}
	// enqueueMsg checks that Enqueue(m) either stores m or rejects it
	// recognisably (with want) and stores nothing.
	enqueueMsg := func(m engines.Message, want error, strict bool) func(t *testing.T, x *env) {
		return func(t *testing.T, x *env) {
			q := x.open(engines.QueueSpec{VisibilityTimeout: time.Minute})
			err := q.Enqueue(x.ctx(wait), m)
			if err == nil {
				if strict {
					t.Fatalf("Enqueue succeeded, want an error wrapping %v", want)
				}
				return
			}
			x.wantErr(err, want, "Enqueue")
			if s := x.stats(q); s.Depth() != 0 || s.EnqueuedTotal != 0 {
				t.Fatalf("after a rejected Enqueue: Depth=%d EnqueuedTotal=%d, want 0, 0", s.Depth(), s.EnqueuedTotal)
			}
		}
	}
	// leased returns a queue holding one message leased for a minute.
	leased := func(x *env) engines.Delivery {
		q := x.open(engines.QueueSpec{VisibilityTimeout: time.Minute})
		x.enqueue(q, engines.Message{Body: []byte("x")})
		return x.receiveOne(q, wait)
	}
	cases := []invalidCase{
		{"open_empty_name", openSpec(func(string) engines.QueueSpec { return engines.QueueSpec{} }, true)},
		{"open_negative_visibility_timeout", openSpec(func(n string) engines.QueueSpec {
			return engines.QueueSpec{Name: n, VisibilityTimeout: -time.Second}
		}, false)},
		{"open_negative_max_attempts", openSpec(func(n string) engines.QueueSpec { return engines.QueueSpec{Name: n, MaxAttempts: -1} }, false)},
		{"open_dead_letter_to_itself", openSpec(func(n string) engines.QueueSpec { return engines.QueueSpec{Name: n, DeadLetter: n} }, false)},
		{"open_ordered_without_capability", func(t *testing.T, x *env) {
			if x.caps.Ordering {
				t.Skip("engine declares capability Ordering present")
			}
			_, err := x.e.Open(x.ctx(wait), engines.QueueSpec{Name: x.name(), Ordered: true})
			x.wantErr(err, engines.ErrUnsupported, "Open(Ordered) on an engine without Ordering")
		}},
		{"receive_empty_buffer", func(t *testing.T, x *env) {
			q := x.open(engines.QueueSpec{})
			if n, err := q.Receive(x.ctx(quiet), nil); n != 0 || !errors.Is(err, engines.ErrInvalid) {
				t.Fatalf("Receive(empty buffer) = %d, %v; want 0, ErrInvalid", n, err)
			}
		}},
		{"enqueue_oversized", func(t *testing.T, x *env) {
			limit := x.caps.MaxMessageSize
			if limit <= 0 {
				t.Skip("engine declares no MaxMessageSize")
			}
			enqueueMsg(engines.Message{Body: make([]byte, limit+1)}, engines.ErrTooLarge, true)(t, x)
		}},
		{"enqueue_negative_delay", enqueueMsg(engines.Message{Body: []byte("x"), Delay: -time.Second}, engines.ErrInvalid, false)},
		{"enqueue_negative_ttl", enqueueMsg(engines.Message{Body: []byte("x"), TTL: -time.Second}, engines.ErrInvalid, false)},
		{"settle_unknown_verdict", func(t *testing.T, x *env) {
			d := leased(x)
			if err := d.Settle(x.ctx(wait), engines.Settlement{Verdict: engines.Verdict(200)}); err != nil {
				x.wantErr(err, engines.ErrInvalid, "Settle with an unknown verdict")
				// A rejected settlement must leave the lease as it was.
				if err := d.Ack(x.ctx(wait)); err != nil {
					t.Fatalf("Ack after a rejected unknown verdict: %v", err)
				}
			}
		}},
		{"extend_not_positive", func(t *testing.T, x *env) {
			x.need(x.caps.Visibility, "Visibility")
			d := leased(x)
			was := d.LeaseExpires
			for _, by := range []time.Duration{0, -time.Second} {
				x.wantErr(d.Extend(x.ctx(wait), by), engines.ErrInvalid, fmt.Sprintf("Extend(%v)", by))
				if !d.LeaseExpires.Equal(was) {
					t.Fatalf("a rejected Extend(%v) moved LeaseExpires from %v to %v", by, was, d.LeaseExpires)
				}
			}
			// The rejected calls left the lease held.
			x.ack(d)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(t, &env{t: t, e: x.e, caps: x.caps})
		})
	}
}

// testFarFuture gives every duration the largest value it can hold: an
// engine that adds it to "now" without saturating wraps into the past and
// delivers at once what should wait, practically, forever.
func testFarFuture(t *testing.T, x *env) {
	x.need(x.caps.Delay && x.caps.TTL && x.caps.Visibility, "Delay, TTL and Visibility")
	const forever = time.Duration(math.MaxInt64)
	q := x.open(engines.QueueSpec{})
	x.enqueue(q, engines.Message{Body: []byte("parked"), Delay: forever})
	x.expectNone(q, "a message delayed forever was delivered")

	x.enqueue(q, engines.Message{Body: []byte("kept"), TTL: forever})
	kept := x.receiveOne(q, wait)
	if string(kept.Body) != "kept" {
		t.Fatalf("got %q, want the message whose TTL is forever", kept.Body)
	}
	if err := kept.Extend(x.ctx(wait), forever); err != nil {
		t.Fatalf("Extend forever: %v", err)
	}
	if !kept.LeaseExpires.After(time.Now().Add(24 * time.Hour)) {
		t.Fatalf("lease extended forever expires at %v", kept.LeaseExpires)
	}
	x.expectNone(q, "a message whose lease was extended forever was redelivered")
	if err := kept.Nack(x.ctx(wait), forever, "later, much later"); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	x.expectNone(q, "a message nacked with a delay of forever was redelivered")
	if s := x.stats(q); s.Delayed != 2 || s.ExpiredTotal != 0 {
		t.Fatalf("Stats: Delayed=%d ExpiredTotal=%d, want 2 delayed and nothing expired", s.Delayed, s.ExpiredTotal)
	}
}
