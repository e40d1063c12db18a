package dispatch

import (
	"sync"
	"time"
)

// RecentErrorsKept is how many of a consumer's latest errors RecentErrors keeps.
const RecentErrorsKept = 10

// ErrorRecord is one recent failure of a consumer, for operators.
type ErrorRecord struct {
	Time time.Time `json:"time"`
	// What failed: "handler", "settle", "receive" or "instance".
	Kind string `json:"kind"`
	// MessageID and Attempt are empty for failures not tied to a message.
	MessageID string `json:"message_id,omitempty"`
	Attempt   int    `json:"attempt,omitempty"`
	Error     string `json:"error"`
}

// recentErrors is a small ring, written only when something failed, so it
// costs the delivery path nothing when all is well.
type recentErrors struct {
	mu   sync.Mutex
	buf  [RecentErrorsKept]ErrorRecord
	next int
	n    int
}

func (r *recentErrors) add(e ErrorRecord) {
	r.mu.Lock()
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
	r.n = min(r.n+1, len(r.buf))
	r.mu.Unlock()
}

// RecentErrors returns the consumer's latest failures, newest first.
func (c *Consumer) RecentErrors() []ErrorRecord {
	r := &c.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ErrorRecord, 0, r.n)
	for i := 1; i <= r.n; i++ {
		out = append(out, r.buf[(r.next-i+len(r.buf))%len(r.buf)])
	}
	return out
}
