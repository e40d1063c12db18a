//go:build linux

package posixmq

import "github.com/qrun-dev/qrun/engines"

// Waiting is the number of receivers blocked on q: the leader in the
// poller and the followers on its channel, the event enginetest's
// Harness.Waiting waits for.
func Waiting(q engines.Queue) int {
	h := q.(*handle)
	h.q.mu.Lock()
	defer h.q.mu.Unlock()
	n := h.q.followers
	if h.q.leading {
		n++
	}
	return n
}
