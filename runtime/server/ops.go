package server

import (
	"context"
	"fmt"
	"sort"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/internal/metrics"
)

// The operations surface of a Server: admin.Operator (consumers, peek,
// purge, redrive, pause, resume) and metrics.Source. Queue operations go to
// the engines through the optional interfaces of engines/ops.go; a queue
// whose engine lacks one answers engines.ErrUnsupported, which the API turns
// into 501.

// metricsEnabled says whether this server exports metrics: whenever it has
// an admin listener to serve them on or a registry to register them on.
func (s *Server) metricsEnabled() bool {
	if s.opts.Listener != nil || s.opts.Registerer != nil {
		return true
	}
	a := s.cfg.Runtime.AdminListen
	return a != "" && a != "off"
}

// adminOptions configures the admin API with the operations routes and,
// when enabled, /metrics.
func (s *Server) adminOptions() admin.Options {
	o := admin.Options{Token: s.cfg.Runtime.AdminToken, Backend: s, Ops: s, Logger: s.log}
	if s.metrics != nil {
		o.Metrics = s.metrics.Handler()
	}
	return o
}

func (s *Server) queueEntry(name string) (*queue, error) {
	q, ok := (*s.queues.Load())[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", admin.ErrUnknownQueue, name)
	}
	return q, nil
}

func unsupported(q *queue, op string) error {
	return fmt.Errorf("queue %q (engine %q) cannot %s: %w", q.cfg.Name, q.engine, op, engines.ErrUnsupported)
}

// Peek shows up to max messages of a queue without consuming them.
func (s *Server) Peek(ctx context.Context, queue string, max int) ([]engines.Delivery, error) {
	q, err := s.queueEntry(queue)
	if err != nil {
		return nil, err
	}
	p, ok := q.q.(engines.Peeker)
	if !ok {
		return nil, unsupported(q, "show messages without consuming them (peek)")
	}
	return p.Peek(ctx, max)
}

// PeekPage returns one page of a scan of a whole queue.
func (s *Server) PeekPage(ctx context.Context, queue string, opts engines.PeekOptions) (engines.PeekPage, error) {
	q, err := s.queueEntry(queue)
	if err != nil {
		return engines.PeekPage{}, err
	}
	p, ok := q.q.(engines.Peeker)
	if !ok {
		return engines.PeekPage{}, unsupported(q, "show messages without consuming them (peek)")
	}
	return p.PeekPage(ctx, opts)
}

// Purge removes a queue's ready and delayed messages.
func (s *Server) Purge(ctx context.Context, queue string) (int64, error) {
	q, err := s.queueEntry(queue)
	if err != nil {
		return 0, err
	}
	p, ok := q.q.(engines.Purger)
	if !ok {
		return 0, unsupported(q, "purge")
	}
	return p.Purge(ctx)
}

// Redrive moves dead letters back to their source queue (all when ids is empty).
func (s *Server) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	q, err := s.queueEntry(queue)
	if err != nil {
		return 0, err
	}
	r, ok := q.q.(engines.Redriver)
	if !ok {
		return 0, unsupported(q, "redrive dead letters")
	}
	return r.Redrive(ctx, ids)
}

// consumerView is a running consumer with what the operations surface
// reports about its plugin.
type consumerView struct {
	c          *dispatch.Consumer
	version    string
	reloads    int64
	logDropped uint64
	running    *consumer
}

// consumerViews is the one place the operations surface reads the
// server's consumers and plugins from.
func (s *Server) consumerViews() []consumerView {
	cs := s.consumerList()
	out := make([]consumerView, len(cs))
	for i, c := range cs {
		st := c.live.Status()
		out[i] = consumerView{c: c.d, version: shortVersion(st.Digest), reloads: st.Reloads, logDropped: c.live.LogDropped(), running: c}
	}
	return out
}

func (s *Server) consumer(name string) (consumerView, error) {
	for _, v := range s.consumerViews() {
		if v.c.Name() == name {
			return v, nil
		}
	}
	return consumerView{}, fmt.Errorf("%w: %q", admin.ErrUnknownConsumer, name)
}

