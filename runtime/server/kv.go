package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/internal/metrics"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// kvStores are the server's open key-value stores, opened when the first
// consumer granted one starts (or an operator reads one) and kept until
// the server closes. Each has one plugin.KVStats shared by every consumer
// granted it, for the metrics.
type kvStores struct {
	mu   sync.Mutex
	open map[string]*kvStore
}

type kvStore struct {
	cfg    config.KVStore
	store  engines.KV
	engine engines.Engine
	stats  *plugin.KVStats
}

// kvStore returns the open store k, opening it if needed.
func (s *Server) kvStore(ctx context.Context, k config.KVStore) (*kvStore, error) {
	s.kv.mu.Lock()
	defer s.kv.mu.Unlock()
	if ks, ok := s.kv.open[k.Name]; ok {
		return ks, nil
	}
	eng, ok := s.engines[k.Engine]
	if !ok {
		return nil, fmt.Errorf("kv %q: engine %q is not running (an engine added by a reload serves stores after a restart)", k.Name, k.Engine)
	}
	kve, ok := eng.(engines.KVEngine)
	if !ok {
		return nil, fmt.Errorf("kv %q: engine %q holds no key-value stores: %w", k.Name, k.Engine, engines.ErrUnsupported)
	}
	st, err := kve.OpenKV(ctx, engines.KVSpec{Name: k.Name, MaxValueSize: k.MaxValueSize})
	if err != nil {
		return nil, fmt.Errorf("kv %q: %w", k.Name, err)
	}
	if s.kv.open == nil {
		s.kv.open = map[string]*kvStore{}
	}
	ks := &kvStore{cfg: k, store: st, engine: eng, stats: &plugin.KVStats{}}
	s.kv.open[k.Name] = ks
	return ks, nil
}

// kvList returns the open stores, by name.
func (s *Server) kvList() []*kvStore {
	s.kv.mu.Lock()
	defer s.kv.mu.Unlock()
	out := make([]*kvStore, 0, len(s.kv.open))
	for _, ks := range s.kv.open {
		out = append(out, ks)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].cfg.Name < out[j].cfg.Name })
	return out
}

// closeKV closes every open store.
func (s *Server) closeKV() []error {
	s.kv.mu.Lock()
	defer s.kv.mu.Unlock()
	var errs []error
	for name, ks := range s.kv.open {
		if err := ks.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kv %q: %w", name, err))
		}
	}
	s.kv.open = nil
	return errs
}

// transactional reports whether engine name applies a delivery's effects
// with its ack.
func (s *Server) transactional(name string) bool {
	e, ok := s.engines[name]
	return ok && e.Capabilities().Transactions
}

// withKV adds consumer cc's key-value grants to its plugin spec, opening
// the stores, and marks which of its effects are held until the ack: a
// store and the publishes to a queue in the consumer's own engine, when
// that engine is transactional (docs/state.md).
func (s *Server) withKV(ctx context.Context, spec *plugin.Spec, cc *config.Consumer, queues map[string]*queue) error {
	q, ok := queues[cc.Queue]
	if !ok {
		return nil
	}
	tx := s.transactional(q.engine)
	for _, k := range cc.KVStores {
		ks, err := s.kvStore(ctx, k)
		if err != nil {
			return fmt.Errorf("consumer %q: %w", cc.Name, err)
		}
		spec.KV = append(spec.KV, plugin.KVStore{
			Name: k.Name, Store: ks.store, MaxValueSize: k.MaxValueSize,
			Tx: tx && k.Engine == q.engine, Stats: ks.stats,
		})
	}
	if !tx {
		return nil
	}
	for _, name := range cc.Publish {
		if pq, ok := queues[name]; ok && pq.engine == q.engine {
			spec.TxPublish = append(spec.TxPublish, name)
		}
	}
	return nil
}

// onCommit returns a dispatch.Config.OnCommit that counts conflicts and
// failed commits against the stores whose writes or checks a commit held;
// nil when the consumer holds nothing of a store.
func onCommit(spec plugin.Spec) func(*engines.Effects, error) {
	stats := map[string]*plugin.KVStats{}
	for _, k := range spec.KV {
		if k.Tx && k.Stats != nil {
			stats[k.Name] = k.Stats
		}
	}
	if len(stats) == 0 {
		return nil
	}
	return func(e *engines.Effects, err error) {
		if err == nil {
			return
		}
		for _, b := range e.KV {
			st := stats[b.Store]
			switch {
			case st == nil:
			case errors.Is(err, engines.ErrConflict):
				st.Conflicts.Add(1)
			case !errors.Is(err, engines.ErrLeaseLost):
				st.CommitErrors.Add(1)
			}
		}
	}
}

// KV returns the named key-value store, opening it if no consumer has yet:
// what the admin API's /v1/kv routes and a Go program embedding qrun read
// and write stores through. Writes through it are immediate (they belong
// to no delivery). An undeclared store is admin.ErrUnknownKV.
func (s *Server) KV(ctx context.Context, name string) (engines.KV, error) {
	s.kv.mu.Lock()
	ks, ok := s.kv.open[name]
	s.kv.mu.Unlock()
	if ok {
		return ks.store, nil
	}
	k, ok := s.cfg.KVStore(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", admin.ErrUnknownKV, name)
	}
	ks, err := s.kvStore(ctx, *k)
	if err != nil {
		return nil, err
	}
	return ks.store, nil
}

// KVSamples implements metrics.KVSource: the open stores' counters.
func (m metricsSource) KVSamples() []metrics.KVSample {
	stores := m.s.kvList()
	out := make([]metrics.KVSample, 0, len(stores))
	for _, ks := range stores {
		out = append(out, metrics.KVSample{
			Store: ks.cfg.Name, Engine: ks.cfg.Engine,
			Ops: ks.stats.Ops.Load(), Conflicts: ks.stats.Conflicts.Load(), CommitErrors: ks.stats.CommitErrors.Load(),
		})
	}
	return out
}
