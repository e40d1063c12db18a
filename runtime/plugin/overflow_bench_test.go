package plugin

import (
	"bufio"
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// BenchmarkStackOverflow is what a guest recursing without end costs: one
// delivery of runaway.wat's body "r" on a fresh instance (an overflow
// breaks its instance), instance included. "default" is under
// DefaultMaxCallDepth; "unbounded" raises the bound past what wazero's own
// stack allows, which is what an overflow cost before the bound existed
// (issue 14). Besides time it reports the memory an overflow leaves the
// process holding: peak-rss-MB is the growth of the resident set's high
// water mark (VmHWM, reset first where the kernel allows) over the run,
// heap-sys-MB the growth of the heap the Go runtime obtained from the
// system (an overflowing stack is Go heap, which wazero grows by doubling).
func BenchmarkStackOverflow(b *testing.B) {
	for _, tc := range []struct {
		name  string
		depth int
	}{{"default", 0}, {"unbounded", math.MaxInt32}} {
		b.Run(tc.name, func(b *testing.B) {
			h := newTestHost(b, nil)
			p := load(b, h, "runaway", Spec{MaxCallDepth: tc.depth, Timeout: time.Minute}, nil)
			d := delivery("r", nil)
			ctx := context.Background()
			runtime.GC()
			resetPeakRSS()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			hwm := procStatusKB(b, "VmHWM")
			b.ReportAllocs() // B/op: what an overflow allocates, its wazero stack mostly
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				in, err := p.NewInstance(ctx)
				if err != nil {
					b.Fatal(err)
				}
				r := in.Handle(ctx, d, time.Now())
				if r.Err == nil || r.Verdict != engines.Nack {
					b.Fatalf("got %+v, want a failed delivery", r)
				}
				if tc.depth == 0 && !errors.Is(r.Err, ErrCallDepth) {
					b.Fatalf("got %v, want ErrCallDepth", r.Err)
				}
				_ = in.Close(ctx)
			}
			b.StopTimer()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			const mb = 1 << 20
			b.ReportMetric(float64(procStatusKB(b, "VmHWM")-hwm)/1024, "peak-rss-MB")
			b.ReportMetric(float64(int64(after.HeapSys)-int64(before.HeapSys))/mb, "heap-sys-MB")
		})
	}
}

// resetPeakRSS resets the process's VmHWM to its current resident set
// (Linux 4.0 and later); where it cannot, the peak-rss-MB figure is only
// what the run added above an earlier peak.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// procStatusKB reads a "kB" field of /proc/self/status; 0 where there is
// none (not Linux).
func procStatusKB(tb testing.TB, field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		return v
	}
	return 0
}

// BenchmarkStopLatency is how long after its timeout a runaway guest is
// stopped (ABI.md section 6 promises within twice the timeout): a tight
// loop with no calls and no memory writes ("t"), and an hour's WASI sleep
// ("s"), each on a fresh instance under a 20 ms timeout. late-ms is the
// mean time from the timeout to Handle's return, x-timeout the mean whole
// call as a multiple of the timeout and max-x-timeout the longest. The
// watchdog is a goroutine: on a machine loaded past its cores it runs late,
// and so does the stop. TestRunawayIsStopped asserts the stop itself, with
// no bound on time.
func BenchmarkStopLatency(b *testing.B) {
	const timeout = 20 * time.Millisecond
	for _, tc := range []struct{ name, body string }{{"loop", "t"}, {"sleep", "s"}} {
		b.Run(tc.name, func(b *testing.B) {
			h := newTestHost(b, nil)
			p := load(b, h, "runaway", Spec{Timeout: timeout}, nil)
			d := delivery(tc.body, nil)
			ctx := context.Background()
			var total, longest time.Duration
			for i := 0; i < b.N; i++ {
				in, err := p.NewInstance(ctx)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				r := in.Handle(ctx, d, start)
				el := time.Since(start)
				total += el
				longest = max(longest, el)
				if !errors.Is(r.Err, ErrTimeout) {
					b.Fatalf("got %+v, want ErrTimeout", r)
				}
				_ = in.Close(ctx)
			}
			mean := float64(total) / float64(b.N)
			b.ReportMetric((mean-float64(timeout))/float64(time.Millisecond), "late-ms")
			b.ReportMetric(mean/float64(timeout), "x-timeout")
			b.ReportMetric(float64(longest)/float64(timeout), "max-x-timeout")
		})
	}
}
