package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/hcl/v2"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// consumer is one running consumer: its config, its plugin across versions
// and its dispatcher.
type consumer struct {
	cfg     *config.Consumer
	live    *plugin.Live
	d       *dispatch.Consumer
	unwatch func()
}

// reloadState is the part of the Server that a config reload changes.
type reloadState struct {
	// mu serialises reloads against each other and against shutdown; it is
	// held for a whole reload, drains of removed consumers included.
	mu       sync.Mutex
	running  bool // Run started the consumers: new ones start at once
	stopping bool // shutdown began: no reload may start

	// listMu guards consumers, which the admin API reads during a reload.
	listMu    sync.Mutex
	consumers []*consumer

	// drainTimeout is the runtime's drain_timeout, which a reload may change.
	drainTimeout atomic.Int64
	// applied is the configuration in effect, which the next reload is
	// compared with. Server.cfg stays the one the server started with: its
	// runtime block is what actually runs until a restart.
	applied *config.File
}

func (s *Server) consumerList() []*consumer {
	s.reload.listMu.Lock()
	defer s.reload.listMu.Unlock()
	return slices.Clone(s.reload.consumers)
}

// startConsumers starts the consumers and returns the number of engines,
// read under the lock a reload changes them under.
func (s *Server) startConsumers() int {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	s.reload.running = true
	for _, c := range s.consumerList() {
		c.d.Start()
	}
	return len(s.engines)
}

// beginShutdown waits for a reload in progress and refuses later ones.
func (s *Server) beginShutdown() {
	s.reload.mu.Lock()
	s.reload.stopping = true
	s.reload.mu.Unlock()
}

func (s *Server) startWatcher() {
	w, err := plugin.NewWatcher(s.log, s.opts.WatchDebounce)
	if err != nil {
		s.log.Warn("plugin files are not watched; reload them with SIGHUP or POST /v1/reload", zap.Error(err))
		return
	}
	s.watcher = w
}

// watch registers c's plugin file with the watcher; a change triggers a
// hot swap of c's plugin.
func (s *Server) watch(c *consumer) *consumer {
	c.unwatch = func() {}
	if s.watcher == nil || c.cfg.Plugin == "" { // nothing to watch for a plugin given as bytes
		return c
	}
	stop, err := s.watcher.Watch(c.cfg.Plugin, c.live.Trigger)
	if err != nil {
		s.log.Warn("plugin file not watched; reload it with SIGHUP or POST /v1/reload",
			zap.String("consumer", c.cfg.Name), zap.String("file", c.cfg.Plugin), zap.Error(err))
		return c
	}
	c.unwatch = stop
	return c
}

// pluginInfo is what the admin API shows of a consumer's plugin.
func pluginInfo(c *consumer) *admin.PluginInfo {
	st := c.live.Status()
	pi := &admin.PluginInfo{
		Path: c.cfg.Plugin, Version: st.Digest, LoadedAt: st.LoadedAt,
		Reloads: st.Reloads, FailedReloads: st.FailedReloads, LastError: st.LastError,
		LoadedVersions: st.Versions,
	}
	if !st.FirstDeliveryAt.IsZero() {
		pi.FirstDeliveryAt = &st.FirstDeliveryAt
	}
	if !st.LastErrorAt.IsZero() {
		pi.LastErrorAt = &st.LastErrorAt
	}
	return pi
}

