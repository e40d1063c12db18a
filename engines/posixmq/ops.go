//go:build linux

package posixmq

import (
	"context"

	"github.com/qrun-dev/qrun/engines"
)

// A kernel message queue can only be read by removing messages, so the
// engine implements Purger, which removes them anyway, and neither Peeker
// nor Redriver: looking at or picking out messages would mean taking every
// one out of the kernel and sending the rest back, reordering them and
// putting them at risk in between.
var _ engines.Purger = (*handle)(nil)

// Purge implements engines.Purger. It drops the ready, delayed and spilled
// messages held in memory, and drains the kernel queue by receiving and
// discarding as many messages as it held when Purge began (the kernel has
// no purge call), so messages sent meanwhile, by qrun or another program,
// may survive. Leased messages are left to their holders.
func (h *handle) Purge(ctx context.Context) (int64, error) {
	if h.closed.Load() {
		return 0, h.errClosed("purge")
	}
	return h.q.purge(ctx)
}

func (q *queue) purge(ctx context.Context) (int64, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, q.errClosed("purge")
	}
	var n int64
	for _, hp := range []*heap{&q.ready, &q.delayed, &q.outbox} {
		for _, r := range hp.Drain() {
			q.release(r)
			n++
		}
	}
	q.outLen.Store(0)
	q.wakeRoom()
	q.mu.Unlock()

	q.fdMu.RLock()
	defer q.fdMu.RUnlock()
	if q.fdClosed {
		return n, q.errClosed("purge")
	}
	a, err := q.mq.Attr()
	if err != nil {
		return n, err
	}
	buf := make([]byte, q.msgSize)
	for range a.CurMsgs {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		_, _, ok, err := q.mq.TryReceive(buf)
		if err != nil {
			return n, err
		}
		if !ok {
			break // others took the rest
		}
		n++
	}
	return n, nil
}
