package server

import (
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
)

// TestLatencyInfo: quantiles are the upper bounds of the buckets they fall
// in; past the last bound, the larger of that bound and the mean.
func TestLatencyInfo(t *testing.T) {
	bounds := []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond}
	for _, tc := range []struct {
		name          string
		counts        []uint64
		sum           time.Duration
		p50, p99, avg float64
	}{
		{"all fast", []uint64{100, 0, 0, 0}, 50 * time.Millisecond, 1, 1, 0.5},
		{"slow tail", []uint64{90, 9, 1, 0}, 190 * time.Millisecond, 1, 10, 1.9},
		{"beyond the last bound", []uint64{0, 0, 0, 2}, 2 * time.Second, 1000, 1000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n uint64
			for _, c := range tc.counts {
				n += c
			}
			got := latencyInfo(dispatch.Latency{Bounds: bounds, Counts: tc.counts, Count: n, Sum: tc.sum})
			if got.Count != n || got.P50MS != tc.p50 || got.P99MS != tc.p99 || got.MeanMS != tc.avg {
				t.Fatalf("got %+v, want p50 %v p99 %v mean %v", got, tc.p50, tc.p99, tc.avg)
			}
		})
	}
	if latencyInfo(dispatch.Latency{Bounds: bounds, Counts: make([]uint64, 4)}) != nil {
		t.Fatal("no calls should give no summary")
	}
}
