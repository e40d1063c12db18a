package engines

import (
	"math"
	"math/rand/v2"
	"time"
)

// RetryPolicy computes how long a failed message waits before its next
// attempt: Initial * Multiplier^failures, capped at Max, then spread by
// ±Jitter (a fraction) so that a burst of failures does not return as a burst.
//
// The dispatcher applies it to the failures it sees (nacks, traps,
// timeouts). An engine applies it to the one failure only it can see: a
// lease that expired, whether its holder died or hung while the engine ran
// or the lease was outstanding when the process stopped and is found when
// the engine opens again (see QueueSpec.Retry).
type RetryPolicy struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	Jitter     float64
}

// Delay returns the wait before the attempt that follows the given number of
// failures (0 for the first failure). A zero policy waits 0.
func (p RetryPolicy) Delay(failures int) time.Duration {
	if p.Initial <= 0 {
		return 0
	}
	mult := p.Multiplier
	if mult < 1 {
		mult = 1
	}
	d := float64(p.Initial) * math.Pow(mult, float64(failures))
	if p.Max > 0 && d > float64(p.Max) {
		d = float64(p.Max)
	}
	if p.Jitter > 0 {
		d *= 1 + p.Jitter*(2*rand.Float64()-1)
	}
	if p.Max > 0 && d > float64(p.Max) {
		d = float64(p.Max)
	}
	return time.Duration(d)
}
