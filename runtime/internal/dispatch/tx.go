package dispatch

import (
	"context"
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
//
// The commit is started now and waited for with the rest of the batch
// (flush), as verdicts are on a GroupSettler, so that one engine
// transaction can carry many deliveries' commits: through StartSettleTx on
// a queue that offers it (engines.GroupTxSettler, disk), else by running
// SettleTx on a goroutine of its own, which an engine that batches
// concurrent SettleTx calls (postgres) shares a transaction between.
func (w *worker) commit(o outcome, e *engines.Effects) {
	c, d := w.c, o.d
	o.eff = e
	var p engines.Pending
	var err error
	if w.gts != nil {
		p, err = w.gts.StartSettleTx(c.settleCtx, d, e)
	} else {
		p = startSettleTx(c.settleCtx, d, e)
	}
	if err != nil || p == nil {
		w.committed(o, err)
		return
	}
	o.p = p
	w.pending = append(w.pending, o)
}

// asyncCommit is a SettleTx running on its own goroutine.
type asyncCommit struct {
	done chan struct{}
	err  error
}

func startSettleTx(ctx context.Context, d *engines.Delivery, e *engines.Effects) *asyncCommit {
	a := &asyncCommit{done: make(chan struct{})}
	go func() {
		a.err = d.SettleTx(ctx, e)
		close(a.done)
	}()
	return a
}

// Wait implements engines.Pending. It waits for SettleTx whatever ctx
// does (SettleTx itself honours the context it was given): the delivery
// and its receive buffer must not be reused while it runs.
func (a *asyncCommit) Wait(context.Context) error {
	<-a.done
	return a.err
}

// committed accounts for a commit of effects that returned err.
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
	if err != nil && !errors.Is(err, engines.ErrLeaseLost) {
		c.log.Debug("commit of effects failed", zap.Error(err))
	}
	w.applied(o, err)
}
