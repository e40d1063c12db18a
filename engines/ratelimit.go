package engines

import (
	"context"
	"time"
)

// RateTaker is optionally implemented by an Engine that several processes
// share (postgres): it keeps token buckets in the shared storage, so a
// consumer's rate limit holds across every process consuming the queue
// rather than per process.
type RateTaker interface {
	// TakeTokens takes up to n tokens from the bucket named bucket, which
	// refills at rate tokens per second up to burst (a bucket seen for the
	// first time starts full). It returns how many it took; when none,
	// wait is how long until one will be there.
	TakeTokens(ctx context.Context, bucket string, rate float64, burst, n int) (got int, wait time.Duration, err error)
}
