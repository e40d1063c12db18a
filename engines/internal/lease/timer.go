package lease

import (
	"math"
	"time"
)

// Timer is a queue's one timer for its next deadline (a delayed message
// coming due, a lease running out), so a queue with a million leases still
// has one timer. It is reset only when a deadline earlier than the armed one
// appears, which keeps the common case (the next lease ends after the ones
// already armed for) free of timer calls. The queue's mutex guards it, and
// the callback takes that mutex, calls Fired, reaps and arms again.
type Timer struct {
	t     *time.Timer
	armed bool
	at    int64
}

// NewTimer returns a timer, not yet armed, that calls f when it fires.
func NewTimer(f func()) Timer {
	t := time.AfterFunc(time.Duration(math.MaxInt64), f)
	t.Stop()
	return Timer{t: t}
}

// Arm makes sure the timer fires no later than at, now being the present on
// the same engine clock.
func (t *Timer) Arm(at, now int64) {
	if !t.Needs(at) {
		return
	}
	t.armed, t.at = true, at
	t.t.Reset(time.Duration(at - now))
}

// Needs reports whether Arm(at, ...) would reset the timer, so a caller
// that has not read the clock yet reads it only then: most arms, one per
// lease, find the timer already early enough.
func (t *Timer) Needs(at int64) bool { return !t.armed || at < t.at }

// Fired records that the timer went off, so the next Arm sets it again.
func (t *Timer) Fired() { t.armed = false }

// Stop stops the timer; a callback already running still runs, so it must
// check under the queue's lock that the queue is still open.
func (t *Timer) Stop() { t.t.Stop() }