func shortVersion(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// ConfigOptions are the options a reload parses the configuration with:
// this server's engine registry, and plugin files checked as `qrun
// validate` checks them.
func (s *Server) ConfigOptions() config.Options {
	// Only the ABI check: a reload starts every new or changed plugin
	// itself before it changes anything (reloadPlan.prepare).
	return config.Options{Engines: s.opts.Registry, CheckPlugin: func(_ *config.File, c *config.Consumer) error {
		if err := plugin.CheckFile(c.Plugin); err != nil {
			return fmt.Errorf("plugin %s: %w", c.Plugin, err)
		}
		return nil
	}}
}

// Reload re-reads the configuration file the server was started with and
// applies the difference without a restart: engines added; queues added,
// removed or changed; consumers added, removed or changed; drain_timeout.
// Changed consumers are replaced make-before-break: the new one starts
// before the old one drains, so the queue is never without a consumer.
// Settings that cannot change live (an engine's own settings, the admin
// address, the data directory) are reported as warnings and keep their old
// values until a restart.
//
// A file that does not validate, or whose new parts fail to open (a plugin
// whose qrun_init fails, an engine that cannot start), changes nothing: the
// error is an *admin.InvalidConfigError with file:line:col diagnostics.
func (s *Server) Reload(ctx context.Context) (admin.ReloadResult, error) {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	if s.reload.stopping {
		return admin.ReloadResult{}, admin.ErrShuttingDown
	}
	path := s.cfg.Path
	if path == "" {
		return admin.ReloadResult{}, errors.New("server: reload: the configuration was built in Go (config.Spec), so there is no file to re-read")
	}
	res := admin.ReloadResult{Config: path, Changes: []string{}}
	if abs, err := filepath.Abs(path); err == nil {
		res.Config = abs
	}
	cfg, diags := config.Load(path, s.ConfigOptions())
	if diags.HasErrors() {
		return res, invalidConfig(cfg, diags)
	}
	for _, d := range diags {
		res.Warnings = append(res.Warnings, diagLine(d))
	}
	p := &reloadPlan{s: s, old: s.reload.applied, new: cfg, res: &res}
	if err := p.prepare(ctx); err != nil {
		p.rollback()
		s.log.Warn("config reload refused; nothing was changed", zap.String("config", path), zap.Error(err))
		return res, err
	}
	p.commit()
	if s.ready.Load() {
		s.startSchedules(s.reload.applied)
	}
	s.log.Info("config reloaded", zap.String("config", path), zap.Strings("changes", res.Changes), zap.Strings("warnings", res.Warnings))
	return res, nil
}

func invalidConfig(cfg *config.File, diags hcl.Diagnostics) error {
	var buf bytes.Buffer
	_ = config.WriteDiagnostics(&buf, cfg, diags, false)
	return &admin.InvalidConfigError{Diagnostics: buf.String()}
}

// diagLine is a one-line form of a diagnostic, for reload warnings.
func diagLine(d *hcl.Diagnostic) string {
	s := d.Summary
	if d.Detail != "" {
		s += ": " + d.Detail
	}
	if d.Subject != nil {
		s = config.Position(*d.Subject) + ": " + s
	}
	return s
}

// reloadPlan is one reload: prepare opens everything new (and can be rolled
// back), commit switches over and closes what is gone.
type reloadPlan struct {
	s        *Server
	old, new *config.File
	res      *admin.ReloadResult

	engines  map[string]engines.Engine // opened by this reload
	queues   map[string]*queue         // the queue map after the reload
	opened   []*queue                  // handles opened by this reload
	reconfig []*queue                  // old handles of queues whose settings changed
	removedQ []*queue
	start    []*consumer // new and replacement consumers
	stop     []*consumer // removed and replaced consumers
	keep     []*consumer
}

func (p *reloadPlan) change(format string, a ...any) {
	p.res.Changes = append(p.res.Changes, fmt.Sprintf(format, a...))
}

func (p *reloadPlan) warn(format string, a ...any) {
	p.res.Warnings = append(p.res.Warnings, fmt.Sprintf(format, a...))
}

func (p *reloadPlan) prepare(ctx context.Context) error {
	p.runtime()
	if err := p.openEngines(ctx); err != nil {
		return err
	}
	if err := p.openQueues(ctx); err != nil {
		return err
	}
	return p.buildConsumers(ctx)
}

// runtime applies drain_timeout; everything else in the block is read once
// at start.
func (p *reloadPlan) runtime() {
	o, n := p.old.Runtime, p.new.Runtime
	if o.DrainTimeout != n.DrainTimeout {
		p.change("runtime.drain_timeout: %v -> %v", o.DrainTimeout, n.DrainTimeout)
	}
	restart := func(name string, changed bool) {
		if changed {
			p.warn("runtime.%s changed: it takes effect at the next restart", name)
		}
	}
	restart("data_dir", o.DataDir != n.DataDir)
	restart("admin_listen", o.AdminListen != n.AdminListen)
	restart("admin_token", o.AdminToken != n.AdminToken)
	restart("log_level", o.LogLevel != n.LogLevel)
	restart("log_format", o.LogFormat != n.LogFormat)
	restart("cache_dir", o.CacheDir != n.CacheDir)
}

func (p *reloadPlan) openEngines(ctx context.Context) error {
	s := p.s
	p.engines = map[string]engines.Engine{}
	for i := range p.new.Engines {
		e := &p.new.Engines[i]
		if oe, ok := p.old.Engine(e.Name); ok {
			if oe.Type != e.Type || !bytes.Equal(bodyText(p.old, oe.Body), bodyText(p.new, e.Body)) {
				p.warn("engine %q changed: an engine's settings take effect at the next restart; the running engine is kept", e.Name)
			}
			continue
		}
		eng, err := s.opts.Registry.open(ctx, e.Type, EngineOptions{
			Name: e.Name, Body: e.Body, Eval: p.new.EvalContext(),
			DataDir: filepath.Join(s.cfg.Runtime.DataDir, e.Name), Logger: s.log.With(zap.String("engine", e.Name)),
			Events: s.engineEvents(e.Name),
		})
		if err != nil {
			return p.refuse(e.Range, "Cannot open engine", fmt.Sprintf("Engine %q failed to open: %v.", e.Name, err))
		}
		p.engines[e.Name] = eng
		p.change("engine %q added", e.Name)
	}
	return nil
}

// engine returns the engine named, running or opened by this reload.
func (p *reloadPlan) engine(name string) engines.Engine {
	if e, ok := p.engines[name]; ok {
		return e
	}
	return p.s.engines[name]
}

func (p *reloadPlan) openQueues(ctx context.Context) error {
	cur := *p.s.queues.Load()
	p.queues = make(map[string]*queue, len(p.new.Queues))
	for i := range p.new.Queues {
		qc := &p.new.Queues[i]
		oq, exists := cur[qc.Name]
		if exists && sameQueue(oq.cfg, qc) {
			p.queues[qc.Name] = &queue{cfg: qc, engine: qc.Engine, q: oq.q}
			continue
		}
		q, err := p.openQueue(ctx, qc)
		if err != nil {
			return p.refuse(qc.Range, "Cannot open queue", fmt.Sprintf("Queue %q failed to open: %v.", qc.Name, err))
		}
		p.opened = append(p.opened, q)
		p.queues[qc.Name] = q
		if exists {
			p.reconfig = append(p.reconfig, oq)
			p.change("queue %q changed", qc.Name)
			if oq.engine != qc.Engine {
				p.warn("queue %q moved from engine %q to %q: messages already in %q stay there", qc.Name, oq.engine, qc.Engine, oq.engine)
			}
		} else {
			p.change("queue %q added", qc.Name)
		}
	}
	for name, oq := range cur {
		if _, ok := p.queues[name]; !ok {
			p.removedQ = append(p.removedQ, oq)
			p.change("queue %q removed (its messages stay in engine %q)", name, oq.engine)
		}
	}
	return nil
}

func (p *reloadPlan) openQueue(ctx context.Context, qc *config.Queue) (*queue, error) {
	q, err := p.engine(qc.Engine).Open(ctx, engines.QueueSpec{
		Name: qc.Name, VisibilityTimeout: qc.VisibilityTimeout, MaxAttempts: qc.MaxAttempts,
		DeadLetter: qc.DeadLetter, Ordered: qc.Ordered, Retry: retryPolicy(qc.Retry),
	})
	if err != nil {
		return nil, err
	}
	return &queue{cfg: qc, engine: qc.Engine, q: q}, nil
}

func (p *reloadPlan) buildConsumers(ctx context.Context) error {
	cur := map[string]*consumer{}
	for _, c := range p.s.consumerList() {
		cur[c.cfg.Name] = c
	}
	changedQ := map[string]bool{}
	for _, q := range p.opened {
		changedQ[q.cfg.Name] = true
	}
	for i := range p.new.Consumers {
		cc := &p.new.Consumers[i]
		oc, exists := cur[cc.Name]
		if exists && sameConsumer(oc.cfg, cc) && !changedQ[cc.Queue] {
			p.keep = append(p.keep, oc)
			continue
		}
		c, err := p.s.newConsumer(ctx, cc, p.queues)
		if err != nil {
			return p.refuse(cc.PluginRange, "Cannot load plugin", fmt.Sprintf("%v.", err)) // the error names the consumer
		}
		p.start = append(p.start, c)
		if exists {
			p.stop = append(p.stop, oc)
			p.change("consumer %q changed", cc.Name)
		} else {
			p.change("consumer %q added", cc.Name)
		}
		delete(cur, cc.Name)
	}
	for _, oc := range p.keep {
		delete(cur, oc.cfg.Name)
	}
	for name, oc := range cur {
		p.stop = append(p.stop, oc)
		p.change("consumer %q removed", name)
	}
	return nil
}

// refuse turns a failure to open something new into the same kind of error
// a validation problem is, pointing at the block that caused it.
func (p *reloadPlan) refuse(at hcl.Range, summary, detail string) error {
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: at.Ptr()}
	return invalidConfig(p.new, hcl.Diagnostics{d})
}

