package metrics_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/internal/metrics"
)

// fakeSource is a test double for the runtime.
type fakeSource struct {
	queues    []metrics.QueueSample
	consumers []metrics.ConsumerSample
}

func (f *fakeSource) QueueSamples(context.Context) []metrics.QueueSample { return f.queues }
func (f *fakeSource) ConsumerSamples() []metrics.ConsumerSample          { return f.consumers }

func gather(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func TestHistogramBucketsAreCumulativeSeconds(t *testing.T) {
	t.Parallel()
	lat := dispatch.Latency{
		Bounds: []time.Duration{time.Millisecond, 10 * time.Millisecond},
		Counts: []uint64{3, 2, 1}, // 3 <= 1ms, 2 in (1ms, 10ms], 1 above
		Count:  6, Sum: 50 * time.Millisecond,
	}
	src := &fakeSource{consumers: []metrics.ConsumerSample{{Name: "c", Queue: "q", Version: "abc", Paused: true, Latency: lat,
		Stats: dispatch.Stats{Acked: 4, Traps: 1}}}}
	mfs := gather(t, metrics.New(src, nil))
	h := mfs["qrun_consumer_handler_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 6 || h.GetSampleSum() != 0.05 {
		t.Fatalf("count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	want := map[float64]uint64{0.001: 3, 0.01: 5}
	for _, b := range h.GetBucket() {
		if want[b.GetUpperBound()] != b.GetCumulativeCount() {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want[b.GetUpperBound()])
		}
	}
	if v := mfs["qrun_consumer_paused"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("paused = %v", v)
	}
	if v := mfs["qrun_consumer_traps_total"].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("traps = %v", v)
	}
}

func TestQueueStatsErrorCountsAnEngineError(t *testing.T) {
	t.Parallel()
	src := &fakeSource{queues: []metrics.QueueSample{
		{Name: "ok", Engine: "e", Stats: engines.Stats{Ready: 2, Delayed: 1}},
		{Name: "broken", Engine: "e", Err: errors.New("connection refused")},
	}}
	m := metrics.New(src, nil)
	mfs := gather(t, m)
	depth := mfs["qrun_queue_depth"].GetMetric()
	if len(depth) != 1 || depth[0].GetGauge().GetValue() != 3 {
		t.Fatalf("depth samples %v: want only the healthy queue, 3", depth)
	}
	errs := mfs["qrun_engine_errors_total"].GetMetric()
	if len(errs) != 1 || errs[0].GetCounter().GetValue() != 1 {
		t.Fatalf("engine errors %v, want 1 (op stats)", errs)
	}
}

func TestHandlerServesTextFormat(t *testing.T) {
	t.Parallel()
	m := metrics.New(&fakeSource{}, nil)
	m.EngineReconnect("pg")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, `qrun_engine_reconnects_total{engine="pg"} 1`) || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("%d:\n%s", rec.Code, body)
	}
}

// BenchmarkScrape measures one scrape of a runtime with 20 queues and 10
// consumers; it runs off the delivery path, every scrape interval.
func BenchmarkScrape(b *testing.B) {
	src := &fakeSource{}
	for i := range 20 {
		src.queues = append(src.queues, metrics.QueueSample{Name: "q" + string(rune('a'+i)), Engine: "e"})
	}
	for i := range 10 {
		src.consumers = append(src.consumers, metrics.ConsumerSample{Name: "c" + string(rune('a'+i)), Queue: "q",
			Latency: dispatch.Latency{Bounds: []time.Duration{time.Millisecond}, Counts: []uint64{1, 1}, Count: 2}})
	}
	h := metrics.New(src, nil).Handler()
	b.ReportAllocs()
	for range b.N {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	}
}

// BenchmarkScrapeBareGoExporter is the ceiling BenchmarkScrape is compared
// with: the Go runtime and process collectors alone, which any Go program
// exporting Prometheus metrics serves, through the same handler.
func BenchmarkScrapeBareGoExporter(b *testing.B) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	b.ReportAllocs()
	for range b.N {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	}
}

func TestHTTPMetrics(t *testing.T) {
	t.Parallel()
	counts := make([]uint64, len(httpout.LatencyBuckets())+1)
	counts[0], counts[len(counts)-1] = 2, 1 // two fast, one beyond the last bound
	src := &fakeSource{consumers: []metrics.ConsumerSample{{Name: "c", Queue: "q", HTTP: httpout.Stats{
		Requests:      []httpout.HostCount{{Host: "*.example.com", Class: "2xx", N: 2}, {Host: "*.example.com", Class: "error", N: 1}},
		Denied:        4,
		OverBudget:    5,
		LatencyCounts: counts,
		LatencySum:    40 * time.Second,
	}}}}
	mfs := gather(t, metrics.New(src, nil))
	reqs := mfs["qrun_consumer_http_requests_total"].GetMetric()
	if len(reqs) != 2 || reqs[0].GetCounter().GetValue()+reqs[1].GetCounter().GetValue() != 3 {
		t.Fatalf("requests %v", reqs)
	}
	labels := map[string]string{}
	for _, l := range reqs[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["host"] != "*.example.com" || labels["consumer"] != "c" || (labels["class"] != "2xx" && labels["class"] != "error") {
		t.Fatalf("labels %v", labels)
	}
	if v := mfs["qrun_consumer_http_denied_total"].GetMetric()[0].GetCounter().GetValue(); v != 4 {
		t.Errorf("denied = %v", v)
	}
	if v := mfs["qrun_consumer_http_over_budget_total"].GetMetric()[0].GetCounter().GetValue(); v != 5 {
		t.Errorf("over budget = %v", v)
	}
	h := mfs["qrun_consumer_http_request_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 40 || h.GetBucket()[0].GetCumulativeCount() != 2 {
		t.Fatalf("histogram %v", h)
	}
}
