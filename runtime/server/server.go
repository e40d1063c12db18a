// Package server assembles a qrun runtime from a validated config: it opens
// the engines and queues, loads the plugins, runs one dispatcher per
// consumer and serves the admin API, and it shuts all of that down in order.
// It is both what `qrun run` runs and the API of qrun as a Go library, in
// the manner of nats-server's embeddable server and River's client.
//
// # Using qrun from Go
//
// A program builds a *config.File, either from HCL (config.Load,
// config.Parse) or from Go values (config.Spec.Build, where a consumer's
// plugin may be the module's bytes instead of a file), and hands it to New
// with Options: its own *zap.Logger and prometheus.Registerer, and an
// Observer if it wants every settlement synchronously. Then:
//
//   - Start returns once the consumers run (Started is closed, Ready is
//     true); Stop(ctx) drains, bounded by ctx and the config's
//     drain_timeout, and closes everything; Done is closed when that is
//     finished, whoever started it, and Err says why if the server stopped
//     on its own. Run is Start plus Stop when its ctx ends, for cmd/qrun.
//   - Enqueue puts messages on any queue; EnqueueTx puts them on a postgres
//     queue inside the caller's pgx transaction, so they exist only if it
//     commits (engines/postgres.TxEnqueuer).
//   - Subscribe delivers delivery events (started; finished with verdict
//     and latency) on a buffered channel. The dispatcher never waits for
//     a subscriber: a full buffer drops events and counts them.
//
// With no admin_listen (a Spec's default) nothing listens; metrics are kept
// only when there is an admin listener or Options.Registerer. A library
// server never changes GOMAXPROCS (Options.OwnsGOMAXPROCS is cmd/qrun's).
// The design, the examples and the package layout are in docs/library.md.
//
// A running Server also reconfigures itself: Reload re-reads the config file
// and applies the difference (reload.go), and every consumer's plugin file is
// watched for hot swaps. See docs/reload.md.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/clock"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/internal/metrics"
	"github.com/qrun-dev/qrun/runtime/internal/schedule"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// Options tune a Server beyond its config file.
type Options struct {
	// Logger receives the runtime's logs, one line per event; nil
	// discards them. A program embedding qrun passes its own.
	Logger *zap.Logger
	// Registerer, if set, gets qrun's metrics (qrun_*, the same as the
	// admin API's /metrics serves, without the Go runtime and process
	// collectors, which belong to the program), so a program gathers them
	// with its own; they are unregistered when the server stops. Without
	// it and without an admin listener, no metrics are kept.
	Registerer prometheus.Registerer
	// Registry of engine types; nil means Builtin().
	Registry *Registry
	// Listener, if set, serves the admin API instead of listening on the
	// configured address (tests pass a port-0 listener).
	Listener net.Listener
	// Observer, if set, sees every settled delivery of every consumer,
	// synchronously (see Observer); Subscribe is the buffered alternative.
	Observer Observer
	// WatchDebounce is how long a plugin file must be quiet after a change
	// before it is reloaded; zero means plugin.DefaultDebounce.
	WatchDebounce time.Duration
	// Precompile, if set, compiles new versions of large plugins outside
	// the process before a hot swap loads them (plugin.HostOptions).
	Precompile func(ctx context.Context, cacheDir string, wasm []byte) error
	// OwnsGOMAXPROCS says the process is qrun's alone, so a hot swap may
	// raise GOMAXPROCS by one while the new version compiles and restore it
	// after, which keeps deliveries at speed on small hosts (see procs.go
	// in the plugin host). cmd/qrun sets it. A program embedding qrun
	// leaves it false: its GOMAXPROCS is then never changed.
	OwnsGOMAXPROCS bool
}

type queue struct {
	cfg    *config.Queue
	engine string
	q      engines.Queue
}

