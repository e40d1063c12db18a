package engines

import (
	"context"
	"time"
)

// TickClaimer is optionally implemented by an Engine that records
// schedule ticks in its own storage, so a schedule's tick enqueues exactly
// once across restarts and, on an engine several processes share, across
// processes: the tick is recorded in the same atomic write as its message
// (disk: one bbolt transaction; postgres: one SQL transaction, whose row
// lock makes a second node's claim of the same tick wait and then find it
// taken). The runtime falls back to a file of its own for an engine
// without it (docs/schedules.md).
type TickClaimer interface {
	// ClaimTick enqueues msg on q, a queue of this engine, as tick of the
	// schedule named schedule, unless that tick or a later one was claimed
	// before; it reports whether it enqueued. The record and the message
	// are stored together or not at all.
	ClaimTick(ctx context.Context, q Queue, schedule string, tick time.Time, msg Message) (bool, error)
	// LastTick is the latest tick claimed for schedule, or the zero time.
	LastTick(ctx context.Context, schedule string) (time.Time, error)
}
