package kvmem

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Open returns the store called name in stores, creating it (and the map)
// if needed. The caller holds the lock that guards stores.
func Open(stores *map[string]*Store, name string) *Store {
	s := (*stores)[name]
	if s == nil {
		if *stores == nil {
			*stores = make(map[string]*Store)
		}
		s = New(name, 0, time.Now)
		(*stores)[name] = s
	}
	return s
}

// Lookup is an engine's store lookup: under mu, the engine lock that guards
// closed and stores, it fails with engines.ErrClosed (prefixed with engine)
// once the engine is closed, else returns Open(stores, name).
func Lookup(engine string, mu sync.Locker, closed *bool, stores *map[string]*Store, name string) (*Store, error) {
	mu.Lock()
	defer mu.Unlock()
	if *closed {
		return nil, fmt.Errorf("%s: kv %q: %w", engine, name, engines.ErrClosed)
	}
	return Open(stores, name), nil
}

// Handle is the part of an engine's engines.KV that reads: Name, Get, List
// and Close. An engine embeds it and adds Apply, the one method whose
// durability differs between engines.
type Handle struct {
	// Store is the store the handle views.
	Store *Store
	// engine prefixes errors ("memory", "disk").
	engine string
	// engineClosed reports whether the engine that owns Store is closed.
	engineClosed func() bool
	closed       atomic.Bool
}

// NewHandle returns a handle on s for the engine named engine (the prefix
// of its errors); engineClosed reports whether that engine is closed.
func NewHandle(engine string, s *Store, engineClosed func() bool) *Handle {
	return &Handle{Store: s, engine: engine, engineClosed: engineClosed}
}

// Name implements engines.KV.
func (h *Handle) Name() string { return h.Store.Name() }

// Check returns engines.ErrClosed, naming op, once the handle or its engine
// is closed.
func (h *Handle) Check(op string) error {
	if h.closed.Load() || h.engineClosed() {
		return fmt.Errorf("%s: kv %s on %q: %w", h.engine, op, h.Store.Name(), engines.ErrClosed)
	}
	return nil
}

// wrap wraps err with the handle's engine prefix.
func (h *Handle) wrap(err error) error { return &prefixed{h.engine, err} }

// prefixed is an error with its engine's name in front, made without
// fmt: a transactional delivery reads a key it has not written yet
// (engines.ErrNotFound) on every first write of a key, and formatting two
// errors cost a third of its read.
type prefixed struct {
	prefix string
	err    error
}

func (e *prefixed) Error() string { return e.prefix + ": " + e.err.Error() }
func (e *prefixed) Unwrap() error { return e.err }

// Get implements engines.KV.
func (h *Handle) Get(ctx context.Context, key []byte) (engines.KVEntry, error) {
	if err := h.Check("get"); err != nil {
		return engines.KVEntry{}, err
	}
	ent, err := h.Store.Get(key)
	if nf, ok := err.(*notFound); ok {
		nf.engine = h.engine // one allocation, not a second to wrap it
		return ent, nf
	}
	if err != nil {
		return ent, h.wrap(err)
	}
	return ent, nil
}

// Lookup is Get that reports an absent key as found false rather than as
// engines.ErrNotFound: a transactional delivery reads every key before its
// first write, and most such keys are new, so the error Get would build
// would be thrown away (runtime/plugin uses it when a store offers it).
func (h *Handle) Lookup(ctx context.Context, key []byte) (engines.KVEntry, bool, error) {
	if err := h.Check("get"); err != nil {
		return engines.KVEntry{}, false, err
	}
	if err := h.Store.checkKey(key); err != nil {
		return engines.KVEntry{}, false, h.wrap(err)
	}
	ent, ok := h.Store.lookup(key)
	return ent, ok, nil
}

// List implements engines.KV.
func (h *Handle) List(ctx context.Context, prefix, after []byte, limit int) ([]engines.KVEntry, error) {
	if err := h.Check("list"); err != nil {
		return nil, err
	}
	out, err := h.Store.List(prefix, after, limit)
	if err != nil {
		return nil, h.wrap(err)
	}
	return out, nil
}

// Close implements engines.KV: later calls on the handle fail with
// engines.ErrClosed; the store itself lives on.
func (h *Handle) Close() error {
	h.closed.Store(true)
	return nil
}

// StoreOps is one store's share of a transaction, its batches merged in
// order; Prepared is set once the transaction prepares it.
type StoreOps struct {
	Store    *Store
	Ops      []engines.KVOp
	Prepared *Prepared
}

// GroupByStore merges eff's KV batches per store, resolving each store
// name with lookup, and sorts the groups by name: the order in which a
// transaction takes the stores' locks.
func GroupByStore(eff *engines.Effects, lookup func(name string) (*Store, error)) ([]*StoreOps, error) {
	if eff == nil || len(eff.KV) == 0 {
		return nil, nil
	}
	// The first group and the slice that holds it come in one allocation.
	first := &struct {
		so  StoreOps
		out [1]*StoreOps
	}{}
	out := first.out[:0]
	for _, b := range eff.KV {
		// A delivery writes one store or two: a scan finds its group
		// cheaper than a map would.
		var so *StoreOps
		for _, g := range out {
			if g.Store.Name() == b.Store {
				so = g
				break
			}
		}
		if so == nil {
			s, err := lookup(b.Store)
			if err != nil {
				return nil, err
			}
			// The first batch's ops are taken as they are, not copied;
			// only a second batch of the same store makes a new slice.
			so = &first.so
			if len(out) > 0 {
				so = new(StoreOps)
			}
			*so = StoreOps{Store: s, Ops: b.Ops[:len(b.Ops):len(b.Ops)]}
			out = append(out, so)
			continue
		}
		so.Ops = append(so.Ops, b.Ops...)
	}
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b *StoreOps) int { return cmp.Compare(a.Store.Name(), b.Store.Name()) })
	}
	return out, nil
}

// ValidateGroups checks every group's ops against its store's limits, before
// any lock is taken.
func ValidateGroups(groups []*StoreOps) error {
	for _, so := range groups {
		if err := so.Store.Validate(so.Ops); err != nil {
			return err
		}
	}
	return nil
}

// OpenHandle is the body of an engine's OpenKV: it checks spec (maxName > 0
// bounds the store name's length), gets the store with lookup, applies the
// spec's value limit and returns a handle for engine (the prefix of its
// errors) that engineClosed closes.
func OpenHandle(engine string, spec engines.KVSpec, maxName int, lookup func(name string) (*Store, error), engineClosed func() bool) (*Handle, error) {
	switch {
	case spec.Name == "":
		return nil, fmt.Errorf("%s: open kv: empty store name: %w", engine, engines.ErrInvalid)
	case maxName > 0 && len(spec.Name) > maxName:
		return nil, fmt.Errorf("%s: open kv: store name of %d bytes, limit %d: %w", engine, len(spec.Name), maxName, engines.ErrInvalid)
	case spec.MaxValueSize < 0:
		return nil, fmt.Errorf("%s: open kv %q: negative max value size %d: %w", engine, spec.Name, spec.MaxValueSize, engines.ErrInvalid)
	}
	s, err := lookup(spec.Name)
	if err != nil {
		return nil, err
	}
	if spec.MaxValueSize != 0 {
		s.SetMaxValue(spec.MaxValueSize)
	}
	return NewHandle(engine, s, engineClosed), nil
}
