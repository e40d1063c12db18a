package dispatch

import (
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// RetryPolicy computes how long a failed message waits before its next
// attempt. It is the engines' type, so that the queue's policy can be
// handed to an engine too: a durable engine applies it to a lease that was
// outstanding when the process stopped.
type RetryPolicy = engines.RetryPolicy

// DefaultRetryPolicy is used where a consumer's queue configures no retry policy.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}
}
