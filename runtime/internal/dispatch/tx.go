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
// counted: its next attempt reads the new values. Effects the stores
// refuse (ErrInvalid, ErrTooLarge) fail the delivery: it is nacked with
// the reason, as a trapped one is. Any other error leaves
// the lease to expire, as a failed ack does, so the message is redelivered
// and none of its effects happened.
//
// On a queue that offers engines.GroupTxSettler (disk, postgres) the
// commit is started now and waited for with the rest of the batch's, so
// that one engine transaction carries many deliveries' commits, and that
// wait overlaps the worker's next batch (overlap.go). Elsewhere (memory,
// one critical section) SettleTx runs here, which costs no goroutine,
// channel or wake-up per delivery.
func (w *worker) commit(o outcome, e *engines.Effects) {
	c, d := w.c, o.d
	o.eff = e
	if w.gts == nil {
		w.committed(o, d.SettleTx(c.settleCtx, e))
		return
	}
	p, err := w.gts.StartSettleTx(c.settleCtx, d, e)
	if err != nil || p == nil {
		w.committed(o, err)
		return
	}
	o.p = p
	w.commits = append(w.commits, o)
}

// committed accounts for a commit of effects that returned err. It runs
// on the worker or on the goroutine its commits land on (overlap.go), so
// everything it touches is safe for concurrent use.
func (w *worker) committed(o outcome, err error) {
	c, d := w.c, o.d
	if c.cfg.OnCommit != nil {
		c.cfg.OnCommit(o.eff, err)
	}
	if errors.Is(err, engines.ErrConflict) {
		w.n.conflicts.Add(1)
		c.log.Info("effects conflicted with another delivery's at commit; requeued without a failure",
			deliveryFields(d)...)
		o.s = engines.Settlement{Verdict: engines.Requeue}
		w.applied(o, d.Settle(c.settleCtx, o.s))
		return
	}
	if errors.Is(err, engines.ErrInvalid) || errors.Is(err, engines.ErrTooLarge) {
		// The effects cannot apply to the stores as they are now (a
		// kv_add to a value that is not a decimal int64, a sum beyond the
		// store's value limit): nothing was applied and the lease is still
		// held, so the delivery fails as a trap does, nacked with the
		// reason after the retry policy's delay, and is dead-lettered once
		// its attempts run out, rather than retried at every lease expiry.
		o.herr = err
		o.s = engines.Settlement{Verdict: engines.Nack, Reason: "effects refused at commit: " + err.Error(),
			Delay: c.cfg.Retry.Delay(d.Failures)}
		w.applied(o, d.Settle(c.settleCtx, o.s))
		return
	}
	if err != nil && !errors.Is(err, engines.ErrLeaseLost) {
		c.log.Debug("commit of effects failed", zap.Error(err))
	}
	w.applied(o, err)
}
