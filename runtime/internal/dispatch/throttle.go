package dispatch

import (
	"context"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/throttle"
)

// Throttling (Config.Throttle): before a delivery is handled the worker
// waits for the consumer's rate limit and per-key cap. The wait is not a
// failure and spends no attempt: the delivery stays leased by this worker,
// and each pause of the wait ends in time to extend the leases of the
// delivery and of the rest of its batch (renew), so no lease lapses
// however long the wait. The alternative, handing the delivery back with
// a delay, would let the engine redeliver it elsewhere but cost an engine
// write per wait, lose its place in an ordered queue, and count an
// attempt; holding it costs only this worker's time, which a throttled
// consumer has to spare.

// admit waits until ds[0] may be handled and returns the function that
// ends its place, or false if the consumer is stopping (ctx ended) or was
// paused meanwhile: a pause ends the wait, as it ends a Receive.
func (w *worker) admit(ctx context.Context, ds []engines.Delivery) (func(), bool) {
	c := w.c
	e := c.gate.cur.Load()
	if e.ctx == nil { // paused since the worker looked
		return nil, false
	}
	keep := func(now time.Time) time.Duration {
		w.renew(ds, now)
		return ds[0].LeaseExpires.Sub(now) - renewBelow(c.cfg.HandlerTimeout, c.cfg.VisibilityTimeout)
	}
	release, err := c.cfg.Throttle.Admit(e.ctx, ds[0].Attributes, keep)
	return release, err == nil
}

// ThrottleStats reports the consumer's throttle, if it has one.
func (c *Consumer) ThrottleStats() (throttle.Stats, bool) {
	if c.cfg.Throttle == nil {
		return throttle.Stats{}, false
	}
	return c.cfg.Throttle.Stats(), true
}