// Server is a running (or ready to run) qrun.
type Server struct {
	cfg  *config.File
	opts Options
	log  *zap.Logger

	engines map[string]engines.Engine
	// queues is replaced whole by a config reload (copy on write), so the
	// publish path reads it without a lock.
	queues  atomic.Pointer[map[string]*queue]
	host    *plugin.Host
	watcher *plugin.Watcher // nil when the platform offers no file watching
	ready   atomic.Bool
	addr    atomic.Value     // string: admin address once listening
	metrics *metrics.Metrics // nil without an admin listener (ops.go)

	reload reloadState
	life   lifecycle
	events eventHub
	sched  *schedule.Scheduler // schedules.go
	kv     kvStores            // kv.go
}

// New opens everything the config declares. On error, whatever was opened
// is closed again.
func New(ctx context.Context, cfg *config.File, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Registry == nil {
		opts.Registry = Builtin()
	}
	s := &Server{cfg: cfg, opts: opts, log: opts.Logger, engines: map[string]engines.Engine{}}
	s.sched = schedule.New(clock.Real{}, s.log)
	s.life.init()
	s.queues.Store(&map[string]*queue{})
	s.reload.drainTimeout.Store(int64(cfg.Runtime.DrainTimeout))
	s.reload.applied = cfg
	if s.metricsEnabled() {
		s.metrics = metrics.New(metricsSource{s}, s.log)
		if opts.Registerer != nil {
			if err := s.metrics.RegisterOn(opts.Registerer); err != nil {
				return nil, err
			}
		}
	}
	if err := s.open(ctx); err != nil {
		s.close(context.Background())
		return nil, err
	}
	return s, nil
}

