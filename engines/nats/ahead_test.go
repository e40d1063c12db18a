package nats_test

import (
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/nats"
	"github.com/qrun-dev/qrun/engines/nats/natstest"
)

// ackBatch acks ds through StartSettle and waits for them as the
// dispatcher does.
func ackBatch(t *testing.T, q engines.Queue, ds []engines.Delivery) {
	t.Helper()
	gs := q.(engines.GroupSettler)
	ps := make([]engines.Pending, len(ds))
	for i := range ds {
		p, err := gs.StartSettle(ctxFor(t, 10*time.Second), &ds[i], engines.Settlement{Verdict: engines.Ack})
		if err != nil {
			t.Fatalf("StartSettle: %v", err)
		}
		ps[i] = p
	}
	for _, p := range ps {
		if err := p.Wait(ctxFor(t, 10*time.Second)); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
}

// TestAckConfirmedByNextFetch: a busy queue's acks are confirmed by the
// fetch of its next batch, with no PING of their own, and that batch is
// what the next Receive returns. A node killed right after the Wait
// (no Close, nothing flushed) loses none of the acks: another node never
// sees those messages again, while it does get the batch fetched ahead
// (after the server's ack wait, as any dead node's leases).
func TestAckConfirmedByNextFetch(t *testing.T) {
	s := natstest.Need(t, srv)
	prefix := s.Prefix()
	spec := engines.QueueSpec{Name: "ahead", VisibilityTimeout: time.Hour}
	e := newEngine(t, prefix, nats.Options{MaxAckWait: time.Second})
	q, err := e.Open(ctxFor(t, 30*time.Second), spec)
	if err != nil {
		t.Fatal(err)
	}
	want := enqueueN(t, q, 30, "m")
	buf := make([]engines.Delivery, 10)
	n, err := q.Receive(ctxFor(t, 10*time.Second), buf)
	if err != nil || n != 10 {
		t.Fatalf("Receive = %d, %v; want 10", n, err)
	}
	acked := map[string]bool{}
	for _, d := range buf[:n] {
		acked[d.Message.ID] = true
	}
	pings := e.Pings()
	ackBatch(t, q, buf[:n])
	if got := e.Pings() - pings; got != 0 {
		t.Errorf("%d PING round trips confirmed the acks; want 0 (the next fetch confirms them)", got)
	}
	// The second batch was fetched by the Wait: Receive hands it over
	// with its lease started when it arrived.
	n, err = q.Receive(ctxFor(t, 10*time.Second), buf)
	if err != nil || n != 10 {
		t.Fatalf("second Receive = %d, %v; want 10", n, err)
	}
	for _, d := range buf[:n] {
		if acked[d.Message.ID] || d.Attempt != 1 {
			t.Errorf("second batch has %s attempt %d; want a new message, attempt 1", d.Message.ID, d.Attempt)
		}
		acked[d.Message.ID] = true
	}
	ackBatch(t, q, buf[:n]) // fetches the third batch ahead
	if got := e.Pings() - pings; got != 0 {
		t.Errorf("%d PING round trips; want 0", got)
	}
	e.Conn().Close() // killed: no Close, leases and the batch ahead not handed back

	live := newEngine(t, prefix, nats.Options{MaxAckWait: time.Second})
	lq, err := live.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "ahead"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctxFor(t, 20*time.Second), lq, 10)
	if err != nil {
		t.Fatalf("the dead node's batch fetched ahead did not come back: %v", err)
	}
	for _, d := range ds {
		if acked[d.Message.ID] {
			t.Errorf("%s was acked before the kill and came back", d.Message.ID)
		}
		if !want[d.Message.ID] {
			t.Errorf("unknown message %s", d.Message.ID)
		}
	}
	ackBatch(t, lq, ds)
}

// TestAheadHandedBackAsNoAttempt: a batch fetched ahead that no Receive
// takes within a quarter of the lease, or that is still there at Close,
// goes back to the server at once and counts no attempt and no failure.
func TestAheadHandedBackAsNoAttempt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		vt    time.Duration
		close bool
	}{
		{"unclaimed", 4 * time.Second, false},
		{"closed", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Need(t, srv)
			prefix := s.Prefix()
			spec := engines.QueueSpec{Name: "back", VisibilityTimeout: tc.vt}
			e := newEngine(t, prefix, nats.Options{})
			q, err := e.Open(ctxFor(t, 30*time.Second), spec)
			if err != nil {
				t.Fatal(err)
			}
			enqueueN(t, q, 10, "m")
			buf := make([]engines.Delivery, 5)
			n, err := q.Receive(ctxFor(t, 10*time.Second), buf)
			if err != nil || n != 5 {
				t.Fatalf("Receive = %d, %v; want 5", n, err)
			}
			ackBatch(t, q, buf[:n]) // the other 5 are fetched ahead
			if tc.close {
				if err := e.Close(); err != nil {
					t.Fatal(err)
				}
				e = newEngine(t, prefix, nats.Options{})
				if q, err = e.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "back"}); err != nil {
					t.Fatal(err)
				}
			} else {
				// Wait (on the server's count, not the clock) until they are back.
				ctx := ctxFor(t, 20*time.Second)
				for {
					st, err := q.Stats(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if st.Ready == 5 && st.InFlight == 0 {
						break
					}
					select {
					case <-ctx.Done():
						t.Fatalf("the batch fetched ahead never came back: %+v", st)
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
			// Well within the server's ack wait (an hour's lease) in the
			// closed case: it must have been handed back, not expired.
			ds, err := engines.ReceiveN(ctxFor(t, 20*time.Second), q, 5)
			if err != nil {
				t.Fatalf("receiving the batch handed back: %v", err)
			}
			for _, d := range ds {
				if d.Attempt != 1 || d.Failures != 0 {
					t.Errorf("%s: attempt %d, failures %d; want 1, 0 (a batch fetched ahead is no attempt)", d.Message.ID, d.Attempt, d.Failures)
				}
			}
			pings := e.Pings()
			ackBatch(t, q, ds)
			if e.Pings() == pings {
				t.Error("the acks of the last batch were confirmed without a PING; an empty fetch cannot confirm them")
			}
			st, err := q.Stats(ctxFor(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if st.ExpiredLeaseTotal != 0 || st.NackedTotal != 0 {
				t.Errorf("Stats: %+v; want no expired lease and no nack", st)
			}
		})
	}
}

// TestAckAcrossReconnectUnconfirmed: an ack published on a connection
// that was lost before its confirmation is not reported applied, even
// though a round trip on the new connection succeeds.
func TestAckAcrossReconnectUnconfirmed(t *testing.T) {
	s := natstest.Need(t, srv)
	e := newEngine(t, "", nats.Options{})
	q, err := e.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "reconnect", VisibilityTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	enqueueN(t, q, 2, "m")
	ds, err := engines.ReceiveN(ctxFor(t, 10*time.Second), q, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := q.(engines.GroupSettler).StartSettle(ctxFor(t, 10*time.Second), &ds[0], engines.Settlement{Verdict: engines.Ack})
	if err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	ctx := ctxFor(t, 30*time.Second)
	for !e.Conn().IsConnected() || e.Conn().Stats().Reconnects == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("never reconnected")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := p.Wait(ctxFor(t, 10*time.Second)); err == nil {
		t.Fatal("Wait of an ack published before the reconnect = nil; want an error (it may be lost)")
	}
}
