package memory_test

import (
	"context"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/memory"
)

// BenchmarkPeekPageScan: the cost of a page of a paged scan, for queues of
// growing length (see enginetest.BenchPeekScan).
func BenchmarkPeekPageScan(b *testing.B) {
	enginetest.BenchPeekScan(b, func(b *testing.B) engines.Queue {
		e := memory.New(memory.Options{})
		b.Cleanup(func() { _ = e.Close() })
		q, err := e.Open(context.Background(), engines.QueueSpec{Name: "q"})
		if err != nil {
			b.Fatal(err)
		}
		return q
	})
}
