package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/kvmem"
)

// Key-value stores, transactional settles and per-message state.
//
// Stores are kvmem indexes held by the engine. SettleTx makes a delivery's
// ack, its publishes and its store writes one critical section: it holds
// the engine's txMu, then the stores' locks (in name order), then the
// source queue's lock, then the target queues' locks (in name order), checks
// everything, and only then changes anything. No other operation holds two
// of these locks at once except in that order (Settle and Enqueue hold one
// queue, Apply one store), so nothing can deadlock, and no observer sees
// part of a transaction.

var (
	_ engines.KVEngine     = (*Engine)(nil)
	_ engines.TxSettler    = (*queue)(nil)
	_ engines.StateSettler = (*queue)(nil)
)

// OpenKV implements engines.KVEngine: the store lives as long as the engine.
func (e *Engine) OpenKV(ctx context.Context, spec engines.KVSpec) (engines.KV, error) {
	h, err := kvmem.OpenHandle("memory", spec, 0, e.store, e.isClosed)
	if err != nil {
		return nil, err
	}
	return &kvHandle{Handle: h, e: e}, nil
}

// store returns the named store, creating it if needed.
func (e *Engine) store(name string) (*kvmem.Store, error) {
	return kvmem.Lookup("memory", &e.mu, &e.closed, &e.stores, name)
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// kvHandle is one OpenKV's view of a store: kvmem.Handle reads, Apply
// writes as this engine does.
type kvHandle struct {
	*kvmem.Handle
	e *Engine
}

// Apply implements engines.KV.
func (h *kvHandle) Apply(ctx context.Context, ops ...engines.KVOp) ([]engines.KVEntry, error) {
	if err := h.Check("apply"); err != nil {
		return nil, err
	}
	h.Store.Lock()
	defer h.Store.Unlock()
	p, err := h.Store.PrepareLocked(ops)
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	h.Store.CommitLocked(p)
	return p.Results(), nil
}

// txTargets resolves the queues of eff's publishes, other than src,
// sorted by name (the lock order), after checking each message as
// Enqueue would.
func (e *Engine) txTargets(src *queue, eff *engines.Effects) (map[string]*queue, []*queue, error) {
	if eff == nil || len(eff.Publish) == 0 {
		return nil, nil, nil
	}
	by := make(map[string]*queue)
	var others []*queue
	for i := range eff.Publish {
		p := &eff.Publish[i]
		if limit := e.opts.MaxMessageSize; limit > 0 && len(p.Message.Body) > limit {
			return nil, nil, fmt.Errorf("memory: publish %d to %q: body is %d bytes, limit %d: %w", i, p.Queue, len(p.Message.Body), limit, engines.ErrTooLarge)
		}
		if p.Message.TTL < 0 || p.Message.Delay < 0 || p.Queue == "" {
			return nil, nil, fmt.Errorf("memory: publish %d to %q: empty queue name or negative delay or TTL: %w", i, p.Queue, engines.ErrInvalid)
		}
		if by[p.Queue] != nil {
			continue
		}
		q, err := e.queue(p.Queue)
		if err != nil {
			return nil, nil, err
		}
		by[p.Queue] = q
		if q != src {
			others = append(others, q)
		}
	}
	slices.SortFunc(others, func(a, b *queue) int { return cmp.Compare(a.name, b.name) })
	return by, others, nil
}

// SettleTx implements engines.TxSettler: the ack, the publishes and the
// store writes happen in one critical section, or, on any error, none.
func (q *queue) SettleTx(ctx context.Context, t engines.Ticket, s engines.Settlement, eff *engines.Effects) error {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return fmt.Errorf("memory: settle tx on %q: foreign ticket: %w", q.name, engines.ErrNotLeased)
	}
	if s.Verdict != engines.Ack {
		return fmt.Errorf("memory: settle tx on %q: verdict %s, want ack: %w", q.name, s.Verdict, engines.ErrInvalid)
	}
	e := q.e
	stores, err := kvmem.GroupByStore(eff, e.store)
	if err != nil {
		return err
	}
	if err := kvmem.ValidateGroups(stores); err != nil {
		return fmt.Errorf("memory: settle tx on %q: %w", q.name, err)
	}
	targets, others, err := e.txTargets(q, eff)
	if err != nil {
		return err
	}

	e.txMu.Lock()
	defer e.txMu.Unlock()
	for _, so := range stores {
		so.Store.Lock()
		defer so.Store.Unlock()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return q.errClosed("settle tx on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		return fmt.Errorf("memory: settle tx on %q: %w", q.name, engines.ErrLeaseLost)
	}
	for _, so := range stores {
		p, err := so.Store.PrepareLocked(so.Ops)
		if err != nil {
			return fmt.Errorf("memory: settle tx on %q: %w", q.name, err)
		}
		so.Prepared = p
	}
	for _, tq := range others {
		tq.mu.Lock()
		defer tq.mu.Unlock()
		if tq.closed {
			return tq.errClosed("publish to")
		}
	}
	// Everything is checked: from here on nothing fails.
	for _, so := range stores {
		so.Store.CommitLocked(so.Prepared)
	}
	if _, err := q.policy.Settle(&r.Lease, s, &q.st); err != nil {
		panic(fmt.Sprintf("memory: ack refused after its lease was checked: %v", err))
	}
	q.leases.Remove(int(r.idx))
	q.release(r, 0)
	if eff != nil {
		now := e.now()
		for i := range eff.Publish {
			p := &eff.Publish[i]
			targets[p.Queue].enqueueOne(&p.Message, now)
		}
	}
	return nil
}

// leased returns r when t still holds its lease; q.mu is held.
func (q *queue) leased(t engines.Ticket, op string) (*record, error) {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return nil, fmt.Errorf("memory: %s on %q: foreign ticket: %w", op, q.name, engines.ErrNotLeased)
	}
	if q.closed {
		return nil, q.errClosed(op + " on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		return nil, fmt.Errorf("memory: %s on %q: %w", op, q.name, engines.ErrLeaseLost)
	}
	return r, nil
}

// State implements engines.StateSettler.
func (q *queue) State(ctx context.Context, t engines.Ticket) ([]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	r, err := q.leased(t, "state")
	if err != nil {
		return nil, err
	}
	if r.mstate == nil {
		return nil, fmt.Errorf("memory: state of %q in %q: %w", r.msg.ID, q.name, engines.ErrNotFound)
	}
	return slices.Clone(r.mstate), nil
}

// SetState implements engines.StateSettler.
func (q *queue) SetState(ctx context.Context, t engines.Ticket, value []byte) error {
	if len(value) > engines.MaxStateSize {
		return fmt.Errorf("memory: set state on %q: %d bytes, limit %d: %w", q.name, len(value), engines.MaxStateSize, engines.ErrTooLarge)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	r, err := q.leased(t, "set state")
	if err != nil {
		return err
	}
	r.mstate = append(make([]byte, 0, len(value)), value...)
	return nil
}
