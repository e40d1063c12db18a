//go:build linux

package posixmq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq"
	"github.com/qrun-dev/qrun/engines/posixmq/frame"
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

func bodies(n int, prefix string) []engines.Message {
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i].Body = []byte(prefix + strconv.Itoa(i))
	}
	return msgs
}

// TestFullQueueWithoutSpill: with no spill the kernel is the only buffer.
// A send that finds no room waits for it, and gives up at the deadline
// with a timed-out error that says how much of the batch went in.
func TestFullQueueWithoutSpill(t *testing.T) {
	t.Parallel()
	e := newEngine(t, posixmq.Options{MaxMessages: 2, SendTimeout: 100 * time.Millisecond})
	q, _ := open(t, e, engines.QueueSpec{Name: "full", VisibilityTimeout: time.Minute})

	start := time.Now()
	err := q.Enqueue(context.Background(), bodies(3, "m")...)
	if !errors.Is(err, mq.ErrTimeout) || !errors.Is(err, unix.ETIMEDOUT) {
		t.Fatalf("Enqueue of 3 into a 2-deep queue: %v; want mq.ErrTimeout wrapping ETIMEDOUT", err)
	}
	if !strings.Contains(err.Error(), "2 of 3 messages stored") {
		t.Fatalf("error %q does not say how much was stored", err)
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Fatalf("Enqueue gave up after %v, before its send timeout", time.Since(start))
	}
	// A context deadline sooner than the send timeout wins, and is reported.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("x")}); !errors.Is(err, mq.ErrTimeout) {
		t.Fatalf("Enqueue with a short context: %v; want mq.ErrTimeout", err)
	}
	if s, err := q.Stats(ctxWait(t)); err != nil || s.Ready != 2 || s.EnqueuedTotal != 2 {
		t.Fatalf("Stats = %+v, %v; want the 2 messages that fit", s, err)
	}

	// A waiting send goes through as soon as a receiver makes room.
	done := make(chan error, 1)
	go func() { done <- q.Enqueue(ctxWait(t), engines.Message{Body: []byte("m2")}) }()
	d := receiveOne(t, q)
	if string(d.Body) != "m0" {
		t.Fatalf("received %q, want m0", d.Body)
	}
	if err := <-done; err != nil {
		t.Fatalf("blocked Enqueue after room appeared: %v", err)
	}
	for _, want := range []string{"m1", "m2"} {
		if d := receiveOne(t, q); string(d.Body) != want {
			t.Fatalf("received %q, want %q", d.Body, want)
		}
	}
}

// TestSpill: a spill holds what the kernel has no room for, in order, and
// is itself bounded.
func TestSpill(t *testing.T) {
	t.Parallel()
	e := newEngine(t, posixmq.Options{MaxMessages: 2, Spill: 5, SendTimeout: 50 * time.Millisecond})
	q, _ := open(t, e, engines.QueueSpec{Name: "spill", VisibilityTimeout: time.Minute})
	if err := q.Enqueue(ctxWait(t), bodies(7, "s")...); err != nil {
		t.Fatalf("Enqueue of 7 into 2 + a spill of 5: %v", err)
	}
	if s, err := q.Stats(ctxWait(t)); err != nil || s.Ready != 7 {
		t.Fatalf("Stats = %+v, %v; want 7 ready", s, err)
	}
	err := q.Enqueue(ctxWait(t), engines.Message{Body: []byte("s7")}, engines.Message{Body: []byte("s8")})
	if !errors.Is(err, mq.ErrTimeout) || !strings.Contains(err.Error(), "0 of 2") {
		t.Fatalf("Enqueue beyond the spill: %v; want a timeout storing 0 of 2", err)
	}
	for i := range 7 {
		d := receiveOne(t, q)
		if want := "s" + strconv.Itoa(i); string(d.Body) != want {
			t.Fatalf("delivery %d is %q, want %q: the spill must keep FIFO order", i, d.Body, want)
		}
		if err := d.Ack(ctxWait(t)); err != nil {
			t.Fatal(err)
		}
	}
	expectNone(t, q)
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		format posixmq.Format
		msg    engines.Message
		size   int
	}{
		{"framed", posixmq.Framed, engines.Message{Body: make([]byte, 512-posixmq.Overhead+1)}, 512 + 1},
		{"framed with attributes", posixmq.Framed, engines.Message{Body: make([]byte, 400), Attributes: map[string]string{"k": strings.Repeat("v", 200)}}, 0},
		{"raw", posixmq.Raw, engines.Message{Body: make([]byte, 513)}, 513},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEngine(t, posixmq.Options{MessageSize: 512, Format: tt.format})
			q, _ := open(t, e, engines.QueueSpec{Name: "big"})
			// Something fitting first, so the batch is shown to be refused whole.
			err := q.Enqueue(ctxWait(t), engines.Message{Body: []byte("fits")}, tt.msg)
			var tl *mq.TooLargeError
			if !errors.As(err, &tl) || tl.Max != 512 || tl.Size <= 512 || (tt.size != 0 && tl.Size != tt.size) {
				t.Fatalf("Enqueue: %v; want a TooLargeError of %d bytes against 512", err, tt.size)
			}
			if !errors.Is(err, engines.ErrTooLarge) || !errors.Is(err, unix.EMSGSIZE) {
				t.Fatalf("%v does not match ErrTooLarge and EMSGSIZE", err)
			}
			if !strings.Contains(err.Error(), "message 1") {
				t.Fatalf("error %q does not say which message", err)
			}
			expectNone(t, q)
		})
	}
}

