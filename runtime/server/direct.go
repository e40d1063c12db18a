package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/config"
)

// ErrNotShared is returned by SendDirect for a queue whose engine lives
// inside the running qrun (memory) or must not be opened twice (an embedded
// store): such a queue is reached through the admin API.
var ErrNotShared = errors.New("the queue's engine is not shared between processes")

// Shared reports whether the named queue's engine can be opened by another
// process next to a running qrun (enginetype.Type.Shared), so that SendDirect
// can produce into it.
func (r *Registry) Shared(cfg *config.File, queue string) (bool, error) {
	_, e, err := findQueue(cfg, queue)
	if err != nil {
		return false, err
	}
	return r.types[e.Type].Shared, nil
}

func findQueue(cfg *config.File, name string) (*config.Queue, *config.Engine, error) {
	for i := range cfg.Queues {
		q := &cfg.Queues[i]
		if q.Name != name {
			continue
		}
		for j := range cfg.Engines {
			if cfg.Engines[j].Name == q.Engine {
				return q, &cfg.Engines[j], nil
			}
		}
		return nil, nil, fmt.Errorf("queue %q: engine %q is not declared", name, q.Engine)
	}
	return nil, nil, fmt.Errorf("queue %q is not declared in %s", name, cfg.Path)
}

// SendDirect enqueues msgs into the named queue from this process: it opens
// only that queue's engine, attaches to the queue without changing its
// settings, enqueues and closes. It is what `qrun send` does for engines
// whose queues other processes share (shm, postgres), so no admin API and no
// running qrun are needed. The engine is opened as a producer
// (enginetype.OpenOptions.Producer): no migrations, no background loops. The IDs are
// written back into msgs.
func SendDirect(ctx context.Context, cfg *config.File, reg *Registry, queue string, msgs []engines.Message, log *zap.Logger) (err error) {
	if reg == nil {
		reg = Builtin()
	}
	if log == nil {
		log = zap.NewNop()
	}
	_, ec, err := findQueue(cfg, queue)
	if err != nil {
		return err
	}
	if !reg.types[ec.Type].Shared {
		return fmt.Errorf("queue %q is in engine %q of type %q: %w", queue, ec.Name, ec.Type, ErrNotShared)
	}
	eng, err := reg.open(ctx, ec.Type, EngineOptions{
		Name: ec.Name, Body: ec.Body, Eval: cfg.EvalContext(),
		DataDir: filepath.Join(cfg.Runtime.DataDir, ec.Name), Logger: log.With(zap.String("engine", ec.Name)),
		Producer: true,
	})
	if err != nil {
		return fmt.Errorf("engine %q: %w", ec.Name, err)
	}
	defer func() {
		if cerr := eng.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("engine %q: %w", ec.Name, cerr)
		}
	}()
	q, err := eng.Open(ctx, engines.QueueSpec{Name: queue})
	if err != nil {
		return fmt.Errorf("queue %q: %w", queue, err)
	}
	defer q.Close()
	return q.Enqueue(ctx, msgs...)
}

// SharedKV reports whether the named key-value store's engine can be
// opened by another process next to a running qrun, so that OpenKVDirect
// can reach it.
func (r *Registry) SharedKV(cfg *config.File, store string) (bool, error) {
	_, e, err := findKV(cfg, store)
	if err != nil {
		return false, err
	}
	return r.types[e.Type].Shared, nil
}

func findKV(cfg *config.File, name string) (*config.KVStore, *config.Engine, error) {
	k, ok := cfg.KVStore(name)
	if !ok {
		return nil, nil, fmt.Errorf("kv %q is not declared in %s", name, cfg.Path)
	}
	e, ok := cfg.Engine(k.Engine)
	if !ok {
		return nil, nil, fmt.Errorf("kv %q: engine %q is not declared", name, k.Engine)
	}
	return k, e, nil
}

// OpenKVDirect opens the named key-value store from this process, as
// SendDirect opens a queue: only its engine, as a producer. It is what
// `qrun kv` does for stores whose engine other processes share
// (postgres). close releases the store and the engine.
func OpenKVDirect(ctx context.Context, cfg *config.File, reg *Registry, store string, log *zap.Logger) (kv engines.KV, close func() error, err error) {
	if reg == nil {
		reg = Builtin()
	}
	if log == nil {
		log = zap.NewNop()
	}
	k, ec, err := findKV(cfg, store)
	if err != nil {
		return nil, nil, err
	}
	if !reg.types[ec.Type].Shared {
		return nil, nil, fmt.Errorf("kv %q is in engine %q of type %q: %w", store, ec.Name, ec.Type, ErrNotShared)
	}
	eng, err := reg.open(ctx, ec.Type, EngineOptions{
		Name: ec.Name, Body: ec.Body, Eval: cfg.EvalContext(),
		DataDir: filepath.Join(cfg.Runtime.DataDir, ec.Name), Logger: log.With(zap.String("engine", ec.Name)),
		Producer: true,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("engine %q: %w", ec.Name, err)
	}
	kve, ok := eng.(engines.KVEngine)
	if !ok {
		_ = eng.Close()
		return nil, nil, fmt.Errorf("kv %q: engine %q holds no key-value stores: %w", store, ec.Name, engines.ErrUnsupported)
	}
	kv, err = kve.OpenKV(ctx, engines.KVSpec{Name: k.Name, MaxValueSize: k.MaxValueSize})
	if err != nil {
		_ = eng.Close()
		return nil, nil, fmt.Errorf("kv %q: %w", store, err)
	}
	return kv, func() error { return errors.Join(kv.Close(), eng.Close()) }, nil
}