// open opens the engines, queues and plugins the config declares.
func (s *Server) open(ctx context.Context) error {
	cfg, opts := s.cfg, s.opts
	if err := os.MkdirAll(cfg.Runtime.DataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	for i := range cfg.Engines {
		e := &cfg.Engines[i]
		eng, err := opts.Registry.open(ctx, e.Type, EngineOptions{
			Name: e.Name, Body: e.Body, Eval: cfg.EvalContext(),
			DataDir: filepath.Join(cfg.Runtime.DataDir, e.Name), Logger: s.log.With(zap.String("engine", e.Name)),
			Events: s.engineEvents(e.Name),
		})
		if err != nil {
			return fmt.Errorf("engine %q: %w", e.Name, err)
		}
		s.engines[e.Name] = eng
	}
	queues := map[string]*queue{}
	s.queues.Store(&queues) // filled before anything else can see it
	for i := range cfg.Queues {
		q, err := s.openQueue(ctx, &cfg.Queues[i])
		if err != nil {
			return err
		}
		queues[q.cfg.Name] = q
	}
	var err error
	if s.host, err = plugin.NewHost(ctx, plugin.HostOptions{CacheDir: cfg.Runtime.CacheDir, Logger: s.log, Precompile: opts.Precompile, ExtraProc: opts.OwnsGOMAXPROCS}); err != nil {
		return fmt.Errorf("plugin host: %w", err)
	}
	s.startWatcher()
	for i := range cfg.Consumers {
		c, err := s.newConsumer(ctx, &cfg.Consumers[i], queues)
		if err != nil {
			return err // it names the consumer
		}
		s.reload.consumers = append(s.reload.consumers, c)
	}
	return nil
}

func (s *Server) openQueue(ctx context.Context, qc *config.Queue) (*queue, error) {
	q, err := s.engines[qc.Engine].Open(ctx, engines.QueueSpec{
		Name: qc.Name, VisibilityTimeout: qc.VisibilityTimeout, MaxAttempts: qc.MaxAttempts,
		DeadLetter: qc.DeadLetter, Ordered: qc.Ordered, Retry: retryPolicy(qc.Retry),
	})
	if err != nil {
		return nil, fmt.Errorf("queue %q: %w", qc.Name, err)
	}
	return &queue{cfg: qc, engine: qc.Engine, q: q}, nil
}

// PluginSpec is the plugin.Spec consumer cc's plugin runs with. `qrun run`
// and `qrun validate` (through PluginChecker) both build it here, so they
// agree on which plugins start.
func PluginSpec(cc *config.Consumer) plugin.Spec {
	return plugin.Spec{
		Consumer: cc.Name, Path: cc.Plugin, Wasm: cc.PluginWasm, MemoryLimit: cc.MemoryLimit, Timeout: cc.Timeout,
		Config: cc.Config, Publish: cc.Publish, LogRate: cc.LogRate,
		HTTP: cc.HTTP, Env: cc.WASI.Env, Dirs: pluginDirs(cc.WASI.Dirs),
		MaxCallDepth: cc.MaxCallDepth,
	}
}

// PluginChecker is a config.Options.CheckPlugin that starts each
// consumer's plugin as run would (plugin.Host.Verify): compiled, checked
// against the ABI and memory_limit, instantiated and initialised within
// its timeout. Its plugin host is made on first use. With useCache false it
// compiles in memory, so validating writes nothing to disk; run passes true,
// so the compiled code lands in the file's runtime cache_dir and starting
// the server right after compiles nothing again. close releases the host.
func PluginChecker(ctx context.Context, useCache bool) (check func(*config.File, *config.Consumer) error, close func()) {
	var host *plugin.Host
	check = func(f *config.File, cc *config.Consumer) error {
		if host == nil {
			var opts plugin.HostOptions
			if useCache && f != nil {
				opts.CacheDir = f.Runtime.CacheDir
			}
			h, err := plugin.NewHost(ctx, opts)
			if err != nil {
				return err
			}
			host = h
		}
		return host.Verify(ctx, PluginSpec(cc))
	}
	return check, func() {
		if host != nil {
			_ = host.Close(ctx)
		}
	}
}

// newConsumer loads a consumer's plugin and builds its dispatcher on the
// queue handles in queues, ready to Start.
func (s *Server) newConsumer(ctx context.Context, cc *config.Consumer, queues map[string]*queue) (*consumer, error) {
	q := queues[cc.Queue]
	perMessage := cc.Isolation == config.IsolationPerMessage
	spec := PluginSpec(cc)
	if err := s.withKV(ctx, &spec, cc, queues); err != nil {
		return nil, err
	}
	p, err := s.host.LoadLive(ctx, spec, s, plugin.LiveOptions{Warm: cc.Concurrency, Refill: perMessage})
	if err != nil {
		return nil, err
	}
	c, err := dispatch.New(dispatch.Config{
		Name: cc.Name, Queue: q.q, Concurrency: cc.Concurrency, Batch: cc.Batch,
		VisibilityTimeout: q.cfg.VisibilityTimeout,
		HandlerTimeout:    cc.Timeout,
		Retry:             retryPolicy(q.cfg.Retry),
		PerMessage:        perMessage,
		NewInstance: func(ctx context.Context) (dispatch.Instance, error) {
			return p.NewInstance(ctx)
		},
		Logger:        s.log,
		Observer:      &consumerObserver{consumer: cc.Name, queue: cc.Queue, user: s.opts.Observer, hub: &s.events},
		RecordLatency: s.metrics != nil,
		Throttle:      s.newThrottle(cc, q),
		OnCommit:      onCommit(spec),
	})
	if err != nil {
		_ = p.Close(ctx)
		return nil, fmt.Errorf("consumer %q: %w", cc.Name, err)
	}
	s.log.Info("consumer loaded", zap.String("consumer", cc.Name), zap.String("queue", cc.Queue),
		zap.String("plugin", cc.Plugin), zap.String("version", shortVersion(p.Digest())), zap.Int("concurrency", cc.Concurrency))
	return s.watch(&consumer{cfg: cc, live: p, d: c}), nil
}

// pluginDirs converts a consumer's wasi dir blocks for the plugin host.
func pluginDirs(ds []config.Dir) []plugin.Dir {
	var out []plugin.Dir
	for _, d := range ds {
		out = append(out, plugin.Dir{Host: d.Host, Guest: d.Guest, ReadWrite: d.ReadWrite})
	}
	return out
}

// Publish implements plugin.Publisher: a guest's publish goes to the named
// queue, whatever its engine. The plugin host has already checked the
// consumer's allow-list. Go code uses Enqueue.
func (s *Server) Publish(ctx context.Context, queue string, msg engines.Message) error {
	q, err := s.Queue(queue)
	if err != nil {
		return err
	}
	return q.Enqueue(ctx, msg)
}

// Enqueue stores msgs on the named queue, whatever its engine, as the
// engine's one batch (all or nothing where the engine batches); it is how
// a Go program enqueues, and what the admin API's POST of messages calls
// (admin.Backend). A message without an ID is given one by the engine.
// An unknown queue is admin.ErrUnknownQueue. On postgres, EnqueueTx does
// the same inside the caller's transaction.
func (s *Server) Enqueue(ctx context.Context, queue string, msgs []engines.Message) error {
	q, err := s.Queue(queue)
	if err != nil {
		return err
	}
	return q.Enqueue(ctx, msgs...)
}

// Queues implements admin.Backend.
func (s *Server) Queues(ctx context.Context) ([]admin.QueueInfo, error) {
	queues := *s.queues.Load()
	out := make([]admin.QueueInfo, 0, len(queues))
	for name, q := range queues {
		st, err := q.q.Stats(ctx)
		if err != nil {
			return nil, fmt.Errorf("queue %q: %w", name, err)
		}
		out = append(out, admin.QueueInfo{Name: name, Engine: q.engine, DeadLetter: q.cfg.DeadLetter, Depth: st.Depth(), Stats: st})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Queue returns the open queue of that name.
func (s *Server) Queue(name string) (engines.Queue, error) {
	q, ok := (*s.queues.Load())[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", admin.ErrUnknownQueue, name)
	}
	return q.q, nil
}

// Ready implements admin.Backend.
func (s *Server) Ready() bool { return s.ready.Load() }

// AdminAddr is the address the admin API listens on, once Run has started it.
func (s *Server) AdminAddr() string {
	a, _ := s.addr.Load().(string)
	return a
}

func (s *Server) listen() (net.Listener, error) {
	if s.opts.Listener != nil {
		return s.opts.Listener, nil
	}
	addr := s.cfg.Runtime.AdminListen
	if addr == "" || addr == "off" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	return ln, nil
}

// stopConsumers stops consumers in parallel within ctx.
func (s *Server) stopConsumers(ctx context.Context, cs []*consumer) error {
	errs := make(chan error, len(cs))
	for _, c := range cs {
		go func() { errs <- c.d.Stop(ctx) }()
	}
	var all []error
	for range cs {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// close releases plugins, queues and engines, in that order. Nothing can be
// done about a failure this late but saying so.
func (s *Server) close(ctx context.Context) {
	warn := func(what, name string, err error) {
		if err != nil {
			s.log.Warn("closing "+what, zap.String(what, name), zap.Error(err))
		}
	}
	s.stopSchedules()
	for _, c := range s.consumerList() {
		c.unwatch()
		warn("plugin", c.cfg.Name, c.live.Close(ctx))
	}
	if s.watcher != nil {
		warn("plugin watcher", "", s.watcher.Close())
	}
	if s.host != nil {
		warn("plugin host", "", s.host.Close(ctx))
	}
	for _, err := range s.closeKV() {
		warn("kv", "", err)
	}
	for name, q := range *s.queues.Load() {
		warn("queue", name, q.q.Close())
	}
	for name, e := range s.engines {
		warn("engine", name, e.Close())
	}
	if s.metrics != nil {
		s.metrics.Unregister()
	}
}

// retryPolicy converts a queue's retry block for the dispatcher and the engine.
func retryPolicy(r config.Retry) engines.RetryPolicy {
	return engines.RetryPolicy{Initial: r.Initial, Max: r.Max, Multiplier: r.Multiplier, Jitter: r.Jitter}
}
