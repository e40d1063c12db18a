package throttle

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRateAccuracy measures how close a limited consumer comes to its
// rate on the real clock: four workers admit as fast as the limit lets
// them for 10 s, at 1,000/s with a burst of 10 (10 ms of slack for a late wake-up). It reports the achieved
// rate and its error against the configured one; docs/schedules.md states
// the bound (burst + rate × T) this should sit within.
//
//	go test -run '^$' -bench RateAccuracy -benchtime 1x ./runtime/internal/throttle
func BenchmarkRateAccuracy(b *testing.B) {
	const (
		rate   = 1000.0
		window = 10 * time.Second
	)
	for range b.N {
		th := New(Config{Rate: rate, Burst: 10})
		ctx, cancel := context.WithTimeout(context.Background(), window)
		var n atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 4 {
			wg.Go(func() {
				for {
					release, err := th.Admit(ctx, nil, nil)
					if err != nil {
						return
					}
					release()
					n.Add(1)
				}
			})
		}
		wg.Wait()
		cancel()
		got := float64(n.Load()) / time.Since(start).Seconds()
		b.ReportMetric(got, "admitted/s")
		b.ReportMetric(100*math.Abs(got-rate)/rate, "error_%")
	}
}

// BenchmarkAdmitPerKey is the per-delivery cost of a per-key cap that is
// never reached: the path every delivery of a capped consumer takes.
//
//	go test -run '^$' -bench AdmitPerKey -benchmem ./runtime/internal/throttle
func BenchmarkAdmitPerKey(b *testing.B) {
	th := New(Config{MaxInFlightPerKey: 2, ConcurrencyKey: "k"})
	attrs := map[string]string{"k": "a"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		release, err := th.Admit(ctx, attrs, nil)
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}
