//go:build linux

package shm_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/shm"
	"github.com/qrun-dev/qrun/engines/shm/ring"
	"github.com/qrun-dev/qrun/internal/testenv"
)

var prefixSeq atomic.Uint64

// testPrefix is a segment-name prefix unique to this process and call, so
// parallel tests (and parallel test processes) never share a segment.
func testPrefix() string {
	return fmt.Sprintf("qrun-test-%d-%d.", os.Getpid(), prefixSeq.Add(1))
}

// newEngine returns an engine whose segments the test removes at the end.
func newEngine(t testing.TB, opts shm.Options) *shm.Engine {
	t.Helper()
	if _, err := os.Stat(ring.DefaultDir); err != nil {
		testenv.Missing(t, fmt.Sprintf("no %s on this machine (%v); the shm engine needs POSIX shared memory", ring.DefaultDir, err))
	}
	if opts.Prefix == "" {
		opts.Prefix = testPrefix()
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = 200 * time.Millisecond
	}
	e, err := shm.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { removeSegments(t, e.Dir(), opts.Prefix) })
	return e
}

func removeSegments(t testing.TB, dir, prefix string) {
	paths, _ := filepath.Glob(filepath.Join(dir, prefix+"*"))
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("removing segment %s: %v", p, err)
		}
	}
}

// sleepers is the number of receivers asleep on q's ring (in any process:
// each test has segments of its own), the event enginetest waits for
// before it wakes one.
func sleepers(q engines.Queue) int {
	st, err := q.(*shm.Queue).RingStats()
	if err != nil {
		return 0
	}
	return int(st.Sleepers)
}

// harness builds engines on segments of their own; its Restart's storage
// is a segment-name prefix, whose segments are removed when the test ends.
func harness(opts shm.Options) enginetest.Harness {
	return enginetest.Harness{
		New:     func(t testing.TB) engines.Engine { return newEngine(t, opts) },
		Waiting: sleepers,
		Restart: &enginetest.Restart{
			Name: "shm",
			Storage: func(t testing.TB) string {
				if _, err := os.Stat(ring.DefaultDir); err != nil {
					testenv.Missing(t, fmt.Sprintf("no %s on this machine (%v); the shm engine needs POSIX shared memory", ring.DefaultDir, err))
				}
				prefix := testPrefix()
				t.Cleanup(func() { removeSegments(t, ring.DefaultDir, prefix) })
				return prefix
			},
			Open: func(_ context.Context, prefix string) (engines.Engine, error) {
				o := opts
				o.Prefix = prefix
				if o.StallTimeout == 0 {
					o.StallTimeout = 200 * time.Millisecond
				}
				return shm.New(o)
			},
		},
	}
}

func TestConformance(t *testing.T) {
	t.Run("blocking", func(t *testing.T) {
		enginetest.Run(t, harness(shm.Options{SlotSize: 4096, Capacity: 1024}))
	})
	t.Run("cyclic", func(t *testing.T) {
		// Capacity above the suite's largest backlog (2000), so nothing is overwritten.
		enginetest.Run(t, harness(shm.Options{SlotSize: 1024, Capacity: 4096, Mode: ring.Cyclic}))
	})
}

