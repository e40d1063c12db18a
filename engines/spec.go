package engines

import (
	"fmt"
	"math"
)

// Validate reports what makes the spec one that no engine can honour: an
// empty name, a negative visibility timeout or attempt limit, a queue that
// is its own dead-letter queue, or a retry policy whose multiplier or
// jitter is not a finite number (its delays would be meaningless). Every
// engine calls it first in Open, so the rules are the same everywhere; an
// engine adds its own limits (name length, Ordered) after it. The error
// wraps ErrInvalid and does not repeat the queue's name, which the engine's
// own wrapping supplies.
func (s QueueSpec) Validate() error {
	switch {
	case s.Name == "":
		return fmt.Errorf("empty queue name: %w", ErrInvalid)
	case s.VisibilityTimeout < 0:
		return fmt.Errorf("negative visibility timeout %v: %w", s.VisibilityTimeout, ErrInvalid)
	case s.MaxAttempts < 0:
		return fmt.Errorf("negative max attempts %d: %w", s.MaxAttempts, ErrInvalid)
	case s.DeadLetter == s.Name:
		return fmt.Errorf("queue cannot be its own dead-letter queue: %w", ErrInvalid)
	case !finite(s.Retry.Multiplier) || !finite(s.Retry.Jitter):
		return fmt.Errorf("retry multiplier %v and jitter %v must be finite: %w", s.Retry.Multiplier, s.Retry.Jitter, ErrInvalid)
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
