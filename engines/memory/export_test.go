package memory

import (
	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/clock"
)

// NewWithClock is New on the clock c, so a test advances time instead of
// sleeping through a window. It is not public API: the clock type is
// internal.
func NewWithClock(opts Options, c clock.Clock) *Engine { return newEngine(opts, c) }

// Waiting is the number of receivers blocked on q (queue.waiters), the
// event enginetest's Harness.Waiting waits for.
func Waiting(q engines.Queue) int {
	h := q.(*handle)
	h.q.mu.Lock()
	defer h.q.mu.Unlock()
	return h.q.waiters
}