func open(t testing.TB, e *shm.Engine, spec engines.QueueSpec) engines.Queue {
	t.Helper()
	q, err := e.Open(context.Background(), spec)
	if err != nil {
		t.Fatalf("Open(%+v): %v", spec, err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func receiveAll(t testing.TB, q engines.Queue, n int) []engines.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []engines.Delivery
	for len(got) < n {
		ds, err := engines.ReceiveN(ctx, q, n-len(got))
		if err != nil {
			t.Fatalf("Receive after %d of %d: %v", len(got), n, err)
		}
		got = append(got, ds...)
	}
	return got
}

func bodies(ds []engines.Delivery) string {
	var b []string
	for _, d := range ds {
		b = append(b, string(d.Body))
	}
	return strings.Join(b, ",")
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	e := newEngine(t, shm.Options{SlotSize: 64, Capacity: 4})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "q"})
	ctx := context.Background()
	tests := []struct {
		name string
		msg  engines.Message
		size int
	}{
		{"body", engines.Message{Body: make([]byte, 65)}, 65},
		{"envelope", engines.Message{Body: make([]byte, 60), Attributes: map[string]string{"k": "v"}}, 32 + 60 + 8 + 2},
	}
	for _, c := range tests {
		err := q.Enqueue(ctx, engines.Message{Body: []byte("fits")}, c.msg)
		var tl *shm.TooLargeError
		if !errors.Is(err, engines.ErrTooLarge) || !errors.As(err, &tl) || tl.Size != c.size || tl.SlotSize != 64 || tl.Index != 1 {
			t.Fatalf("%s: Enqueue = %v; want a TooLargeError for message 1 of %d bytes into 64", c.name, err, c.size)
		}
	}
	// All or nothing: the message that fitted was not published either.
	if st, _ := q.Stats(ctx); st.Ready != 0 || st.EnqueuedTotal != 0 {
		t.Fatalf("after rejected batches: %+v, want nothing enqueued", st)
	}
	// Exactly the slot size fits when the message is a bare body.
	if err := q.Enqueue(ctx, engines.Message{Body: make([]byte, 64)}); err != nil {
		t.Fatalf("Enqueue of a slot-sized body: %v", err)
	}
}

// TestCyclicOverwrite: after 3x capacity sends into a cyclic queue only the
// last capacity remain, in order, and the overwrites are counted.
func TestCyclicOverwrite(t *testing.T) {
	t.Parallel()
	const capacity = 16
	e := newEngine(t, shm.Options{SlotSize: 64, Capacity: capacity, Mode: ring.Cyclic})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "c"})
	ctx := context.Background()
	var want []string
	for i := range 3 * capacity {
		body := fmt.Sprintf("m%02d", i)
		if err := q.Enqueue(ctx, engines.Message{Body: []byte(body)}); err != nil {
			t.Fatalf("Enqueue %d into a full cyclic queue: %v", i, err)
		}
		if i >= 2*capacity {
			want = append(want, body)
		}
	}
	got := receiveAll(t, q, capacity)
	if bodies(got) != strings.Join(want, ",") {
		t.Fatalf("received %s, want %s", bodies(got), strings.Join(want, ","))
	}
	rs, err := q.(*shm.Queue).RingStats()
	if err != nil || rs.Overwritten != 2*capacity || rs.Published != 3*capacity {
		t.Fatalf("RingStats = %+v, %v; want %d overwritten of %d", rs, err, 2*capacity, 3*capacity)
	}
}

