package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

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
	if spec.Name == "" {
		return nil, fmt.Errorf("memory: open kv: empty store name: %w", engines.ErrInvalid)
	}
	if spec.MaxValueSize < 0 {
		return nil, fmt.Errorf("memory: open kv %q: negative max value size %d: %w", spec.Name, spec.MaxValueSize, engines.ErrInvalid)
	}
	s, err := e.store(spec.Name)
	if err != nil {
		return nil, err
	}
	if spec.MaxValueSize != 0 {
		s.SetMaxValue(spec.MaxValueSize)
	}
	return &kvHandle{e: e, s: s}, nil
}

// store returns the named store, creating it if needed.
func (e *Engine) store(name string) (*kvmem.Store, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("memory: kv %q: %w", name, engines.ErrClosed)
	}
	s := e.stores[name]
	if s == nil {
		if e.stores == nil {
			e.stores = make(map[string]*kvmem.Store)
		}
		s = kvmem.New(name, 0, time.Now)
		e.stores[name] = s
	}
	return s, nil
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// kvHandle is one OpenKV's view of a store.
type kvHandle struct {
	e      *Engine
	s      *kvmem.Store
	closed atomic.Bool
}

// Name implements engines.KV.
func (h *kvHandle) Name() string { return h.s.Name() }

func (h *kvHandle) check(op string) error {
	if h.closed.Load() || h.e.isClosed() {
		return fmt.Errorf("memory: kv %s on %q: %w", op, h.s.Name(), engines.ErrClosed)
	}
	return nil
}

// Get implements engines.KV.
func (h *kvHandle) Get(ctx context.Context, key []byte) (engines.KVEntry, error) {
	if err := h.check("get"); err != nil {
		return engines.KVEntry{}, err
	}
	ent, err := h.s.Get(key)
	if err != nil {
		return ent, fmt.Errorf("memory: %w", err)
	}
	return ent, nil
}

// Apply implements engines.KV.
func (h *kvHandle) Apply(ctx context.Context, ops ...engines.KVOp) ([]engines.KVEntry, error) {
	if err := h.check("apply"); err != nil {
		return nil, err
	}
	h.s.Lock()
	defer h.s.Unlock()
	p, err := h.s.PrepareLocked(ops)
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	h.s.CommitLocked(p)
	return p.Results(), nil
}

// List implements engines.KV.
func (h *kvHandle) List(ctx context.Context, prefix, after []byte, limit int) ([]engines.KVEntry, error) {
	if err := h.check("list"); err != nil {
		return nil, err
	}
	out, err := h.s.List(prefix, after, limit)
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	return out, nil
}

// Close implements engines.KV.
func (h *kvHandle) Close() error {
	h.closed.Store(true)
	return nil
}

// storeOps is one store's share of a transaction, its batches merged in
// order.
type storeOps struct {
	s   *kvmem.Store
	ops []engines.KVOp
	p   *kvmem.Prepared
}

// txStores resolves the stores of eff's KV batches, merged per store and
// sorted by name (the lock order).
func (e *Engine) txStores(eff *engines.Effects) ([]*storeOps, error) {
	if eff == nil || len(eff.KV) == 0 {
		return nil, nil
	}
	by := make(map[string]*storeOps)
	var out []*storeOps
	for _, b := range eff.KV {
		so := by[b.Store]
		if so == nil {
			s, err := e.store(b.Store)
			if err != nil {
				return nil, err
			}
			so = &storeOps{s: s}
			by[b.Store] = so
			out = append(out, so)
		}
		so.ops = append(so.ops, b.Ops...)
	}
	slices.SortFunc(out, func(a, b *storeOps) int { return cmp.Compare(a.s.Name(), b.s.Name()) })
	return out, nil
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
	stores, err := e.txStores(eff)
	if err != nil {
		return err
	}
	for _, so := range stores {
		if err := so.s.Validate(so.ops); err != nil {
			return fmt.Errorf("memory: settle tx on %q: %w", q.name, err)
		}
	}
	targets, others, err := e.txTargets(q, eff)
	if err != nil {
		return err
	}

	e.txMu.Lock()
	defer e.txMu.Unlock()
	for _, so := range stores {
		so.s.Lock()
		defer so.s.Unlock()
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
		p, err := so.s.PrepareLocked(so.ops)
		if err != nil {
			return fmt.Errorf("memory: settle tx on %q: %w", q.name, err)
		}
		so.p = p
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
		so.s.CommitLocked(so.p)
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
