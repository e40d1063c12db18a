//go:build linux

package posixmq_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq"
	"github.com/qrun-dev/qrun/engines/posixmq/mqtest"
)

const wait = 10 * time.Second

func ctxWait(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, e *posixmq.Engine, spec engines.QueueSpec) (engines.Queue, string) {
	t.Helper()
	q, err := e.Open(ctxWait(t), spec)
	if err != nil {
		t.Fatalf("Open(%+v): %v", spec, err)
	}
	t.Cleanup(func() { _ = q.Close() })
	kname, err := e.KernelName(spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	return q, kname
}

func receiveOne(t *testing.T, q engines.Queue) engines.Delivery {
	t.Helper()
	ds, err := engines.ReceiveN(ctxWait(t), q, 1)
	if err != nil {
		t.Fatalf("Receive from %s: %v", q.Name(), err)
	}
	return ds[0]
}

func expectNone(t *testing.T, q engines.Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if ds, err := engines.ReceiveN(ctx, q, 10); err == nil {
		t.Fatalf("unexpected delivery %q", ds[0].Body)
	}
}

// TestInteropCToQrun: a C program's mq_send messages reach a qrun receiver
// as their exact bytes, in the kernel's priority order, whatever they
// contain, including bytes that begin like qrun's envelope.
func TestInteropCToQrun(t *testing.T) {
	t.Parallel()
	client := mqtest.Client(t)
	e := newEngine(t, posixmq.Options{MessageSize: 256})
	q, kname := open(t, e, engines.QueueSpec{Name: "c_to_qrun", VisibilityTimeout: time.Minute})

	// A receiver already waiting is woken by the other process's send.
	got := make(chan []engines.Delivery, 1)
	go func() {
		ds, err := engines.ReceiveN(ctxWait(t), q, 1)
		if err != nil {
			t.Errorf("waiting Receive: %v", err)
		}
		got <- ds
	}()
	mqtest.Send(t, client, kname, mqtest.Msg{Prio: 2, Body: []byte("first")})
	first := <-got
	if len(first) != 1 || string(first[0].Body) != "first" || first[0].Priority != 2 {
		t.Fatalf("waiting receiver got %v", first)
	}

	full := bytes.Repeat([]byte{0xab}, 256) // a whole kernel message: no room for an envelope
	lookalike := append([]byte(posixmqMagic), bytes.Repeat([]byte{0}, 60)...)
	sent := []mqtest.Msg{
		{Prio: 3, Body: []byte("hello from C")},
		{Prio: 0, Body: lookalike},
		{Prio: 1000, Body: []byte("urgent")}, // above qrun's 255: delivered first, reported as 255
		{Prio: 3, Body: nil},
		{Prio: 0, Body: full},
		{Prio: 3, Body: []byte{0, 0xf1, 'q', 'r', 'n', 0}},
	}
	mqtest.Send(t, client, kname, sent...)
	wantOrder := []int{2, 0, 3, 5, 1, 4}
	ids := map[string]bool{first[0].ID: true}
	var held engines.Delivery
	for i, k := range wantOrder {
		d := receiveOne(t, q)
		w := sent[k]
		if !bytes.Equal(d.Body, w.Body) {
			t.Fatalf("delivery %d: body %x, want %x", i, d.Body, w.Body)
		}
		if wantPrio := min(w.Prio, engines.MaxPriority); uint(d.Priority) != wantPrio {
			t.Fatalf("delivery %d (%q): priority %d, want %d", i, d.Body, d.Priority, wantPrio)
		}
		if d.ID == "" || ids[d.ID] {
			t.Fatalf("delivery %d: ID %q empty or repeated", i, d.ID)
		}
		ids[d.ID] = true
		if d.Attempt != 1 || len(d.Attributes) != 0 {
			t.Fatalf("delivery %d: attempt %d attributes %v; want 1 and none", i, d.Attempt, d.Attributes)
		}
		if i == 1 {
			held = d
			continue
		}
		if err := d.Ack(ctxWait(t)); err != nil {
			t.Fatal(err)
		}
	}
	// A nacked raw message comes back from memory with its ID and count.
	if err := held.Nack(ctxWait(t), 0, "again"); err != nil {
		t.Fatal(err)
	}
	again := receiveOne(t, q)
	if again.ID != held.ID || again.Attempt != 2 || !bytes.Equal(again.Body, held.Body) {
		t.Fatalf("redelivery: ID %q attempt %d body %q; want %q, 2, %q", again.ID, again.Attempt, again.Body, held.ID, held.Body)
	}
	_ = again.Ack(ctxWait(t))
	if err := first[0].Ack(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	expectNone(t, q)
}

const posixmqMagic = "\xF1qrn"

// TestInteropQrunToC: with format raw, a C program's mq_receive reads
// exactly what qrun published, in the kernel's priority order, and
// messages from C and from qrun in one queue order together.
func TestInteropQrunToC(t *testing.T) {
	t.Parallel()
	client := mqtest.Client(t)
	e := newEngine(t, posixmq.Options{Format: posixmq.Raw, MessageSize: 128})
	q, kname := open(t, e, engines.QueueSpec{Name: "qrun_to_c"})
	msgs := []engines.Message{
		{Body: []byte("a"), Priority: 0},
		{Body: []byte("b"), Priority: 9},
		{Body: []byte{0, 0xf1, 0xff, 0}, Priority: 0},
		{Body: nil, Priority: 9},
		{Body: []byte("c"), Priority: 255},
		{Body: bytes.Repeat([]byte("z"), 128), Priority: 1},
	}
	if err := q.Enqueue(ctxWait(t), msgs...); err != nil {
		t.Fatal(err)
	}
	mqtest.Send(t, client, kname, mqtest.Msg{Prio: 5, Body: []byte("from C")})
	got := mqtest.Recv(t, client, kname, 7)
	want := []mqtest.Msg{
		{Prio: 255, Body: []byte("c")}, {Prio: 9, Body: []byte("b")}, {Prio: 9}, {Prio: 5, Body: []byte("from C")},
		{Prio: 1, Body: msgs[5].Body}, {Prio: 0, Body: []byte("a")}, {Prio: 0, Body: msgs[2].Body},
	}
	if len(got) != len(want) {
		t.Fatalf("C received %v, want %v", got, want)
	}
	for i := range want {
		if got[i].Prio != want[i].Prio || !bytes.Equal(got[i].Body, want[i].Body) {
			t.Fatalf("C received %v\nwant %v", got, want)
		}
	}
	if s, err := q.Stats(ctxWait(t)); err != nil || s.Depth() != 0 || s.EnqueuedTotal != int64(len(msgs)) {
		t.Fatalf("Stats = %+v, %v; want empty after C took everything, %d enqueued", s, err, len(msgs))
	}
}

// TestInteropFramedReadableByC: a framed message is still an ordinary
// message to C, whose body sits after the documented header.
func TestInteropFramedReadableByC(t *testing.T) {
	t.Parallel()
	client := mqtest.Client(t)
	e := newEngine(t, posixmq.Options{})
	q, kname := open(t, e, engines.QueueSpec{Name: "framed_to_c"})
	if err := q.Enqueue(ctxWait(t), engines.Message{Body: []byte("payload"), Priority: 4, Attributes: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	got := mqtest.Recv(t, client, kname, 1)
	if len(got) != 1 || got[0].Prio != 4 || !bytes.HasPrefix(got[0].Body, []byte(posixmqMagic)) || !bytes.HasSuffix(got[0].Body, []byte("payload")) {
		t.Fatalf("C received %v; want the envelope's magic, then the body, at priority 4", got)
	}
}
