package dispatch_test

import (
	"testing"

	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
)

// BenchmarkRecordLatency is BenchmarkDispatchOverhead/concurrency=2 with
// the latency histogram off and on, in the same run: the whole cost that
// metrics add to the delivery path. record=off is its ceiling.
func BenchmarkRecordLatency(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "record=off"
		if on {
			name = "record=on"
		}
		b.Run(name, func(b *testing.B) {
			c := benchDispatch(b, dispatch.Config{Concurrency: 2, RecordLatency: on})
			if l := c.Latency(); on && l.Count != uint64(b.N) {
				b.Fatalf("histogram counted %d of %d calls", l.Count, b.N)
			}
		})
	}
}
