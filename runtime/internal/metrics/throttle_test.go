package metrics_test

import (
	"testing"

	"github.com/qrun-dev/qrun/runtime/internal/metrics"
	"github.com/qrun-dev/qrun/runtime/internal/throttle"
)

// A throttled consumer has the throttle metrics; one without limits has
// none of them.
func TestThrottleMetrics(t *testing.T) {
	t.Parallel()
	src := &fakeSource{consumers: []metrics.ConsumerSample{
		{Name: "limited", Queue: "q", Throttle: &throttle.Stats{Waiting: 3, ThrottledSeconds: 1.5, Throttled: 7, Keys: 2}},
		{Name: "free", Queue: "q"},
	}}
	mfs := gather(t, metrics.New(src, nil))
	for name, want := range map[string]float64{
		"qrun_consumer_throttle_waiting": 3, "qrun_consumer_throttled_seconds_total": 1.5,
		"qrun_consumer_throttled_total": 7, "qrun_consumer_throttle_keys": 2,
	} {
		ms := mfs[name].GetMetric()
		if len(ms) != 1 {
			t.Fatalf("%s: %d series, want 1 (the limited consumer's)", name, len(ms))
		}
		v := ms[0].GetGauge().GetValue() + ms[0].GetCounter().GetValue()
		if v != want || ms[0].GetLabel()[0].GetValue() != "limited" {
			t.Errorf("%s = %v %v, want %v for limited", name, v, ms[0].GetLabel(), want)
		}
	}
}
