//go:build linux

package posixmq

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/qrun-dev/qrun/engines"
)

// handle is one Open's view of a queue. Closing it ends its own calls and
// wakes its own blocked receivers without disturbing other handles.
type handle struct {
	q      *queue
	name   string // as opened
	closed atomic.Bool
	once   sync.Once
	done   chan struct{}
}

var _ engines.Queue = (*handle)(nil)

// Name returns the queue name the handle was opened with.
func (h *handle) Name() string { return h.name }

// Close closes the handle. Leases taken through it stay valid until they
// expire, because the settler is the queue, not the handle.
func (h *handle) Close() error {
	h.once.Do(func() {
		h.closed.Store(true)
		close(h.done)
		// A receiver of this handle may be leading: cut its wait short.
		h.q.mu.Lock()
		h.q.kick()
		h.q.mu.Unlock()
	})
	return nil
}

func (h *handle) errClosed(op string) error {
	return fmt.Errorf("posixmq: %s %q: %w", op, h.name, engines.ErrClosed)
}

// Enqueue writes msgs into the kernel queue, in order. A message with a
// Delay waits in memory until it is due. When the queue is full, Enqueue
// holds up to Options.Spill messages in memory, and beyond that waits for
// room until ctx ends or Options.SendTimeout passes; the error then wraps
// mq.ErrTimeout and says how many messages were stored.
func (h *handle) Enqueue(ctx context.Context, msgs ...engines.Message) error {
	if h.closed.Load() {
		return h.errClosed("enqueue to")
	}
	if len(msgs) == 0 {
		return nil
	}
	return h.q.enqueue(ctx, h, msgs)
}

// Receive leases up to len(buf) messages: redeliveries held in memory first,
// then messages from the kernel queue. It blocks until one is available, ctx
// ends or the handle or engine closes.
func (h *handle) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	if len(buf) == 0 {
		return 0, fmt.Errorf("posixmq: receive from %q: empty buffer: %w", h.name, engines.ErrInvalid)
	}
	return h.q.receive(ctx, h, buf)
}

// Stats reports the queue's counters. Ready counts the messages in the
// kernel queue, whoever sent them, plus those held in memory for it; the
// totals count what went through this engine since it started.
func (h *handle) Stats(ctx context.Context) (engines.Stats, error) {
	if h.closed.Load() {
		return engines.Stats{}, h.errClosed("stats of")
	}
	return h.q.stats()
}
