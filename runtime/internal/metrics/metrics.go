// Package metrics exports qrun's state in the Prometheus format, with the
// official client library.
//
// Nothing here sits on the delivery path. Queue figures come from the
// engines' Stats when Prometheus scrapes, consumer figures from the
// dispatcher's per-worker counters and latency histograms, added up at the
// same moment; a custom Collector turns both into constant metrics. So a
// delivery costs the same with metrics as without (the histogram's two
// atomic adds on the worker's own cache line aside), and a figure is never
// older than the scrape that reports it. Only events that have no counter
// of their own elsewhere, an engine's connection errors and reconnects, are
// counted here as they happen, through EngineError and EngineReconnect.
//
// Every name starts with qrun_; counters end in _total and durations are in
// seconds, as Prometheus' naming conventions ask.
package metrics

import (
	"context"
	"fmt"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/internal/throttle"
)

// QueueSample is one queue's figures at scrape time.
type QueueSample struct {
	Name, Engine string
	Stats        engines.Stats
	// Err is set when the engine could not report; the queue is left out
	// of the scrape and counted as an engine error (op "stats").
	Err error
}

// ConsumerSample is one consumer's figures at scrape time.
type ConsumerSample struct {
	Name, Queue string
	// Version identifies the plugin module the consumer runs.
	Version     string
	Paused      bool
	Concurrency int
	Stats       dispatch.Stats
	Latency     dispatch.Latency
	// Reloads counts plugin replacements since start.
	Reloads int64
	// LogDropped counts guest log lines dropped by the consumer's rate limit.
	LogDropped uint64
	// HTTP is the consumer's outbound HTTP counters (http_request).
	HTTP httpout.Stats
	// Throttle is the consumer's rate limit and per-key cap state; nil
	// without either.
	Throttle *throttle.Stats
}

// Source is what the collector reads at scrape time: the running runtime.
type Source interface {
	QueueSamples(ctx context.Context) []QueueSample
	ConsumerSamples() []ConsumerSample
}

// ScrapeTimeout bounds how long a scrape waits for the engines' Stats.
const ScrapeTimeout = 10 * time.Second

// Metrics is one runtime's registry.
type Metrics struct {
	reg          *prometheus.Registry
	own          []prometheus.Collector // qrun's own collectors, for RegisterOn
	external     prometheus.Registerer  // set by RegisterOn
	engineErrors *prometheus.CounterVec
	reconnects   *prometheus.CounterVec
	log          *zap.Logger
}

// New builds a registry holding the runtime collector for src, the engine
// event counters and the Go runtime and process collectors.
func New(src Source, log *zap.Logger) *Metrics {
	if log == nil {
		log = zap.NewNop()
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		engineErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qrun_engine_errors_total",
			Help: "Errors an engine reported or returned, by operation.",
		}, []string{"engine", "op"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qrun_engine_reconnects_total",
			Help: "Times an engine re-established its connection to its storage.",
		}, []string{"engine"}),
		log: log,
	}
	// The engine counters are collected by the runtime collector, after
	// it has counted the Stats failures of this very scrape.
	m.own = []prometheus.Collector{newCollector(src, m)}
	if ks, ok := src.(KVSource); ok { // kv.go
		m.own = append(m.own, newKVCollector(ks))
	}
	m.reg.MustRegister(m.own...)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// RegisterOn also registers qrun's own metrics (not the Go runtime and
// process collectors, which belong to the program) on reg: a program
// embedding qrun gathers them with its own. A collector may serve several
// registries, so the admin API's /metrics keeps working too. Unregister
// undoes it, so a later runtime may register on the same reg.
func (m *Metrics) RegisterOn(reg prometheus.Registerer) error {
	for i, c := range m.own {
		if err := reg.Register(c); err != nil {
			for _, done := range m.own[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("metrics: register qrun's collector: %w", err)
		}
	}
	m.external = reg
	return nil
}

// Unregister removes what RegisterOn registered.
func (m *Metrics) Unregister() {
	if m.external == nil {
		return
	}
	for _, c := range m.own {
		m.external.Unregister(c)
	}
	m.external = nil
}

// Registry is the registry, for tests and for embedding qrun's metrics
// into another exporter.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text and OpenMetrics formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(m.log.With(zap.String("component", "metrics"))),
		ErrorHandling: promhttp.ContinueOnError, // a broken collector must not hide the others
		Registry:      m.reg,                    // promhttp's own request counters
	})
}

// EngineError counts an error of engine during op (e.g. "connect",
// "receive", "stats"). Engines call it through the hook the server gives
// them; it is safe for concurrent use and cheap.
func (m *Metrics) EngineError(engine, op string) {
	m.engineErrors.WithLabelValues(engine, op).Inc()
}

// EngineReconnect counts a reconnect of engine.
func (m *Metrics) EngineReconnect(engine string) {
	m.reconnects.WithLabelValues(engine).Inc()
}
