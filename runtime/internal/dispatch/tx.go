package dispatch

import (
	"errors"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// commit acks a delivery together with the effects its handler held
// (publishes to queues of its own engine, writes to its key-value stores),
// in one engine transaction: engines.Delivery.SettleTx. A version check
// that fails (another delivery changed a key this one read) changes
// nothing, and the delivery is requeued at once without a failure
// counted: its next attempt reads the new values. Any other error leaves
// the lease to expire, as a failed ack does, so the message is redelivered
// and none of its effects happened.
func (w *worker) commit(o outcome, e *engines.Effects) {
	c, d := w.c, o.d
	err := d.SettleTx(c.settleCtx, e)
	if c.cfg.OnCommit != nil {
		c.cfg.OnCommit(e, err)
	}
	if errors.Is(err, engines.ErrConflict) {
		w.n.conflicts.Add(1)
		c.log.Info("effects conflicted with another delivery's at commit; requeued without a failure",
			deliveryFields(d)...)
		o.s = engines.Settlement{Verdict: engines.Requeue}
		w.applied(o, d.Settle(c.settleCtx, o.s))
		return
	}
	if err != nil && !errors.Is(err, engines.ErrLeaseLost) {
		c.log.Debug("commit of effects failed", zap.Error(err))
	}
	w.applied(o, err)
}
