package nats_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/nats"
	"github.com/qrun-dev/qrun/engines/nats/natstest"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func enqueueN(t *testing.T, q engines.Queue, n int, tag string) map[string]bool {
	t.Helper()
	want := map[string]bool{}
	for i := 0; i < n; i += 50 {
		msgs := make([]engines.Message, 0, 50)
		for j := i; j < min(i+50, n); j++ {
			id := fmt.Sprintf("%s-%d", tag, j)
			msgs = append(msgs, engines.Message{ID: id, Body: []byte(id)})
			want[id] = true
		}
		if err := q.Enqueue(ctxFor(t, 30*time.Second), msgs...); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	return want
}

// TestTwoEnginesShareWork: two engines (two qrun nodes) on one queue split
// its messages between them through the shared durable consumer, and no
// message is handled twice while no lease expires.
func TestTwoEnginesShareWork(t *testing.T) {
	s := natstest.Need(t, srv)
	prefix := s.Prefix()
	a := newEngine(t, prefix, nats.Options{})
	b := newEngine(t, prefix, nats.Options{})
	spec := engines.QueueSpec{Name: "shared", VisibilityTimeout: time.Minute}
	qa, err := a.Open(ctxFor(t, 30*time.Second), spec)
	if err != nil {
		t.Fatal(err)
	}
	qb, err := b.Open(ctxFor(t, 30*time.Second), spec)
	if err != nil {
		t.Fatal(err)
	}
	const n = 600
	want := enqueueN(t, qa, n, "m")
	// Each node takes a batch and holds it: the other is handed other
	// messages, never one the first holds.
	first, err := engines.ReceiveN(ctxFor(t, 10*time.Second), qa, 16)
	if err != nil {
		t.Fatal(err)
	}
	second, err := engines.ReceiveN(ctxFor(t, 10*time.Second), qb, 16)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, d := range first {
		held[d.ID] = true
	}
	for _, d := range second {
		if held[d.ID] {
			t.Errorf("%s handed to both nodes at once", d.ID)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	for _, ds := range [][]engines.Delivery{first, second} {
		for i := range ds {
			seen[ds[i].ID]++
			if err := ds[i].Ack(ctxFor(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	per := map[string]int{"a": len(first), "b": len(second)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for name, q := range map[string]engines.Queue{"a": qa, "b": qb} {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]engines.Delivery, 16)
				for {
					k, err := q.Receive(ctx, buf)
					if err != nil {
						return
					}
					mu.Lock()
					for _, d := range buf[:k] {
						seen[d.ID]++
						per[name]++
					}
					done := len(seen) == n
					mu.Unlock()
					for i := range buf[:k] {
						if err := buf[i].Ack(context.Background()); err != nil {
							t.Errorf("Ack: %v", err)
						}
					}
					if done {
						cancel()
					}
				}
			}()
		}
	}
	wg.Wait()
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("%s handled %d times, want once", id, seen[id])
		}
	}
	t.Logf("work split %v", per)
	if st, err := qa.Stats(ctxFor(t, 10*time.Second)); err != nil || st.Depth() != 0 || st.AckedTotal != n {
		t.Errorf("Stats = %+v, %v; want empty with %d acked", st, err, n)
	}
}

// TestBrokerRestart kills nats-server in the middle of a consuming run and
// starts it again: the engine reconnects with backoff, logs the outage
// once and the recovery once, and every message enqueued before is
// handled, none lost.
func TestBrokerRestart(t *testing.T) {
	s := natstest.Need(t, srv)
	core, logs := observer.New(zapcore.InfoLevel)
	e := newEngine(t, "", nats.Options{Logger: zap.New(core)})
	q, err := e.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "outage", VisibilityTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	want := enqueueN(t, q, n, "o")
	acked := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	buf := make([]engines.Delivery, 10)
	restarted := false
	for len(acked) < n {
		k, err := q.Receive(ctx, buf)
		if err != nil {
			t.Fatalf("Receive after %d acks: %v", len(acked), err)
		}
		for i := range buf[:k] {
			err := buf[i].Ack(ctx)
			switch {
			case err == nil:
				acked[buf[i].ID] = true
			case errors.Is(err, engines.ErrLeaseLost):
			default:
				// Lost with the connection: the message comes back.
				t.Logf("Ack during the outage: %v", err)
			}
		}
		if !restarted && len(acked) >= n/4 {
			restarted = true
			s.Restart(t)
		}
	}
	for id := range want {
		if !acked[id] {
			t.Errorf("%s never handled", id)
		}
	}
	// The server keeps its consumer's acks in memory and writes them
	// out now and then: those it took just before it was killed come
	// back (at least once), and are handled again until the queue is
	// empty.
	for {
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if st.Depth() == 0 {
			break
		}
		k, err := q.Receive(ctx, buf)
		if err != nil {
			t.Fatalf("draining %+v: %v", st, err)
		}
		for i := range buf[:k] {
			if !want[buf[i].ID] {
				t.Errorf("unknown message %s", buf[i].ID)
			}
			_ = buf[i].Ack(ctx)
		}
	}
	lost := logs.FilterMessageSnippet("nats connection lost").Len()
	back := logs.FilterMessageSnippet("nats connection recovered").Len()
	if lost != 1 || back != 1 {
		t.Errorf("logged %d outage and %d recovery lines, want 1 and 1", lost, back)
	}
}

// TestProducerOnly is `qrun send`: an engine opened only to enqueue makes
// no state bucket and no consumer, and a consuming engine receives what
// it sent.
func TestProducerOnly(t *testing.T) {
	s := natstest.Need(t, srv)
	prefix := s.Prefix()
	p := newEngine(t, prefix, nats.Options{Producer: true})
	pq, err := p.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "sent"})
	if err != nil {
		t.Fatal(err)
	}
	msg := engines.Message{Body: []byte("hello"), Attributes: map[string]string{"k": "v"}, ContentType: "text/plain"}
	if err := pq.Enqueue(ctxFor(t, 30*time.Second), msg); err != nil {
		t.Fatal(err)
	}
	if _, err := pq.Receive(ctxFor(t, time.Second), make([]engines.Delivery, 1)); !errors.Is(err, engines.ErrUnsupported) {
		t.Errorf("Receive on a producer = %v, want ErrUnsupported", err)
	}
	c := newEngine(t, prefix, nats.Options{})
	cq, err := c.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "sent"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctxFor(t, 10*time.Second), cq, 1)
	if err != nil || string(ds[0].Body) != "hello" || ds[0].Attributes["k"] != "v" || ds[0].ContentType != "text/plain" {
		t.Fatalf("received %+v, %v", ds, err)
	}
	if err := ds[0].Ack(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestSpecKeptOnServer: a node attaching to a queue by name alone, such
// as one restarted, finds the settings another node opened it with.
func TestSpecKeptOnServer(t *testing.T) {
	s := natstest.Need(t, srv)
	prefix := s.Prefix()
	a := newEngine(t, prefix, nats.Options{})
	spec := engines.QueueSpec{Name: "kept", VisibilityTimeout: 150 * time.Millisecond, MaxAttempts: 1, DeadLetter: "kept_dlq"}
	if _, err := a.Open(ctxFor(t, 30*time.Second), spec); err != nil {
		t.Fatal(err)
	}
	b := newEngine(t, prefix, nats.Options{})
	q, err := b.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctxFor(t, 30*time.Second), engines.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctxFor(t, 10*time.Second), q, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := ds[0].LeaseExpires.Sub(time.Now()); got > time.Second {
		t.Errorf("lease of %v, want the stored 150ms", got)
	}
	// MaxAttempts 1 and the stored dead-letter queue: one nack moves it.
	if err := ds[0].Nack(ctxFor(t, 10*time.Second), 0, "no"); err != nil {
		t.Fatal(err)
	}
	dlq, err := b.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "kept_dlq"})
	if err != nil {
		t.Fatal(err)
	}
	dl, err := engines.ReceiveN(ctxFor(t, 10*time.Second), dlq, 1)
	if err != nil || dl[0].Attributes[engines.AttrDeadLetterSource] != "kept" {
		t.Fatalf("dead letter %+v, %v", dl, err)
	}
}

