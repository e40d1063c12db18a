package memory_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/internal/clock"
)

func harness(opts memory.Options) enginetest.Harness {
	return enginetest.Harness{New: func(testing.TB) engines.Engine { return memory.New(opts) }, Waiting: memory.Waiting}
}

func TestConformance(t *testing.T) {
	t.Run("unlimited", func(t *testing.T) { enginetest.Run(t, harness(memory.Options{})) })
	// A size limit makes the suite exercise the ErrTooLarge path too.
	t.Run("max_size_1MiB", func(t *testing.T) { enginetest.Run(t, harness(memory.Options{MaxMessageSize: 1 << 20})) })
}

func BenchmarkConformance(b *testing.B) { enginetest.Bench(b, harness(memory.Options{})) }

func open(t testing.TB, e *memory.Engine, spec engines.QueueSpec) engines.Queue {
	t.Helper()
	q, err := e.Open(context.Background(), spec)
	if err != nil {
		t.Fatalf("Open(%+v): %v", spec, err)
	}
	return q
}

func TestDedupWindowCloses(t *testing.T) {
	const window = time.Minute
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	e := memory.NewWithClock(memory.Options{DedupWindow: window}, clk)
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "q"})
	ctx := context.Background()
	first := []engines.Message{{Body: []byte("1"), DedupID: "d"}}
	if err := q.Enqueue(ctx, first...); err != nil {
		t.Fatal(err)
	}
	dup := []engines.Message{{Body: []byte("2"), DedupID: "d"}}
	if err := q.Enqueue(ctx, dup...); err != nil {
		t.Fatal(err)
	}
	if dup[0].ID != first[0].ID {
		t.Errorf("duplicate was told ID %q, want the original's %q", dup[0].ID, first[0].ID)
	}
	// One tick short of the window the repeat is still dropped.
	clk.Advance(window - time.Nanosecond)
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("2b"), DedupID: "d"}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Nanosecond)
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("3"), DedupID: "d"}); err != nil {
		t.Fatal(err)
	}
	s, _ := q.Stats(ctx)
	if s.EnqueuedTotal != 2 || s.DuplicateTotal != 2 {
		t.Fatalf("EnqueuedTotal=%d DuplicateTotal=%d, want 2, 2", s.EnqueuedTotal, s.DuplicateTotal)
	}
}

func TestOpenSpecRules(t *testing.T) {
	e := memory.New(memory.Options{})
	defer e.Close()
	ctx := context.Background()
	if _, err := e.Open(ctx, engines.QueueSpec{Name: "q", DeadLetter: "q"}); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("self dead-letter: %v, want ErrInvalid", err)
	}
	q := open(t, e, engines.QueueSpec{Name: "q", MaxAttempts: 1})
	// A name-only Open attaches without touching the settings.
	open(t, e, engines.QueueSpec{Name: "q"})
	if err := q.Enqueue(ctx, engines.Message{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Open(ctx, engines.QueueSpec{Name: "q", Ordered: true}); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("changing Ordered on a non-empty queue: %v, want ErrInvalid", err)
	}
	ds, err := engines.ReceiveN(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds[0].Nack(ctx, 0, "x"); err != nil {
		t.Fatal(err)
	}
	s, _ := q.Stats(ctx)
	if s.DeadLetteredTotal != 1 {
		t.Fatalf("MaxAttempts=1 from the first Open was not kept: DeadLetteredTotal=%d", s.DeadLetteredTotal)
	}
	// Empty now, so Ordered may change.
	open(t, e, engines.QueueSpec{Name: "q", Ordered: true})
}

func TestExtendRejectsNonPositive(t *testing.T) {
	e := memory.New(memory.Options{})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "q"})
	ctx := context.Background()
	if err := q.Enqueue(ctx, engines.Message{}); err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds[0].Extend(ctx, 0); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("Extend(0): %v, want ErrInvalid", err)
	}
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatalf("Ack after a rejected Extend: %v", err)
	}
}

// TestRecycledRecordRejectsStaleTicket settles a delivery whose record has
// since been recycled for another message: the lease generation must tell
// them apart.
func TestRecycledRecordRejectsStaleTicket(t *testing.T) {
	e := memory.New(memory.Options{})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "q"})
	ctx := context.Background()
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	old, _ := engines.ReceiveN(ctx, q, 1)
	if err := old[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	cur, _ := engines.ReceiveN(ctx, q, 1)
	if old[0].Ticket().Ref != cur[0].Ticket().Ref {
		t.Fatal("the free list did not recycle the record; this test needs it to (update the test if recycling changed)")
	}
	if err := old[0].Ack(ctx); !errors.Is(err, engines.ErrLeaseLost) {
		t.Fatalf("stale Ack on a recycled record: %v, want ErrLeaseLost", err)
	}
	if err := cur[0].Ack(ctx); err != nil {
		t.Fatalf("current Ack: %v", err)
	}
}

