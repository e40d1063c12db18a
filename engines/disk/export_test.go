package disk

import (
	"context"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/clock"
)

// Waiting is the number of receivers blocked on q (queue.waiters), the
// event enginetest's Harness.Waiting waits for.
func Waiting(q engines.Queue) int {
	h := q.(*handle)
	h.q.mu.Lock()
	defer h.q.mu.Unlock()
	return h.q.waiters
}

// OpenWithClock is Open on the clock c, so a test advances time instead of
// sleeping through a window. It is not public API: the clock type is
// internal.
func OpenWithClock(ctx context.Context, opts Options, c clock.Clock) (*Engine, error) {
	return open(ctx, opts, c)
}
