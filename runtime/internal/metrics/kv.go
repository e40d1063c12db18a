package metrics

import "github.com/prometheus/client_golang/prometheus"

// KVSample is one key-value store's counters at scrape time.
type KVSample struct {
	Store, Engine string
	// Ops counts kv_* calls on the store; Conflicts kv_cas calls refused
	// and commits refused by a version check; CommitErrors other failed
	// commits of effects that held the store's writes.
	Ops, Conflicts, CommitErrors uint64
}

// KVSource is implemented by a Source whose runtime holds key-value
// stores; New then collects their metrics too.
type KVSource interface {
	KVSamples() []KVSample
}

// kvCollector emits the qrun_kv_* metrics.
type kvCollector struct {
	src                      KVSource
	ops, conflicts, commitEr *prometheus.Desc
}

func newKVCollector(src KVSource) *kvCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("qrun_kv_"+name, help, []string{"store", "engine"}, nil)
	}
	return &kvCollector{
		src:       src,
		ops:       d("operations_total", "kv_* host function calls that reached the store."),
		conflicts: d("conflicts_total", "kv_cas calls refused, and commits of a delivery's effects refused by a version check (the delivery is redelivered)."),
		commitEr:  d("commit_errors_total", "Commits of a delivery's effects on the store that failed otherwise (the message is redelivered)."),
	}
}

// Describe implements prometheus.Collector.
func (c *kvCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ops
	ch <- c.conflicts
	ch <- c.commitEr
}

// Collect implements prometheus.Collector.
func (c *kvCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src.KVSamples() {
		ch <- prometheus.MustNewConstMetric(c.ops, prometheus.CounterValue, float64(s.Ops), s.Store, s.Engine)
		ch <- prometheus.MustNewConstMetric(c.conflicts, prometheus.CounterValue, float64(s.Conflicts), s.Store, s.Engine)
		ch <- prometheus.MustNewConstMetric(c.commitEr, prometheus.CounterValue, float64(s.CommitErrors), s.Store, s.Engine)
	}
}
