package dispatch

import (
	"testing"
	"time"
)

func TestLatencyBucketsAreInclusiveUpperBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d      time.Duration
		bucket int
	}{
		{0, 0},
		{time.Microsecond, 0},                      // le="1e-06" includes 1µs itself
		{time.Microsecond + 1, 1},                  // just above goes to the next
		{5 * time.Millisecond, 11},                 // on a boundary
		{10 * time.Second, len(latencyBounds) - 1}, // the last bound
		{time.Hour, len(latencyBounds)},            // +Inf
	}
	for _, tt := range tests {
		var l latency
		l.observe(tt.d)
		if l.counts[tt.bucket].Load() != 1 || l.sum.Load() != int64(tt.d) {
			t.Errorf("%v: not in bucket %d (le %v)", tt.d, tt.bucket, bound(tt.bucket))
		}
	}
	for i := 1; i < len(latencyBounds); i++ {
		if latencyBounds[i] <= latencyBounds[i-1] {
			t.Fatalf("bounds not ascending at %d", i)
		}
	}
}

func bound(i int) any {
	if i < len(latencyBounds) {
		return latencyBounds[i]
	}
	return "+Inf"
}

// BenchmarkObserve is what RecordLatency adds to one delivery, for a
// handler as fast as the WAT example (about 600ns a call).
func BenchmarkObserve(b *testing.B) {
	var l latency
	d := 600 * time.Nanosecond
	for range b.N {
		l.observe(d)
	}
}