func TestUnsupported(t *testing.T) {
	t.Parallel()
	framed := newEngine(t, posixmq.Options{})
	raw := newEngine(t, posixmq.Options{Format: posixmq.Raw})
	fq, _ := open(t, framed, engines.QueueSpec{Name: "u"})
	rq, _ := open(t, raw, engines.QueueSpec{Name: "u"})
	tests := []struct {
		name string
		q    engines.Queue
		msg  engines.Message
		want error
	}{
		{"dedup", fq, engines.Message{DedupID: "d"}, engines.ErrUnsupported},
		{"negative ttl", fq, engines.Message{TTL: -time.Second}, engines.ErrInvalid},
		{"raw attributes", rq, engines.Message{Attributes: map[string]string{"a": "b"}}, engines.ErrUnsupported},
		{"raw id", rq, engines.Message{ID: "mine"}, engines.ErrUnsupported},
		{"raw ttl", rq, engines.Message{TTL: time.Hour}, engines.ErrUnsupported},
		{"raw content type", rq, engines.Message{ContentType: "text/plain"}, engines.ErrUnsupported},
	}
	for _, tt := range tests {
		if err := tt.q.Enqueue(ctxWait(t), tt.msg); !errors.Is(err, tt.want) {
			t.Errorf("%s: Enqueue = %v, want %v", tt.name, err, tt.want)
		}
	}
	if raw.Capabilities().TTL || !framed.Capabilities().TTL {
		t.Errorf("TTL capability: framed %v, raw %v; want true, false", framed.Capabilities().TTL, raw.Capabilities().TTL)
	}
	expectNone(t, fq)
	expectNone(t, rq)
}

