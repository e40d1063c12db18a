package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
)

// collector turns a Source into metrics at scrape time.
type collector struct {
	src Source
	m   *Metrics

	// Queues, labelled queue and engine.
	qDepth, qReady, qDelayed, qInFlight       *prometheus.Desc
	qEnqueued, qAcked, qNacked, qLeaseExpired *prometheus.Desc
	qDeadLettered, qExpired, qDuplicates      *prometheus.Desc
	// Consumers, labelled consumer and queue.
	cDeliveries, cTraps, cTimeouts, cBadVerdicts      *prometheus.Desc
	cLeaseLost, cReleased, cInstanceErrs, cEngineErrs *prometheus.Desc
	cCrashPauses                                      *prometheus.Desc
	cInFlight, cInstances, cConcurrency, cPaused      *prometheus.Desc
	cLatency, cInfo, cReloads, cLogDropped            *prometheus.Desc
	// Outbound HTTP, labelled consumer and queue.
	hRequests, hDenied, hOverBudget, hLatency *prometheus.Desc
	throttle                                  throttleDescs // throttle.go
}

func newCollector(src Source, m *Metrics) *collector {
	q := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("qrun_queue_"+name, help, []string{"queue", "engine"}, nil)
	}
	c := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("qrun_consumer_"+name, help, append([]string{"consumer", "queue"}, extra...), nil)
	}
	return &collector{
		src: src, m: m, throttle: newThrottleDescs(c),
		qDepth:        q("depth", "Messages in the queue: ready, delayed and in flight."),
		qReady:        q("ready", "Messages visible and waiting for a consumer."),
		qDelayed:      q("delayed", "Messages not yet visible (delay or retry backoff)."),
		qInFlight:     q("in_flight", "Messages leased to a consumer and not yet settled."),
		qEnqueued:     q("enqueued_total", "Messages enqueued, as counted by the engine."),
		qAcked:        q("acked_total", "Messages acknowledged (removed)."),
		qNacked:       q("nacked_total", "Failed deliveries (nacks)."),
		qLeaseExpired: q("lease_expired_total", "Leases that expired before their delivery was settled."),
		qDeadLettered: q("dead_lettered_total", "Messages moved from this queue to its dead-letter queue, or dropped without one."),
		qExpired:      q("expired_total", "Messages dropped because their TTL ran out."),
		qDuplicates:   q("duplicates_total", "Enqueues dropped as duplicates."),

		cDeliveries:   c("deliveries_total", "Deliveries settled, by the verdict applied.", "verdict"),
		cTraps:        c("traps_total", "Handler calls that trapped (or failed otherwise)."),
		cTimeouts:     c("timeouts_total", "Handler calls stopped for exceeding the consumer's timeout."),
		cBadVerdicts:  c("bad_verdicts_total", "Handler calls that returned an unknown verdict."),
		cLeaseLost:    c("lease_lost_total", "Deliveries whose lease ran out before their verdict was applied."),
		cReleased:     c("released_total", "Leased deliveries handed back unhandled (shutdown, pause)."),
		cInstanceErrs: c("instance_errors_total", "Plugin instances that failed to start."),
		cEngineErrs:   c("engine_errors_total", "Receives and verdicts the engine failed."),
		cCrashPauses:  c("crash_pauses_total", "Pauses of workers whose plugin broke its instance on several deliveries in a row."),
		cInFlight:     c("in_flight", "Deliveries being handled now."),
		cInstances:    c("instances", "Live plugin instances (the instance pool)."),
		cConcurrency:  c("concurrency", "Configured workers."),
		cPaused:       c("paused", "1 while the consumer is paused by an operator."),
		cLatency:      c("handler_duration_seconds", "Time from the start of a delivery to the handler's answer."),
		cInfo:         c("plugin_info", "The plugin module a consumer runs; always 1.", "version"),
		cReloads:      c("reloads_total", "Times the consumer's plugin was replaced while running."),
		cLogDropped:   c("guest_log_dropped_total", "Guest log lines dropped by the consumer's log rate limit."),

		hRequests:   c("http_requests_total", "Outbound HTTP requests sent by the guest, by allow-list entry and status class (error: no response).", "host", "class"),
		hDenied:     c("http_denied_total", "Outbound HTTP requests refused by the allow list (URL, redirect or resolved address)."),
		hOverBudget: c("http_over_budget_total", "Outbound HTTP requests refused because the delivery had made max_requests."),
		hLatency:    c("http_request_duration_seconds", "Duration of outbound HTTP requests, body included."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.qDepth, c.qReady, c.qDelayed, c.qInFlight, c.qEnqueued, c.qAcked, c.qNacked, c.qLeaseExpired,
		c.qDeadLettered, c.qExpired, c.qDuplicates,
		c.cDeliveries, c.cTraps, c.cTimeouts, c.cBadVerdicts, c.cLeaseLost, c.cReleased, c.cInstanceErrs,
		c.cEngineErrs, c.cCrashPauses, c.cInFlight, c.cInstances, c.cConcurrency, c.cPaused, c.cLatency, c.cInfo, c.cReloads,
		c.cLogDropped, c.hRequests, c.hDenied, c.hOverBudget, c.hLatency,
	} {
		ch <- d
	}
	c.throttle.describe(ch)
	c.m.engineErrors.Describe(ch)
	c.m.reconnects.Describe(ch)
}

