package dispatch

import (
	"sync/atomic"
	"time"
)

// latencyBounds are the upper bounds (inclusive, as Prometheus' "le") of the
// handler latency histogram: 1-2.5-5 steps from 1µs, where a WAT handler
// answers, to 10s, past the default 5s timeout. It is a table, never written.
var latencyBounds = [...]time.Duration{
	1 * time.Microsecond, 2500 * time.Nanosecond, 5 * time.Microsecond,
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	1 * time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	1 * time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// latency is one worker's histogram of handler call durations. Only its
// worker writes it, so recording is two uncontended atomic adds on the
// worker's own cache lines; Consumer.Latency adds the workers up when asked
// (at a metrics scrape), which is where the cost of aggregation belongs.
type latency struct {
	counts [len(latencyBounds) + 1]atomic.Uint64 // the last one is +Inf
	sum    atomic.Int64                          // nanoseconds
}

func (l *latency) observe(d time.Duration) {
	i := 0
	// Linear: fast handlers, the common case, stop after a step or two.
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sum.Add(int64(d))
}

// Latency is a consumer's histogram of handler call durations (from the
// start of a delivery to the plugin's answer), recorded only when
// Config.RecordLatency is set.
type Latency struct {
	// Bounds are the buckets' inclusive upper bounds, ascending.
	Bounds []time.Duration
	// Counts[i] counts calls that took at most Bounds[i] and more than
	// Bounds[i-1]; the extra last element counts the rest. Not cumulative.
	Counts []uint64
	// Count is the number of calls, Sum their total duration.
	Count uint64
	Sum   time.Duration
}

// Latency adds up the workers' histograms.
func (c *Consumer) Latency() Latency {
	out := Latency{Bounds: latencyBounds[:], Counts: make([]uint64, len(latencyBounds)+1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.workers {
		for i := range w.lat.counts {
			n := w.lat.counts[i].Load()
			out.Counts[i] += n
			out.Count += n
		}
		out.Sum += time.Duration(w.lat.sum.Load())
	}
	return out
}