// rollback undoes prepare: nothing it opened survives, and queues whose
// settings it changed in their engine get their old settings back.
func (p *reloadPlan) rollback() {
	ctx := context.Background()
	for _, c := range p.start {
		c.unwatch()
		_ = c.live.Close(ctx)
	}
	for _, q := range p.opened {
		_ = q.q.Close()
	}
	for _, oq := range p.reconfig {
		// Reopening with the old spec restores it; the handle is not needed.
		if q, err := p.openQueue(ctx, oq.cfg); err == nil {
			_ = q.q.Close()
		}
	}
	for _, e := range p.engines {
		_ = e.Close()
	}
}

// commit switches to the new configuration: new consumers start before the
// ones they replace drain, then what is gone is closed.
func (p *reloadPlan) commit() {
	s := p.s
	maps.Copy(s.engines, p.engines)
	s.queues.Store(&p.queues)
	s.reload.drainTimeout.Store(int64(p.new.Runtime.DrainTimeout))

	s.reload.listMu.Lock()
	s.reload.consumers = append(slices.Clone(p.keep), p.start...)
	s.reload.listMu.Unlock()
	for _, c := range p.keep {
		// The file may have changed without an event (a missed watch, a
		// network file system): re-read it.
		c.live.Trigger()
	}
	if s.reload.running {
		for _, c := range p.start {
			c.d.Start()
		}
	}
	if len(p.stop) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.reload.drainTimeout.Load()))
		if err := s.stopConsumers(ctx, p.stop); err != nil {
			s.log.Warn("reload: a removed consumer did not drain in time; its deliveries were released", zap.Error(err))
		}
		cancel()
		for _, c := range p.stop {
			c.unwatch()
			_ = c.live.Close(context.Background())
		}
	}
	for _, q := range append(p.reconfig, p.removedQ...) {
		if err := q.q.Close(); err != nil && !errors.Is(err, engines.ErrClosed) {
			s.log.Warn("reload: closing a queue handle", zap.String("queue", q.cfg.Name), zap.Error(err))
		}
	}
	for i := range p.old.Engines {
		name := p.old.Engines[i].Name
		if _, ok := p.new.Engine(name); ok {
			continue
		}
		if e, ok := s.engines[name]; ok {
			if err := e.Close(); err != nil {
				s.log.Warn("reload: closing a removed engine", zap.String("engine", name), zap.Error(err))
			}
			delete(s.engines, name)
			p.change("engine %q removed", name)
		}
	}
	s.reload.applied = p.new
}

