package redis

import (
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// SetTimings sets how long e's queues keep a batch leased ahead for a
// Receive (hold) and how long a started settle waits to be sent when
// nobody waits for it (linger), so that a test, not the machine's speed,
// decides whether a batch is taken or given back and whether its verdicts
// go out with a Wait.
func SetTimings(e *Engine, hold, linger time.Duration) { e.aheadHold, e.linger = hold, linger }

// EntryID returns the stream entry ID of a delivery q handed out.
func EntryID(d *engines.Delivery) string {
	if l, ok := d.Ticket().Ref.(*lease); ok {
		return l.sid
	}
	return ""
}
