package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Schedule ticks (engines.TickClaimer) live in memory, like the queues:
// within the process each tick enqueues once; they vanish with it.

var _ engines.TickClaimer = (*Engine)(nil)

type tickBook struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// LastTick implements engines.TickClaimer.
func (e *Engine) LastTick(ctx context.Context, schedule string) (time.Time, error) {
	e.ticks.mu.Lock()
	defer e.ticks.mu.Unlock()
	return e.ticks.last[schedule], nil
}

// ClaimTick implements engines.TickClaimer.
func (e *Engine) ClaimTick(ctx context.Context, q engines.Queue, schedule string, tick time.Time, msg engines.Message) (bool, error) {
	h, ok := q.(*handle)
	if !ok || h.q.e != e {
		return false, fmt.Errorf("memory: claim tick of %q: queue %q is not this engine's: %w", schedule, q.Name(), engines.ErrInvalid)
	}
	e.ticks.mu.Lock()
	defer e.ticks.mu.Unlock()
	if !tick.After(e.ticks.last[schedule]) {
		return false, nil
	}
	if err := h.Enqueue(ctx, msg); err != nil {
		return false, fmt.Errorf("memory: claim tick %s of %q: %w", tick.Format(time.RFC3339), schedule, err)
	}
	if e.ticks.last == nil {
		e.ticks.last = map[string]time.Time{}
	}
	e.ticks.last[schedule] = tick
	return true, nil
}