// TestExtendBeyondServerAckWait: a lease extended far past the server's
// ack wait stays leased, because the holder restarts the server's ack
// wait (+WPI) while it holds it.
func TestExtendBeyondServerAckWait(t *testing.T) {
	// The server's ack wait is 2s whatever the visibility timeout; the
	// holder restarts it every second.
	e := newEngine(t, "", nats.Options{MaxAckWait: 2 * time.Second})
	q, err := e.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "long", VisibilityTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctxFor(t, 30*time.Second), engines.Message{Body: []byte("slow")}); err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctxFor(t, 10*time.Second), q, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds[0].Extend(ctxFor(t, 10*time.Second), 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	// Three server ack waits: without the refreshes the server would
	// have handed the message out again.
	if got, err := engines.ReceiveN(ctxFor(t, 6*time.Second), q, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive during the extended lease = %v, %v; want nothing", got, err)
	}
	if err := ds[0].Ack(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("Ack under the extended lease: %v", err)
	}
}

// TestDeadNodeLeaseReturns: the leases of a node that died without
// closing come back after the server's ack wait, capped by max_ack_wait
// however long the visibility timeout, and count one failure.
func TestDeadNodeLeaseReturns(t *testing.T) {
	s := natstest.Need(t, srv)
	prefix := s.Prefix()
	spec := engines.QueueSpec{Name: "orphan", VisibilityTimeout: time.Hour}
	dead := newEngine(t, prefix, nats.Options{MaxAckWait: time.Second})
	dq, err := dead.Open(ctxFor(t, 30*time.Second), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := dq.Enqueue(ctxFor(t, 30*time.Second), engines.Message{Body: []byte("orphan")}); err != nil {
		t.Fatal(err)
	}
	if _, err := engines.ReceiveN(ctxFor(t, 10*time.Second), dq, 1); err != nil {
		t.Fatal(err)
	}
	dead.Conn().Close() // dies: no Close, no lease handed back
	live := newEngine(t, prefix, nats.Options{MaxAckWait: time.Second})
	q, err := live.Open(ctxFor(t, 30*time.Second), engines.QueueSpec{Name: "orphan"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctxFor(t, 20*time.Second), q, 1)
	if err != nil {
		t.Fatalf("the dead node's lease did not come back: %v", err)
	}
	if ds[0].Attempt != 2 || ds[0].Failures != 1 {
		t.Errorf("Attempt %d Failures %d, want 2, 1 (the expired lease is a failure)", ds[0].Attempt, ds[0].Failures)
	}
	if err := ds[0].Ack(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}