// Collect implements prometheus.Collector: it reads the source now.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, q := range c.src.QueueSamples(ctx) {
		if q.Err != nil {
			c.m.EngineError(q.Engine, "stats")
			continue
		}
		s, l := q.Stats, []string{q.Name, q.Engine}
		gauge(c.qDepth, float64(s.Depth()), l...)
		gauge(c.qReady, float64(s.Ready), l...)
		gauge(c.qDelayed, float64(s.Delayed), l...)
		gauge(c.qInFlight, float64(s.InFlight), l...)
		counter(c.qEnqueued, s.EnqueuedTotal, l...)
		counter(c.qAcked, s.AckedTotal, l...)
		counter(c.qNacked, s.NackedTotal, l...)
		counter(c.qLeaseExpired, s.ExpiredLeaseTotal, l...)
		counter(c.qDeadLettered, s.DeadLetteredTotal, l...)
		counter(c.qExpired, s.ExpiredTotal, l...)
		counter(c.qDuplicates, s.DuplicateTotal, l...)
	}
	for _, cs := range c.src.ConsumerSamples() {
		s, l := cs.Stats, []string{cs.Name, cs.Queue}
		for _, v := range []struct {
			verdict engines.Verdict
			n       int64
		}{{engines.Ack, s.Acked}, {engines.Nack, s.Nacked}, {engines.Requeue, s.Requeued}, {engines.DeadLetter, s.DeadLettered}} {
			counter(c.cDeliveries, v.n, cs.Name, cs.Queue, v.verdict.String())
		}
		counter(c.cTraps, s.Traps, l...)
		counter(c.cTimeouts, s.Timeouts, l...)
		counter(c.cBadVerdicts, s.BadVerdicts, l...)
		counter(c.cLeaseLost, s.LeaseLost, l...)
		counter(c.cReleased, s.Released, l...)
		counter(c.cInstanceErrs, s.InstanceErrors, l...)
		counter(c.cEngineErrs, s.EngineErrors, l...)
		counter(c.cCrashPauses, s.CrashPauses, l...)
		gauge(c.cInFlight, float64(s.InFlight), l...)
		gauge(c.cInstances, float64(s.Instances), l...)
		gauge(c.cConcurrency, float64(cs.Concurrency), l...)
		paused := 0.0
		if cs.Paused {
			paused = 1
		}
		gauge(c.cPaused, paused, l...)
		gauge(c.cInfo, 1, cs.Name, cs.Queue, cs.Version)
		counter(c.cReloads, cs.Reloads, l...)
		counter(c.cLogDropped, int64(cs.LogDropped), l...)
		c.collectHTTP(ch, cs)
		c.throttle.collect(ch, cs)

		lat := cs.Latency
		buckets := make(map[float64]uint64, len(lat.Bounds))
		var cum uint64
		for i, b := range lat.Bounds {
			cum += lat.Counts[i]
			buckets[b.Seconds()] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.cLatency, lat.Count, lat.Sum.Seconds(), buckets, l...)
	}
	c.m.engineErrors.Collect(ch)
	c.m.reconnects.Collect(ch)
}

// collectHTTP emits a consumer's outbound HTTP metrics.
func (c *collector) collectHTTP(ch chan<- prometheus.Metric, cs ConsumerSample) {
	h := cs.HTTP
	for _, r := range h.Requests {
		ch <- prometheus.MustNewConstMetric(c.hRequests, prometheus.CounterValue, float64(r.N), cs.Name, cs.Queue, r.Host, r.Class)
	}
	ch <- prometheus.MustNewConstMetric(c.hDenied, prometheus.CounterValue, float64(h.Denied), cs.Name, cs.Queue)
	ch <- prometheus.MustNewConstMetric(c.hOverBudget, prometheus.CounterValue, float64(h.OverBudget), cs.Name, cs.Queue)
	bounds := httpout.LatencyBuckets()
	if len(h.LatencyCounts) != len(bounds)+1 {
		return
	}
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	for i, b := range bounds {
		cum += h.LatencyCounts[i]
		buckets[b] = cum
	}
	cum += h.LatencyCounts[len(bounds)]
	ch <- prometheus.MustNewConstHistogram(c.hLatency, cum, h.LatencySum.Seconds(), buckets, cs.Name, cs.Queue)
}
