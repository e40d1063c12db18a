package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// throttleDescs are the metrics of consumers with rate limits or per-key
// caps (ConsumerSample.Throttle); a consumer without any has none.
type throttleDescs struct {
	waiting, seconds, throttled, keys *prometheus.Desc
}

func newThrottleDescs(c func(name, help string, extra ...string) *prometheus.Desc) throttleDescs {
	return throttleDescs{
		waiting:   c("throttle_waiting", "Deliveries waiting now for the consumer's rate limit or per-key cap (leased, not yet handled)."),
		seconds:   c("throttled_seconds_total", "Time deliveries spent waiting for the rate limit or per-key cap, summed."),
		throttled: c("throttled_total", "Deliveries that had to wait for the rate limit or per-key cap."),
		keys:      c("throttle_keys", "Per-key rate buckets and in-flight counts held (idle keys are dropped)."),
	}
}

func (t throttleDescs) describe(ch chan<- *prometheus.Desc) {
	ch <- t.waiting
	ch <- t.seconds
	ch <- t.throttled
	ch <- t.keys
}

func (t throttleDescs) collect(ch chan<- prometheus.Metric, cs ConsumerSample) {
	s := cs.Throttle
	if s == nil {
		return
	}
	l := []string{cs.Name, cs.Queue}
	ch <- prometheus.MustNewConstMetric(t.waiting, prometheus.GaugeValue, float64(s.Waiting), l...)
	ch <- prometheus.MustNewConstMetric(t.seconds, prometheus.CounterValue, s.ThrottledSeconds, l...)
	ch <- prometheus.MustNewConstMetric(t.throttled, prometheus.CounterValue, float64(s.Throttled), l...)
	ch <- prometheus.MustNewConstMetric(t.keys, prometheus.GaugeValue, float64(s.Keys), l...)
}
