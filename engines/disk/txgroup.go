package disk

import (
	"context"
	"fmt"

	"github.com/qrun-dev/qrun/engines"
)

// StartSettleTx implements engines.GroupTxSettler: SettleTx without the
// wait for the commit, as StartSettle is Settle without it. The checks,
// the ack and the effects are applied to the index and join the pending
// commit at once, so the transactional settles a batch starts share one
// bbolt transaction and one fsync, each still all or nothing (a conflict
// is found here, before anything of the delivery is applied).
func (h *handle) StartSettleTx(ctx context.Context, d *engines.Delivery, eff *engines.Effects) (engines.Pending, error) {
	q := h.q
	if d.Queue != q.name { // not ours: settle it the ordinary way
		return nil, d.SettleTx(ctx, eff)
	}
	t := d.Ticket()
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return nil, fmt.Errorf("disk: settle tx on %q: foreign ticket: %w", q.name, engines.ErrNotLeased)
	}
	e := q.e
	stores, err := e.txStores(eff)
	if err != nil {
		return nil, fmt.Errorf("disk: settle tx on %q: %w", q.name, err)
	}
	now := e.now()
	targets, err := e.txTargets(eff, now)
	if err != nil {
		return nil, fmt.Errorf("disk: settle tx on %q: %w", q.name, err)
	}
	b, err := q.settleTx(r, t.Token, engines.Settlement{Verdict: engines.Ack}, stores, targets, now)
	if err != nil || b == nil {
		return nil, err
	}
	if e.opts.Sync == SyncAlways || e.full(b) {
		return b, nil
	}
	return nil, nil
}
