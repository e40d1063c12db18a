package engines_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

func TestQueueSpecValidate(t *testing.T) {
	ok := engines.QueueSpec{Name: "q", VisibilityTimeout: time.Second, MaxAttempts: 3, DeadLetter: "dlq",
		Retry: engines.RetryPolicy{Initial: time.Millisecond, Multiplier: 2, Jitter: 0.1}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	if err := (engines.QueueSpec{Name: "q"}).Validate(); err != nil {
		t.Fatalf("name-only spec: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*engines.QueueSpec)
		want string
	}{
		{"empty name", func(s *engines.QueueSpec) { s.Name = "" }, "empty queue name"},
		{"negative visibility", func(s *engines.QueueSpec) { s.VisibilityTimeout = -1 }, "negative visibility timeout"},
		{"negative attempts", func(s *engines.QueueSpec) { s.MaxAttempts = -1 }, "negative max attempts"},
		{"own dead letter", func(s *engines.QueueSpec) { s.DeadLetter = s.Name }, "its own dead-letter queue"},
		{"NaN multiplier", func(s *engines.QueueSpec) { s.Retry.Multiplier = math.NaN() }, "must be finite"},
		{"infinite jitter", func(s *engines.QueueSpec) { s.Retry.Jitter = math.Inf(1) }, "must be finite"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.edit(&s)
			err := s.Validate()
			if !errors.Is(err, engines.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalid saying %q", err, tc.want)
			}
		})
	}
}
