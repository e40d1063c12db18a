//go:build linux

package posixmq_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/posixmq"
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

var engineSeq atomic.Uint64

// testPrefix makes kernel names unique to this process and engine, so
// parallel tests and earlier runs never share a queue.
func testPrefix() string {
	return fmt.Sprintf("qrt%d_%d_", os.Getpid(), engineSeq.Add(1))
}

// newEngine builds an engine whose queues are unlinked when it closes. The
// message size is small because every queue counts against the per-user
// RLIMIT_MSGQUEUE (800 KiB by default), shared by all tests running at once.
func newEngine(tb testing.TB, opts posixmq.Options) *posixmq.Engine {
	tb.Helper()
	if opts.MessageSize == 0 {
		opts.MessageSize = 1024
	}
	if opts.Prefix == "" {
		opts.Prefix = testPrefix()
	}
	opts.UnlinkOnClose = true
	e, err := posixmq.New(opts)
	if err != nil {
		tb.Fatalf("posixmq.New: %v", err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

// harness builds engines whose queues are unlinked when they close. Its
// Restart keeps the queues across a Close, as qrun does, and unlinks every
// queue opened on the storage (a name prefix) when the test ends.
func harness(opts posixmq.Options) enginetest.Harness {
	// Queue names opened per prefix, for the cleanup: the kernel offers no
	// listing without /dev/mqueue mounted.
	var mu sync.Mutex
	opened := map[string]map[string]bool{}
	return enginetest.Harness{
		New:     func(tb testing.TB) engines.Engine { return newEngine(tb, opts) },
		Waiting: posixmq.Waiting,
		Restart: &enginetest.Restart{
			Name: "posixmq",
			Storage: func(tb testing.TB) string {
				prefix := testPrefix()
				tb.Cleanup(func() {
					mu.Lock()
					defer mu.Unlock()
					for name := range opened[prefix] {
						if err := mq.Unlink("/" + prefix + name); err != nil && !errors.Is(err, unix.ENOENT) {
							tb.Errorf("unlinking %s: %v", name, err)
						}
					}
					delete(opened, prefix)
				})
				return prefix
			},
			Open: func(ctx context.Context, prefix string) (engines.Engine, error) {
				o := opts
				o.Prefix = prefix
				if o.MessageSize == 0 {
					o.MessageSize = 1024
				}
				e, err := posixmq.New(o)
				if err != nil {
					return nil, err
				}
				return recordingEngine{e, func(names ...string) {
					mu.Lock()
					defer mu.Unlock()
					if opened[prefix] == nil {
						opened[prefix] = map[string]bool{}
					}
					for _, n := range names {
						if n != "" {
							opened[prefix][n] = true
						}
					}
				}}, nil
			},
		},
	}
}

// recordingEngine tells record the names of the queues it opens.
type recordingEngine struct {
	*posixmq.Engine
	record func(names ...string)
}

func (e recordingEngine) Open(ctx context.Context, spec engines.QueueSpec) (engines.Queue, error) {
	e.record(spec.Name, spec.DeadLetter)
	return e.Engine.Open(ctx, spec)
}

func TestConformance(t *testing.T) {
	// The suite enqueues batches far deeper than a kernel queue (10 here),
	// from the goroutine that then receives them, so it needs a spill.
	t.Run("framed", func(t *testing.T) { enginetest.Run(t, harness(posixmq.Options{Spill: 20000})) })
}

func BenchmarkConformance(b *testing.B) {
	enginetest.Bench(b, harness(posixmq.Options{Spill: 20000}))
}

// TestOpenValidatesSpec checks Open applies engines.QueueSpec.Validate:
// a queue named as its own dead-letter queue, and a retry policy that is
// not finite, are refused before any kernel queue is made.
func TestOpenValidatesSpec(t *testing.T) {
	e := newEngine(t, posixmq.Options{})
	for _, spec := range []engines.QueueSpec{
		{Name: "q", DeadLetter: "q"},
		{Name: "q", Retry: engines.RetryPolicy{Initial: time.Second, Multiplier: math.NaN()}},
	} {
		if _, err := e.Open(context.Background(), spec); !errors.Is(err, engines.ErrInvalid) {
			t.Errorf("Open(%+v) = %v, want ErrInvalid", spec, err)
		}
	}
}