func sameQueue(a, b *config.Queue) bool {
	return a.Engine == b.Engine && a.VisibilityTimeout == b.VisibilityTimeout && a.MaxAttempts == b.MaxAttempts &&
		a.DeadLetter == b.DeadLetter && a.Ordered == b.Ordered && a.Retry == b.Retry
}

func sameConsumer(a, b *config.Consumer) bool {
	return a.Queue == b.Queue && a.Plugin == b.Plugin && a.Concurrency == b.Concurrency && a.Timeout == b.Timeout &&
		a.MemoryLimit == b.MemoryLimit && a.Batch == b.Batch && maps.Equal(a.Config, b.Config) &&
		slices.Equal(a.Publish, b.Publish) && slices.Equal(a.KV, b.KV) && a.LogRate == b.LogRate && a.Isolation == b.Isolation &&
		reflect.DeepEqual(a.HTTP, b.HTTP) && reflect.DeepEqual(a.WASI, b.WASI) &&
		a.MaxCallDepth == b.MaxCallDepth && a.Throttle == b.Throttle
}

// bodyText is the source of an engine block's own settings, to tell whether
// they changed; nil when the body does not come from parsed source.
func bodyText(f *config.File, b hcl.Body) []byte {
	rb, ok := b.(interface{ Range() hcl.Range })
	if !ok {
		return nil
	}
	r := rb.Range()
	hf := f.Files[r.Filename]
	if hf == nil || r.End.Byte > len(hf.Bytes) || r.Start.Byte > r.End.Byte {
		return nil
	}
	return hf.Bytes[r.Start.Byte:r.End.Byte]
}
