// Package memory is qrun's in-process engine: every feature of the engine
// contract except durability and sharing between processes. It is the
// reference the conformance suite is written against, the test double for
// the runtime, and the yardstick for the other engines' overhead, so its hot
// path (enqueue, receive, ack) is kept to one lock acquisition per batch and
// close to zero allocations per message.
package memory

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/kvmem"
	"github.com/qrun-dev/qrun/engines/internal/lease"
	"github.com/qrun-dev/qrun/internal/clock"
)

// Options configure an Engine. The zero value is ready to use.
type Options struct {
	// MaxMessageSize is the largest body Enqueue accepts; zero means no limit.
	// It exists so a deployment can mirror the limit of the engine it stands in
	// for, and so the too-large path can be tested.
	MaxMessageSize int
	// DedupWindow is how long a DedupID suppresses repeats; zero means
	// DefaultDedupWindow.
	DedupWindow time.Duration
}

// DefaultDedupWindow is the dedup window used when Options leave it zero.
const DefaultDedupWindow = 5 * time.Minute

// Engine is an in-process engine. Its queues live as long as the Engine and
// vanish with the process.
type Engine struct {
	opts  Options
	clock clock.Clock // a test's clock.Fake (export_test.go); nil is the system clock
	epoch time.Time   // monotonic origin of the int64 clock used internally

	mu     sync.Mutex
	closed bool
	queues map[string]*queue
	stores map[string]*kvmem.Store

	// txMu serialises SettleTx calls, the only operations that hold more
	// than one queue's lock at once (the source and its publish targets),
	// so that they cannot deadlock against each other. See kv.go.
	txMu sync.Mutex

	// ids hands out blocks of message IDs to queues; IDs are unique across
	// the engine so a dead-lettered message keeps its ID in its new queue.
	ids atomic.Uint64

	ticks tickBook // schedule ticks (ticks.go)
}

var _ engines.Engine = (*Engine)(nil)

// New returns an empty engine.
func New(opts Options) *Engine { return newEngine(opts, nil) }

// newEngine is New on the clock c, nil meaning the system clock. Only Now
// is read from c: the lease timer (engines/internal/lease.Timer) waits in
// real time, so a test that advances a fake clock sees its effect at the
// engine's next call that reads the clock (Enqueue, Receive, Stats).
func newEngine(opts Options, c clock.Clock) *Engine {
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.MaxMessageSize < 0 {
		opts.MaxMessageSize = 0
	}
	e := &Engine{opts: opts, clock: c, epoch: time.Now(), queues: make(map[string]*queue)}
	if c != nil {
		e.epoch = c.Now()
	}
	return e
}

// Capabilities reports everything but durability and sharing, which an
// in-process engine cannot offer.
func (e *Engine) Capabilities() engines.Capabilities {
	return capabilities(e.opts)
}

// Open returns a handle on the named queue, creating it if needed.
//
// A spec that sets nothing but Name attaches to the queue as it is, so a
// publisher need not know the consumer's settings. Any other spec becomes
// the queue's settings (the most recent Open wins, which is what a config
// reload wants), except that Ordered cannot change while the queue holds
// messages: their ordering bookkeeping would not match.
func (e *Engine) Open(ctx context.Context, spec engines.QueueSpec) (engines.Queue, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("memory: open %q: %w", spec.Name, err)
	}
	q, err := e.queue(spec.Name)
	if err != nil {
		return nil, err
	}
	if err := q.configure(spec); err != nil {
		return nil, err
	}
	return &handle{q: q, done: make(chan struct{})}, nil
}

// Close closes every queue: blocked receivers return ErrClosed and later
// calls on any handle fail. Closing twice is harmless.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	qs := make([]*queue, 0, len(e.queues))
	for _, q := range e.queues {
		qs = append(qs, q)
	}
	e.queues = nil
	e.mu.Unlock()
	// Queues are locked one at a time and never while holding e.mu, the
	// same order Open and dead-lettering use.
	for _, q := range qs {
		q.close()
	}
	return nil
}

// queue returns the named queue, creating it if needed.
func (e *Engine) queue(name string) (*queue, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("memory: queue %q: %w", name, engines.ErrClosed)
	}
	q := e.queues[name]
	if q == nil {
		q = newQueue(e, name)
		e.queues[name] = q
	}
	return q, nil
}

// now is the engine clock: nanoseconds since the engine started, read from
// the monotonic clock so wall-clock steps cannot reorder deadlines. The
// system clock is read without the interface call: now runs once a batch.
func (e *Engine) now() int64 {
	if e.clock == nil {
		return int64(time.Since(e.epoch))
	}
	return int64(e.clock.Now().Sub(e.epoch))
}

// wall converts the engine clock back to a time.Time for callers.
func (e *Engine) wall(t int64) time.Time { return e.epoch.Add(time.Duration(t)) }

// handle is one Open's view of a queue. Closing it stops its own calls and
// wakes its own blocked receivers without disturbing other handles.
type handle struct {
	q      *queue
	closed atomic.Bool
	once   sync.Once
	done   chan struct{}
}

var _ engines.Queue = (*handle)(nil)

// Name returns the queue name.
func (h *handle) Name() string { return h.q.name }

// Close closes the handle. Leases taken through it stay valid until they
// expire, because the settler is the queue, not the handle.
func (h *handle) Close() error {
	h.once.Do(func() {
		h.closed.Store(true)
		close(h.done)
	})
	return nil
}

func (h *handle) errClosed(op string) error {
	return fmt.Errorf("memory: %s %q: %w", op, h.q.name, engines.ErrClosed)
}

// Enqueue validates the whole batch before storing any of it, so a batch is
// all-or-nothing.
func (h *handle) Enqueue(ctx context.Context, msgs ...engines.Message) error {
	if h.closed.Load() {
		return h.errClosed("enqueue to")
	}
	q := h.q
	limit := q.e.opts.MaxMessageSize
	for i := range msgs {
		m := &msgs[i]
		if limit > 0 && len(m.Body) > limit {
			return fmt.Errorf("memory: enqueue to %q: message %d body is %d bytes, limit %d: %w", q.name, i, len(m.Body), limit, engines.ErrTooLarge)
		}
		if m.TTL < 0 {
			return fmt.Errorf("memory: enqueue to %q: message %d has negative TTL %v: %w", q.name, i, m.TTL, engines.ErrInvalid)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return q.enqueue(msgs)
}

// Receive leases up to len(buf) messages into buf, blocking until one is
// available.
func (h *handle) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	if len(buf) == 0 {
		return 0, fmt.Errorf("memory: receive from %q: empty buffer: %w", h.q.name, engines.ErrInvalid)
	}
	return lease.Block(ctx, h.done, h.closedErr, func() (int, <-chan struct{}, error) { return h.q.receive(buf) })
}

// closedErr is the handle's ErrClosed error once it is closed, nil before.
func (h *handle) closedErr() error {
	if h.closed.Load() {
		return h.errClosed("receive from")
	}
	return nil
}

// Stats reports the queue's counters. Ready includes messages waiting behind
// their ordering key, since they are visible, merely not yet eligible.
func (h *handle) Stats(ctx context.Context) (engines.Stats, error) {
	if h.closed.Load() {
		return engines.Stats{}, h.errClosed("stats of")
	}
	return h.q.stats()
}
