package server

import (
	"context"
	"fmt"
	"sort"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/dispatch"
	"github.com/qrun-dev/qrun/runtime/metrics"
)

// The operations surface of a Server: admin.Operator (consumers, peek,
// purge, redrive, pause, resume) and metrics.Source. Queue operations go to
// the engines through the optional interfaces of engines/ops.go; a queue
// whose engine lacks one answers engines.ErrUnsupported, which the API turns
// into 501.

// metricsEnabled says whether this server exports metrics: whenever it has
// an admin listener to serve them on.
func (s *Server) metricsEnabled() bool {
	if s.opts.Listener != nil {
		return true
	}
	a := s.cfg.Runtime.AdminListen
	return a != "" && a != "off"
}

// adminOptions configures the admin API with the operations routes and,
// when enabled, /metrics.
func (s *Server) adminOptions() admin.Options {
	o := admin.Options{Token: s.cfg.Runtime.AdminToken, Backend: s, Ops: operator{s}, Logger: s.log}
	if s.metrics != nil {
		o.Metrics = s.metrics.Handler()
	}
	return o
}

// Metrics returns the server's metrics registry, or nil when the admin API
// (and with it /metrics) is off.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

func (s *Server) queueEntry(name string) (*queue, error) {
	q, ok := s.queues[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", admin.ErrUnknownQueue, name)
	}
	return q, nil
}

func unsupported(q *queue, op string) error {
	return fmt.Errorf("queue %q (engine %q) cannot %s: %w", q.cfg.Name, q.engine, op, engines.ErrUnsupported)
}

// operator is the Server as the admin API's Operator; Server's own
// Consumers method, which tests use, returns the dispatchers instead.
type operator struct{ *Server }

// Consumers implements admin.Operator.
func (o operator) Consumers(ctx context.Context) ([]admin.ConsumerInfo, error) {
	return o.ConsumerInfos(ctx)
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

func (s *Server) consumer(name string) (int, *dispatch.Consumer, error) {
	for i, c := range s.consumers {
		if c.Name() == name {
			return i, c, nil
		}
	}
	return 0, nil, fmt.Errorf("%w: %q", admin.ErrUnknownConsumer, name)
}

// version is the plugin version of the i-th consumer (plugins and
// consumers are appended together by addConsumer).
func (s *Server) version(i int) string {
	if i < len(s.plugins) {
		return s.plugins[i].Version()
	}
	return ""
}

func (s *Server) consumerInfo(i int, c *dispatch.Consumer) admin.ConsumerInfo {
	st := c.Stats()
	info := admin.ConsumerInfo{
		Name: c.Name(), Queue: c.QueueName(), State: admin.StateRunning, Version: s.version(i),
		Concurrency: c.Concurrency(), InFlight: st.InFlight, Instances: st.Instances,
		Counts: admin.ConsumerCounts{
			Acked: st.Acked, Nacked: st.Nacked, Requeued: st.Requeued, DeadLettered: st.DeadLettered,
			Traps: st.Traps, Timeouts: st.Timeouts, BadVerdicts: st.BadVerdicts, LeaseLost: st.LeaseLost,
			Released: st.Released, InstanceErrors: st.InstanceErrors, EngineErrors: st.EngineErrors,
		},
		RecentErrors: []admin.ErrorRecord{},
	}
	if c.Paused() {
		info.State = admin.StatePaused
	}
	for _, e := range c.RecentErrors() {
		info.RecentErrors = append(info.RecentErrors, admin.ErrorRecord(e))
	}
	return info
}

// ConsumerInfos reports every consumer, sorted by name.
func (s *Server) ConsumerInfos(context.Context) ([]admin.ConsumerInfo, error) {
	out := make([]admin.ConsumerInfo, 0, len(s.consumers))
	for i, c := range s.consumers {
		out = append(out, s.consumerInfo(i, c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Pause pauses a consumer (see dispatch.Consumer.Pause).
func (s *Server) Pause(ctx context.Context, name string) (admin.ConsumerInfo, error) {
	i, c, err := s.consumer(name)
	if err != nil {
		return admin.ConsumerInfo{}, err
	}
	if err := c.Pause(ctx); err != nil {
		// The pause holds; a delivery still in hand outlived the request.
		return s.consumerInfo(i, c), fmt.Errorf("consumer %q is paused but a delivery was still being handled: %w", name, err)
	}
	return s.consumerInfo(i, c), nil
}

// Resume resumes a paused consumer.
func (s *Server) Resume(_ context.Context, name string) (admin.ConsumerInfo, error) {
	i, c, err := s.consumer(name)
	if err != nil {
		return admin.ConsumerInfo{}, err
	}
	c.Resume()
	return s.consumerInfo(i, c), nil
}

// QueueSamples implements metrics.Source.
func (s *Server) QueueSamples(ctx context.Context) []metrics.QueueSample {
	out := make([]metrics.QueueSample, 0, len(s.queues))
	for name, q := range s.queues {
		st, err := q.q.Stats(ctx)
		out = append(out, metrics.QueueSample{Name: name, Engine: q.engine, Stats: st, Err: err})
	}
	return out
}

// ConsumerSamples implements metrics.Source.
func (s *Server) ConsumerSamples() []metrics.ConsumerSample {
	out := make([]metrics.ConsumerSample, 0, len(s.consumers))
	for i, c := range s.consumers {
		cs := metrics.ConsumerSample{
			Name: c.Name(), Queue: c.QueueName(), Version: s.version(i), Paused: c.Paused(),
			Concurrency: c.Concurrency(), Stats: c.Stats(), Latency: c.Latency(),
		}
		if i < len(s.plugins) {
			cs.LogDropped = s.plugins[i].LogDropped()
		}
		out = append(out, cs)
	}
	return out
}

// EngineEvents lets an engine report what the runtime cannot see from the
// outside: errors talking to its storage and reconnects. Engines cannot
// import the runtime, so an engine type's Open adapts these methods to the
// engine's own hooks. Both are safe for concurrent use and cheap.
type EngineEvents interface {
	// Error counts a failure of op ("connect", "listen", "fsync", ...).
	Error(op string, err error)
	// Reconnected counts a re-established connection.
	Reconnected()
}

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