// TestNothingAccumulates runs many mixed cycles and checks the queue ends
// empty: no lease, delayed entry or key state is left behind.
func TestNothingAccumulates(t *testing.T) {
	e := memory.New(memory.Options{})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "q", Ordered: true, MaxAttempts: 3, DeadLetter: "dlq"})
	ctx := context.Background()
	for round := 0; round < 50; round++ {
		msgs := make([]engines.Message, 40)
		for i := range msgs {
			msgs[i] = engines.Message{OrderingKey: fmt.Sprint(i % 7), Priority: uint8(i % 3)}
		}
		if err := q.Enqueue(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(msgs); {
			ds, err := engines.ReceiveN(ctx, q, 16)
			if err != nil {
				t.Fatal(err)
			}
			for i := range ds {
				var err error
				switch i % 4 {
				case 1:
					err = ds[i].Requeue(ctx, 0)
				case 2:
					err = ds[i].Extend(ctx, time.Minute)
					if err == nil {
						err = ds[i].Ack(ctx)
					}
					n++
				case 3:
					err = ds[i].DeadLetter(ctx, "x")
					n++
				default:
					err = ds[i].Ack(ctx)
					n++
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	s, _ := q.Stats(ctx)
	if s.Depth() != 0 {
		t.Fatalf("queue not empty after all settled: %+v", s)
	}
	if s.AckedTotal+s.DeadLetteredTotal != 50*40 {
		t.Fatalf("AckedTotal+DeadLetteredTotal = %d, want %d", s.AckedTotal+s.DeadLetteredTotal, 50*40)
	}
	dlq := open(t, e, engines.QueueSpec{Name: "dlq"})
	ds, _ := dlq.Stats(ctx)
	if ds.Ready != s.DeadLetteredTotal {
		t.Fatalf("dead-letter queue holds %d, source dead-lettered %d", ds.Ready, s.DeadLetteredTotal)
	}
}

// TestAllocsPerMessage guards the hot path's allocation budget: the runtime's
// end-to-end goal allows at most 2 allocations per delivery, and the engine
// should use only a small fraction of that.
func TestAllocsPerMessage(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	e := memory.New(memory.Options{})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "q"})
	ctx := context.Background()
	body := make([]byte, 64)
	msgs := make([]engines.Message, 100)
	cycle := func() {
		for i := range msgs {
			msgs[i] = engines.Message{Body: body}
		}
		if err := q.Enqueue(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		ds, err := engines.ReceiveN(ctx, q, len(msgs))
		if err != nil || len(ds) != len(msgs) {
			t.Fatalf("Receive: %d, %v", len(ds), err)
		}
		for i := range ds {
			if err := ds[i].Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	cycle() // warm up rings, heaps and free lists
	perMsg := testing.AllocsPerRun(200, cycle) / float64(len(msgs))
	t.Logf("%.3f allocations per message", perMsg)
	if perMsg > 0.1 {
		t.Fatalf("%.3f allocations per message through enqueue+receive+ack, want <= 0.1", perMsg)
	}
}

// TestEngineCloseUnblocksMany checks Close wakes every blocked receiver, not
// just one.
func TestEngineCloseUnblocksMany(t *testing.T) {
	e := memory.New(memory.Options{})
	q := open(t, e, engines.QueueSpec{Name: "q"})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := engines.ReceiveN(context.Background(), q, 1)
			errs <- err
		}()
	}
	// Close while all eight are blocked: a Close that wakes only one would
	// leave the others waiting.
	for memory.Waiting(q) < 8 {
		runtime.Gosched() // no deadline needed: the test's own timeout bounds a hang
	}
	e.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, engines.ErrClosed) {
			t.Fatalf("receiver got %v, want ErrClosed", err)
		}
	}
}

// batch is BenchmarkProducerConsumer's batch size; enginetest.Bench (run by
// BenchmarkConformance) measures enqueue, receive+ack and both alone.
const batch = 100

// BenchmarkProducerConsumer runs one producer and one consumer goroutine
// concurrently, the shape of the end-to-end goal on two cores; one op is one
// message.
func BenchmarkProducerConsumer(b *testing.B) {
	e := memory.New(memory.Options{})
	defer e.Close()
	q := open(b, e, engines.QueueSpec{Name: "q"})
	ctx := context.Background()
	body := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for got := 0; got < b.N; {
			ds, err := engines.ReceiveN(ctx, q, batch)
			if err != nil {
				b.Error(err)
				return
			}
			for j := range ds {
				_ = ds[j].Ack(ctx)
			}
			got += len(ds)
		}
	}()
	msgs := make([]engines.Message, batch)
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		for j := range msgs[:n] {
			msgs[j] = engines.Message{Body: body}
		}
		_ = q.Enqueue(ctx, msgs[:n]...)
		sent += n
	}
	<-done
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// TestOpenValidatesSpec checks Open applies engines.QueueSpec.Validate,
// including the rule it adds here: a retry policy must be finite.
func TestOpenValidatesSpec(t *testing.T) {
	e := memory.New(memory.Options{})
	defer e.Close()
	_, err := e.Open(context.Background(), engines.QueueSpec{Name: "q", Retry: engines.RetryPolicy{Initial: time.Second, Multiplier: math.NaN()}})
	if !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("Open with NaN multiplier = %v, want ErrInvalid", err)
	}
}