func consumerInfo(v consumerView) admin.ConsumerInfo {
	c := v.c
	st := c.Stats()
	info := admin.ConsumerInfo{
		Name: c.Name(), Queue: c.QueueName(), State: admin.StateRunning, Version: v.version,
		Concurrency: c.Concurrency(), InFlight: st.InFlight, Instances: st.Instances,
		Counts: admin.ConsumerCounts{
			Acked: st.Acked, Nacked: st.Nacked, Requeued: st.Requeued, DeadLettered: st.DeadLettered,
			Traps: st.Traps, Timeouts: st.Timeouts, BadVerdicts: st.BadVerdicts, LeaseLost: st.LeaseLost,
			Released: st.Released, InstanceErrors: st.InstanceErrors, EngineErrors: st.EngineErrors,
			CrashPauses: st.CrashPauses,
		},
		RecentErrors: []admin.ErrorRecord{},
		Latency:      latencyInfo(c.Latency()),
	}
	if v.running != nil {
		info.Plugin = pluginInfo(v.running)
		info.Isolation = v.running.cfg.Isolation
	}
	if c.Paused() {
		info.State = admin.StatePaused
	}
	info.Throttle = throttleInfo(v)
	for _, e := range c.RecentErrors() {
		info.RecentErrors = append(info.RecentErrors, admin.ErrorRecord(e))
	}
	return info
}

// ConsumerInfos implements admin.ConsumerLister: every consumer, sorted by name.
func (s *Server) ConsumerInfos(context.Context) ([]admin.ConsumerInfo, error) {
	views := s.consumerViews()
	out := make([]admin.ConsumerInfo, 0, len(views))
	for _, v := range views {
		out = append(out, consumerInfo(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Pause pauses a consumer (see dispatch.Consumer.Pause).
func (s *Server) Pause(ctx context.Context, name string) (admin.ConsumerInfo, error) {
	v, err := s.consumer(name)
	if err != nil {
		return admin.ConsumerInfo{}, err
	}
	if err := v.c.Pause(ctx); err != nil {
		// The pause holds; a delivery still in hand outlived the request.
		return consumerInfo(v), fmt.Errorf("consumer %q is paused but a delivery was still being handled: %w", name, err)
	}
	return consumerInfo(v), nil
}

// Resume resumes a paused consumer.
func (s *Server) Resume(_ context.Context, name string) (admin.ConsumerInfo, error) {
	v, err := s.consumer(name)
	if err != nil {
		return admin.ConsumerInfo{}, err
	}
	v.c.Resume()
	return consumerInfo(v), nil
}

// metricsSource is the server as a metrics.Source; a type of its own, so
// the metrics package's types stay out of Server's methods.
type metricsSource struct{ s *Server }

// QueueSamples implements metrics.Source.
func (m metricsSource) QueueSamples(ctx context.Context) []metrics.QueueSample {
	return m.s.queueSamples(ctx)
}

// ConsumerSamples implements metrics.Source.
func (m metricsSource) ConsumerSamples() []metrics.ConsumerSample { return m.s.consumerSamples() }

func (s *Server) queueSamples(ctx context.Context) []metrics.QueueSample {
	queues := *s.queues.Load()
	out := make([]metrics.QueueSample, 0, len(queues))
	for name, q := range queues {
		st, err := q.q.Stats(ctx)
		out = append(out, metrics.QueueSample{Name: name, Engine: q.engine, Stats: st, Err: err})
	}
	return out
}

func (s *Server) consumerSamples() []metrics.ConsumerSample {
	views := s.consumerViews()
	out := make([]metrics.ConsumerSample, 0, len(views))
	for _, v := range views {
		c := v.c
		out = append(out, metrics.ConsumerSample{
			Name: c.Name(), Queue: c.QueueName(), Version: v.version, Paused: c.Paused(),
			Concurrency: c.Concurrency(), Stats: c.Stats(), Latency: c.Latency(),
			Reloads: v.reloads, LogDropped: v.logDropped, HTTP: v.running.live.HTTPStats(),
			Throttle: throttleSample(c),
		})
	}
	return out
}

// EngineEvents lets an engine report what the runtime cannot see from the
// outside: errors talking to its storage and reconnects. It is the
// engines package's Events, so an engine type's Open hands it to the
// engine as it is (postgres.Options.Events).
type EngineEvents = engines.Events

type engineEvents struct {
	name string
	m    *metrics.Metrics
	log  *zap.Logger
}

func (s *Server) engineEvents(name string) EngineEvents {
	return &engineEvents{name: name, m: s.metrics, log: s.log}
}

// Error implements EngineEvents; the engine logs the error itself.
func (e *engineEvents) Error(op string, _ error) {
	if e.m != nil {
		e.m.EngineError(e.name, op)
	}
}

// Reconnected implements EngineEvents.
func (e *engineEvents) Reconnected() {
	if e.m != nil {
		e.m.EngineReconnect(e.name)
	}
	e.log.Info("engine reconnected", zap.String("engine", e.name))
}