func TestNames(t *testing.T) {
	t.Parallel()
	e := newEngine(t, posixmq.Options{Prefix: fmt.Sprintf("qrt_names_%d.", time.Now().UnixNano())})
	for _, bad := range []string{"a/b", "x\x00y", strings.Repeat("n", 256)} {
		if _, err := e.Open(ctxWait(t), engines.QueueSpec{Name: bad}); !errors.Is(err, engines.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid (never truncated or altered)", bad, err)
		}
	}
	// With or without the leading slash, one kernel queue.
	a, ka := open(t, e, engines.QueueSpec{Name: "orders"})
	b, kb := open(t, e, engines.QueueSpec{Name: "/orders"})
	if ka != kb || !strings.HasPrefix(ka, "/qrt_names_") || !strings.HasSuffix(ka, ".orders") {
		t.Fatalf("kernel names %q and %q; want one, with the prefix", ka, kb)
	}
	if err := a.Enqueue(ctxWait(t), engines.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if d := receiveOne(t, b); string(d.Body) != "x" || d.Queue != "/orders" {
		t.Fatalf("through the other spelling: %q on %q", d.Body, d.Queue)
	}
	if _, err := posixmq.New(posixmq.Options{Prefix: "a/b"}); !errors.Is(err, engines.ErrInvalid) {
		t.Errorf("New with a slash in the prefix: %v, want ErrInvalid", err)
	}
}

// TestLimits: asking for a deeper queue than msg_max fails when the engine
// is built, naming the limit, the /proc file and the sysctl.
func TestLimits(t *testing.T) {
	t.Parallel()
	if mq.HasSysResource() {
		t.Skip("this process has CAP_SYS_RESOURCE, which lifts the limit under test")
	}
	lim, err := mq.SystemLimits()
	if err != nil {
		t.Fatal(err)
	}
	_, err = posixmq.New(posixmq.Options{MaxMessages: int(lim.MsgMax) + 1})
	if !errors.Is(err, engines.ErrInvalid) || !errors.Is(err, mq.ErrLimit) {
		t.Fatalf("New(MaxMessages %d): %v; want ErrInvalid and mq.ErrLimit", lim.MsgMax+1, err)
	}
	for _, s := range []string{"/proc/sys/fs/mqueue/msg_max", "sysctl fs.mqueue.msg_max", strconv.FormatInt(lim.MsgMax, 10)} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if _, err := posixmq.New(posixmq.Options{MessageSize: posixmq.Overhead}); !errors.Is(err, engines.ErrInvalid) {
		t.Errorf("New with no room for a body: %v, want ErrInvalid", err)
	}
}

// TestMismatch: an existing queue keeps its attributes; the engine warns or
// refuses, as configured.
func TestMismatch(t *testing.T) {
	t.Parallel()
	prefix := testPrefix()
	existing, err := mq.Open("/"+prefix+"m", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600, &mq.Attr{MaxMsg: 3, MsgSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = existing.Close(); _ = mq.Unlink("/" + prefix + "m") })

	failing := newEngine(t, posixmq.Options{Prefix: prefix, MaxMessages: 5, MessageSize: 512, OnMismatch: posixmq.Fail})
	_, err = failing.Open(ctxWait(t), engines.QueueSpec{Name: "m"})
	if !errors.Is(err, engines.ErrInvalid) || !strings.Contains(err.Error(), "max_messages 3 (configured 5)") || !strings.Contains(err.Error(), "message_size 200 (configured 512)") {
		t.Fatalf("Open with on_mismatch fail: %v", err)
	}

	core, logs := observer.New(zapcore.WarnLevel)
	warning := newEngine(t, posixmq.Options{Prefix: prefix, MaxMessages: 5, MessageSize: 512, Logger: zap.New(core)})
	q, _ := open(t, warning, engines.QueueSpec{Name: "m"})
	if n := logs.FilterMessageSnippet("other attributes").Len(); n != 1 {
		t.Fatalf("%d mismatch warnings logged, want 1: %v", n, logs.All())
	}
	// The queue is used as it is: its own 200-byte limit applies.
	var tl *mq.TooLargeError
	if err := q.Enqueue(ctxWait(t), engines.Message{Body: make([]byte, 300)}); !errors.As(err, &tl) || tl.Max != 200 {
		t.Fatalf("Enqueue of 300 bytes into the existing 200-byte queue: %v", err)
	}
}

// TestCloseWritesBack: a clean Close puts what the engine held in memory
// (leased, awaiting a retry, delayed) back into the kernel queue, with IDs,
// attributes and counts, for the next process.
func TestCloseWritesBack(t *testing.T) {
	t.Parallel()
	prefix := testPrefix()
	first, err := posixmq.New(posixmq.Options{Prefix: prefix, MessageSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := open(t, first, engines.QueueSpec{Name: "wb", VisibilityTimeout: time.Minute})
	msgs := []engines.Message{
		{Body: []byte("in kernel")},
		{Body: []byte("leased"), Attributes: map[string]string{"a": "1"}},
		{Body: []byte("retry later")},
	}
	msgs = append(bodies(0, ""), msgs...)
	if err := q.Enqueue(ctxWait(t), msgs[1], msgs[2]); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctxWait(t), engines.Message{Body: []byte("delayed"), Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	leased := receiveOne(t, q)
	retry := receiveOne(t, q)
	if err := retry.Nack(ctxWait(t), time.Hour, "later"); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctxWait(t), msgs[0]); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := newEngine(t, posixmq.Options{Prefix: prefix, MessageSize: 512})
	q2, _ := open(t, second, engines.QueueSpec{Name: "wb", VisibilityTimeout: time.Minute})
	got := map[string]engines.Delivery{}
	for range 4 {
		d := receiveOne(t, q2)
		got[string(d.Body)] = d
	}
	expectNone(t, q2)
	if d := got["leased"]; d.ID != leased.ID || d.Attempt != 2 || d.Failures != 0 || d.Attributes["a"] != "1" {
		t.Errorf("leased message came back as %q attempt %d failures %d attrs %v; want %q, 2, 0, a=1", d.ID, d.Attempt, d.Failures, d.Attributes, leased.ID)
	}
	if d := got["retry later"]; d.ID != retry.ID || d.Attempt != 2 || d.Failures != 1 {
		t.Errorf("nacked message came back as %q attempt %d failures %d; want %q, 2, 1", d.ID, d.Attempt, d.Failures, retry.ID)
	}
	for _, b := range []string{"in kernel", "delayed"} {
		if d, ok := got[b]; !ok || d.Attempt != 1 {
			t.Errorf("%q: present %v, attempt %d; want present at attempt 1", b, ok, d.Attempt)
		}
	}
}

// TestDeadLetterOfRawMessage: a message from another program that keeps
// failing reaches the dead-letter queue with its exact bytes, and with its
// reason and source when the envelope fits.
func TestDeadLetterOfRawMessage(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.WarnLevel)
	e := newEngine(t, posixmq.Options{MessageSize: 256, Logger: zap.New(core)})
	q, kname := open(t, e, engines.QueueSpec{Name: "src", MaxAttempts: 2, DeadLetter: "src_dlq"})
	producer, err := mq.Open(kname, unix.O_WRONLY, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	small, full := []byte("poison"), bytes.Repeat([]byte{7}, 256)
	for _, b := range [][]byte{small, full} {
		if err := producer.Send(b, 300, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 { // two messages, two failures each
		d := receiveOne(t, q)
		if err := d.Nack(ctxWait(t), 0, "handler failed"); err != nil {
			t.Fatal(err)
		}
	}
	dlq, _ := open(t, e, engines.QueueSpec{Name: "src_dlq"})
	a, b := receiveOne(t, dlq), receiveOne(t, dlq)
	if !bytes.Equal(a.Body, small) || a.Attributes[engines.AttrDeadLetterSource] != "src" || !strings.Contains(a.Attributes[engines.AttrDeadLetterReason], "handler failed") || a.Priority != 255 {
		t.Fatalf("dead letter %q attrs %v priority %d", a.Body, a.Attributes, a.Priority)
	}
	if !bytes.Equal(b.Body, full) {
		t.Fatalf("full-size dead letter came back as %d bytes, want its 256", len(b.Body))
	}
	if logs.FilterMessageSnippet("too large for its envelope").Len() != 1 {
		t.Fatalf("no warning that the full-size dead letter lost its envelope: %v", logs.All())
	}
	if s, err := q.Stats(ctxWait(t)); err != nil || s.DeadLetteredTotal != 2 || s.Depth() != 0 {
		t.Fatalf("source Stats = %+v, %v", s, err)
	}
}

// TestMalformedEnvelope: bytes that begin with the envelope's magic but do
// not check out (a future version, a damaged checksum, a header length the
// message lacks, a header cut short) are delivered as they are, and the
// oddity is logged, once for a stream of them (docs/posixmq.md). A bad
// checksum or length used to pass silently (issue 12 item 15).
func TestMalformedEnvelope(t *testing.T) {
	t.Parallel()
	good := frame.Append(nil, &frame.Header{ID: "x"}, []byte("body"))
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tt := range []struct {
		name string
		msg  []byte
	}{
		{"future_version", edit(func(b []byte) []byte { b[4] = 99; return b })},
		{"bad_checksum", edit(func(b []byte) []byte { b[20] ^= 1; return b })},
		{"bad_header_length", edit(func(b []byte) []byte { b[8] = 0xff; return b })},
		{"cut_short", []byte(frame.Magic + "\x01\x00")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zapcore.WarnLevel)
			e := newEngine(t, posixmq.Options{Logger: zap.New(core)})
			q, kname := open(t, e, engines.QueueSpec{Name: "bad_env"})
			producer, err := mq.Open(kname, unix.O_WRONLY, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer producer.Close()
			for range 3 {
				if err := producer.Send(tt.msg, 0, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			for range 3 {
				if d := receiveOne(t, q); !bytes.Equal(d.Body, tt.msg) {
					t.Fatalf("received %x, want the message as sent %x", d.Body, tt.msg)
				}
			}
			// Logged once: a stream of bad messages must not flood the log.
			if n := logs.FilterMessageSnippet("cannot be read").Len(); n != 1 {
				t.Fatalf("%d warnings logged for 3 malformed messages, want 1: %v", n, logs.All())
			}
		})
	}
}

// TestTwoEnginesShareQueue: what one engine enqueues, another (standing in
// for another process) receives with its ID, metadata and enqueue time.
func TestTwoEnginesShareQueue(t *testing.T) {
	t.Parallel()
	prefix := testPrefix()
	a := newEngine(t, posixmq.Options{Prefix: prefix})
	b := newEngine(t, posixmq.Options{Prefix: prefix})
	qa, _ := open(t, a, engines.QueueSpec{Name: "shared"})
	qb, _ := open(t, b, engines.QueueSpec{Name: "shared"})
	msg := []engines.Message{{Body: []byte("hi"), Attributes: map[string]string{"k": "v"}, ContentType: "text/plain", CorrelationID: "c", Priority: 3}}
	before := time.Now()
	if err := qa.Enqueue(ctxWait(t), msg...); err != nil {
		t.Fatal(err)
	}
	d := receiveOne(t, qb)
	if d.ID != msg[0].ID || d.Attributes["k"] != "v" || d.ContentType != "text/plain" || d.CorrelationID != "c" || d.Priority != 3 {
		t.Fatalf("other engine received %+v", d.Message)
	}
	if d.EnqueuedAt.Before(before.Add(-time.Second)) || d.EnqueuedAt.After(time.Now()) {
		t.Fatalf("EnqueuedAt %v, want the sender's enqueue time", d.EnqueuedAt)
	}
}

// TestCloseEndsWaitingSend: a send waiting for room in the kernel returns
// ErrClosed when the engine closes, and the context cancels it too.
func TestCloseEndsWaitingSend(t *testing.T) {
	t.Parallel()
	e := newEngine(t, posixmq.Options{MaxMessages: 1, SendTimeout: time.Hour})
	q, _ := open(t, e, engines.QueueSpec{Name: "close_send"})
	if err := q.Enqueue(ctxWait(t), engines.Message{Body: []byte("fills it")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() { cancelled <- q.Enqueue(ctx, engines.Message{Body: []byte("cancelled")}) }()
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) || !errors.Is(err, mq.ErrTimeout) {
		t.Fatalf("Enqueue with a cancelled context: %v; want context.Canceled and mq.ErrTimeout", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- q.Enqueue(context.Background(), engines.Message{Body: []byte("closed")}) }()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, engines.ErrClosed) {
			t.Fatalf("Enqueue waiting at Close: %v, want ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("Enqueue still waiting after Close")
	}
}

// TestWaitingSendWakesOnForeignReceive: a send waiting for room goes
// through when another program, not this engine, makes the room: that wake
// comes from the kernel through the poller, not from the engine's receive.
func TestWaitingSendWakesOnForeignReceive(t *testing.T) {
	t.Parallel()
	e := newEngine(t, posixmq.Options{MaxMessages: 2, SendTimeout: time.Hour})
	q, kname := open(t, e, engines.QueueSpec{Name: "foreign_room"})
	other, err := mq.Open(kname, unix.O_RDONLY, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })

	const n = 6 // three times the depth: the batch must wait for room
	done := make(chan error, 1)
	go func() { done <- q.Enqueue(ctxWait(t), bodies(n, "m")...) }()
	buf := make([]byte, other.MsgSize())
	deadline, _ := ctxWait(t).Deadline()
	for i := range n {
		size, _, err := other.Receive(buf, deadline)
		if err != nil {
			t.Fatalf("foreign receive %d: %v", i, err)
		}
		var h frame.Header
		body, framed, err := frame.Decode(buf[:size], &h)
		if err != nil || !framed || string(body) != fmt.Sprintf("m%d", i) {
			t.Fatalf("foreign receive %d: %q (framed %v, %v), want m%d", i, body, framed, err, i)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Enqueue waiting for room made by another program: %v", err)
	}
}