// TestBlockingDeadline: a full blocking queue makes Enqueue wait for its
// deadline and fail with ErrFull; without a deadline the send timeout ends
// the wait; space made by a consumer releases a waiting producer.
func TestBlockingDeadline(t *testing.T) {
	t.Parallel()
	e := newEngine(t, shm.Options{SlotSize: 64, Capacity: 4, SendTimeout: 200 * time.Millisecond})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "b"})
	for i := range 4 {
		if err := q.Enqueue(context.Background(), engines.Message{Body: []byte{byte('a' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	deadline, _ := ctx.Deadline()
	err := q.Enqueue(ctx, engines.Message{Body: []byte("e")})
	if !errors.Is(err, ring.ErrFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Enqueue into a full queue = %v; want ErrFull and DeadlineExceeded", err)
	}
	// Measured against the context's own deadline: a clock read taken after
	// the context was made would start late on a loaded machine.
	if early := time.Until(deadline); early > 0 {
		t.Fatalf("Enqueue gave up %v before its deadline", early)
	}
	err = q.Enqueue(context.Background(), engines.Message{Body: []byte("e")})
	if !errors.Is(err, ring.ErrFull) {
		t.Fatalf("Enqueue without a deadline into a full queue = %v; want ErrFull after the send timeout", err)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- q.Enqueue(ctx, engines.Message{Body: []byte("e")})
	}()
	d := receiveAll(t, q, 1)[0]
	if err := <-done; err != nil {
		t.Fatalf("waiting Enqueue after a receive: %v", err)
	}
	if err := d.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := bodies(receiveAll(t, q, 4)); got != "b,c,d,e" {
		t.Fatalf("received %s, want b,c,d,e", got)
	}
}

func TestDeleteRemovesSegment(t *testing.T) {
	t.Parallel()
	e := newEngine(t, shm.Options{SlotSize: 64, Capacity: 4})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "gone"})
	path, err := e.SegmentPath("gone")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("segment after Open: %v", err)
	}
	if err := q.Enqueue(context.Background(), engines.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := e.Delete(context.Background(), "gone"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Delete, stat %s = %v; want it gone", path, err)
	}
	if err := q.Enqueue(context.Background(), engines.Message{Body: []byte("x")}); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("Enqueue through a handle on a deleted queue = %v, want ErrClosed", err)
	}
	if err := e.Delete(context.Background(), "gone"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second Delete = %v, want ErrNotExist", err)
	}
	// Opening again creates a new, empty queue.
	q2 := open(t, e, engines.QueueSpec{Name: "gone"})
	if st, _ := q2.Stats(context.Background()); st.Ready != 0 {
		t.Fatalf("recreated queue has %d ready", st.Ready)
	}
}

func TestNamesAndGeometry(t *testing.T) {
	t.Parallel()
	e := newEngine(t, shm.Options{SlotSize: 64, Capacity: 4})
	defer e.Close()
	ctx := context.Background()
	for _, name := range []string{"a/b", strings.Repeat("n", 300), "x\x00"} {
		if _, err := e.Open(ctx, engines.QueueSpec{Name: name}); !errors.Is(err, engines.ErrInvalid) {
			t.Errorf("Open(%.20q) = %v, want ErrInvalid (never a truncated name)", name, err)
		}
	}
	// An existing segment with another geometry is refused, clearly.
	open(t, e, engines.QueueSpec{Name: "shape"})
	path, _ := e.SegmentPath("shape")
	o2, err := shm.New(shm.Options{Prefix: strings.TrimSuffix(filepath.Base(path), "shape"), SlotSize: 128, Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	_, err = o2.Open(ctx, engines.QueueSpec{Name: "shape"})
	if !errors.Is(err, ring.ErrGeometry) || !errors.Is(err, engines.ErrInvalid) || !strings.Contains(err.Error(), "slot_size 64") {
		t.Fatalf("Open with a different slot size = %v; want a geometry error naming both", err)
	}
	for _, o := range []shm.Options{{SlotSize: -1}, {Capacity: 3}, {Capacity: 1 << 30}, {Prefix: "a/"}, {Mode: 5}} {
		if _, err := shm.New(o); !errors.Is(err, engines.ErrInvalid) {
			t.Errorf("New(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

// TestForeignProducer writes records the way another program would, with
// no envelope, and a malformed envelope, and checks the engine delivers
// both without losing either.
func TestForeignProducer(t *testing.T) {
	t.Parallel()
	e := newEngine(t, shm.Options{SlotSize: 64, Capacity: 4})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "f"})
	path, _ := e.SegmentPath("f")
	r, err := ring.Open(path, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	at := time.Now().Add(-time.Minute).UnixNano()
	if _, err := r.Push(context.Background(), []ring.Record{
		{Enqueued: at, Data: []byte("bare body")},
		{Flags: ring.FlagEnvelope, Data: []byte{9, 9, 9}},
	}); err != nil {
		t.Fatal(err)
	}
	ds := receiveAll(t, q, 2)
	if string(ds[0].Body) != "bare body" || !ds[0].EnqueuedAt.Equal(time.Unix(0, at)) || ds[0].ID == "" {
		t.Fatalf("bare record delivered as %q enqueued %v id %q", ds[0].Body, ds[0].EnqueuedAt, ds[0].ID)
	}
	if string(ds[1].Body) != "\x09\x09\x09" || !strings.Contains(ds[1].Attributes[shm.AttrMalformed], "malformed") {
		t.Fatalf("malformed envelope delivered as %q with attributes %v", ds[1].Body, ds[1].Attributes)
	}
}

// TestCloseFlushesHeld: messages this process holds outside the ring
// (nacked, delayed, leased) are published back by a clean Close, with
// their attempt counts, so another engine picks them up.
func TestCloseFlushesHeld(t *testing.T) {
	t.Parallel()
	prefix := testPrefix()
	e := newEngine(t, shm.Options{Prefix: prefix, SlotSize: 128, Capacity: 16})
	q := open(t, e, engines.QueueSpec{Name: "h", VisibilityTimeout: time.Minute})
	ctx := context.Background()
	if err := q.Enqueue(ctx,
		engines.Message{Body: []byte("nacked")},
		engines.Message{Body: []byte("leased")},
		engines.Message{Body: []byte("delayed"), Delay: 50 * time.Millisecond},
	); err != nil {
		t.Fatal(err)
	}
	ds := receiveAll(t, q, 2)
	if err := ds[0].Nack(ctx, time.Hour, "later"); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e2 := newEngine(t, shm.Options{Prefix: prefix, SlotSize: 128, Capacity: 16})
	defer e2.Close()
	q2 := open(t, e2, engines.QueueSpec{Name: "h"})
	got := map[string]engines.Delivery{}
	for _, d := range receiveAll(t, q2, 2) {
		got[string(d.Body)] = d
	}
	if d, ok := got["leased"]; !ok || d.Attempt != 2 {
		t.Fatalf("after Close the leased message came back as %+v; want attempt 2", d)
	}
	if d, ok := got["delayed"]; !ok || d.Attempt != 1 {
		t.Fatalf("after Close the delayed message came back as %+v; want attempt 1", d)
	}
	if st, _ := q2.Stats(ctx); st.Delayed != 1 {
		t.Fatalf("the nacked message (due in an hour) should be held as delayed: %+v", st)
	}
}

// TestCorruptSegment: a file in the segment's place that is not a ring is
// refused with a clear error, and left alone.
func TestCorruptSegment(t *testing.T) {
	t.Parallel()
	e := newEngine(t, shm.Options{SlotSize: 64, Capacity: 4})
	defer e.Close()
	path, _ := e.SegmentPath("junk")
	junk := []byte(strings.Repeat("not a ring ", 500))
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := e.Open(context.Background(), engines.QueueSpec{Name: "junk"})
	if !errors.Is(err, ring.ErrCorrupt) || !errors.Is(err, engines.ErrInvalid) || !strings.Contains(err.Error(), "delete "+path) {
		t.Fatalf("Open over a non-ring file = %v; want ErrCorrupt with a hint", err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(junk) {
		t.Fatal("the refused file was modified")
	}
}

// TestOpenValidatesSpec checks Open applies engines.QueueSpec.Validate,
// including the rule it adds here: a retry policy must be finite.
func TestOpenValidatesSpec(t *testing.T) {
	e := newEngine(t, shm.Options{})
	defer e.Close()
	_, err := e.Open(context.Background(), engines.QueueSpec{Name: "q", Retry: engines.RetryPolicy{Initial: time.Second, Multiplier: math.NaN()}})
	if !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("Open with NaN multiplier = %v, want ErrInvalid", err)
	}
}

// TestDeadLetterReasons checks shm words its dead-letter reasons as every
// other engine does (they come from engines/internal/lease): a nack that
// reaches max attempts, and a consumer's dead letter without a reason.
func TestDeadLetterReasons(t *testing.T) {
	e := newEngine(t, shm.Options{})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "src", MaxAttempts: 1, DeadLetter: "dlq"})
	dlq := open(t, e, engines.QueueSpec{Name: "dlq"})
	ctx := context.Background()
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("a")}, engines.Message{Body: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	ds := receiveAll(t, q, 2)
	if err := ds[0].Nack(ctx, 0, "boom"); err != nil {
		t.Fatal(err)
	}
	if err := ds[1].DeadLetter(ctx, ""); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"a": "max attempts (1) reached: boom",
		"b": "dead-lettered by consumer",
	}
	for _, d := range receiveAll(t, dlq, 2) {
		if got := d.Attributes[engines.AttrDeadLetterReason]; got != want[string(d.Body)] {
			t.Errorf("dead letter %q: reason %q, want %q", d.Body, got, want[string(d.Body)])
		}
		if got := d.Attributes[engines.AttrDeadLetterSource]; got != "src" {
			t.Errorf("dead letter %q: source %q, want src", d.Body, got)
		}
	}
}
