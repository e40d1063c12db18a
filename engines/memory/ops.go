package memory

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/pagesel"
)

// The operator extensions work on a snapshot of the queue's structures taken
// under its lock. Peek, Purge and Redrive walk every waiting message, which
// is fine for the rare operator call they serve and keeps the hot-path
// structures free of the extra indexes that arbitrary removal would need.
// PeekPage is the exception: a scan calls it once a page, so walking the
// queue each time would make the scan quadratic; it reads the seq-ordered
// list insert appends to (peekindex.go).

var (
	_ engines.Peeker   = (*handle)(nil)
	_ engines.Purger   = (*handle)(nil)
	_ engines.Redriver = (*handle)(nil)
)

// Peek implements engines.Peeker.
func (h *handle) Peek(ctx context.Context, max int) ([]engines.Delivery, error) {
	if h.closed.Load() {
		return nil, h.errClosed("peek at")
	}
	if max < 1 {
		return nil, fmt.Errorf("memory: peek at %q: max %d < 1: %w", h.q.name, max, engines.ErrInvalid)
	}
	q := h.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, q.errClosed("peek at")
	}
	now := q.e.now()
	var out []engines.Delivery
	for _, r := range q.waiting() {
		if len(out) == max {
			break
		}
		if r.state == stateReady && r.expire != 0 && now >= r.expire {
			continue // expired: the next receive drops it
		}
		out = append(out, engines.Delivery{
			Message:    r.msg,
			Queue:      q.name,
			Attempt:    int(r.Attempt),
			Failures:   int(r.Failures),
			EnqueuedAt: q.e.wall(r.enq),
		})
	}
	return out, nil
}

// PeekPage implements engines.Peeker: a scan in enqueue order, the cursor
// being the last record's sequence number, which a record keeps through
// deliveries and retries. A page costs time in proportion to the records
// it reads past, not to the queue's length.
func (h *handle) PeekPage(ctx context.Context, opts engines.PeekOptions) (engines.PeekPage, error) {
	if h.closed.Load() {
		return engines.PeekPage{}, h.errClosed("peek at")
	}
	after, err := pagesel.Start("memory", h.q.name, opts)
	if err != nil {
		return engines.PeekPage{}, err
	}
	q := h.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return engines.PeekPage{}, q.errClosed("peek at")
	}
	now := q.e.now()
	// Read on from the cursor in seq order (peekindex.go): the page costs
	// its own records and the ones it skips, not the queue's length.
	var rs []*record
	more := false
	for _, x := range q.bySeq.After(after) {
		r := x.R
		if !live(x) || (r.state == stateLeased && !opts.InFlight) || (r.state == stateReady && r.expire != 0 && now >= r.expire) {
			continue
		}
		if len(rs) == opts.Max {
			more = true
			break
		}
		rs = append(rs, r)
	}
	page := engines.PeekPage{Messages: make([]engines.Peeked, len(rs))}
	for i, r := range rs {
		st := engines.StateReady
		switch r.state {
		case stateDelayed:
			st = engines.StateDelayed
		case stateLeased:
			st = engines.StateInFlight
		}
		page.Messages[i] = engines.Peeked{State: st, Delivery: engines.Delivery{
			Message:    r.msg,
			Queue:      q.name,
			Attempt:    int(r.Attempt),
			Failures:   int(r.Failures),
			EnqueuedAt: q.e.wall(r.enq),
		}}
	}
	if more {
		page.Next = pagesel.FormatCursor(rs[len(rs)-1].seq)
	}
	return page, nil
}

// waiting lists the records that are not leased, in delivery order: ready
// ones by priority then FIFO, then those parked behind an ordering key, then
// delayed ones by visibility time. Called with q.mu held.
func (q *queue) waiting() []*record {
	out := make([]*record, 0, q.nReady+q.nParked+q.delayed.Len())
	for p := len(q.ready.levels) - 1; p >= 0; p-- {
		l := &q.ready.levels[p]
		mask := len(l.buf) - 1
		for i := 0; i < l.n; i++ {
			out = append(out, l.buf[(l.head+i)&mask])
		}
	}
	var parked []*record
	for _, ks := range q.keys {
		mask := len(ks.parked.buf) - 1
		for i := 0; i < ks.parked.n; i++ {
			parked = append(parked, ks.parked.buf[(ks.parked.head+i)&mask])
		}
	}
	slices.SortFunc(parked, func(a, b *record) int { return cmp.Compare(a.seq, b.seq) })
	delayed := slices.Collect(q.delayed.All())
	slices.SortFunc(delayed, func(a, b *record) int {
		return cmp.Or(cmp.Compare(a.due, b.due), cmp.Compare(a.seq, b.seq))
	})
	out = append(out, parked...)
	return append(out, delayed...)
}

// Purge implements engines.Purger.
func (h *handle) Purge(ctx context.Context) (int64, error) {
	if h.closed.Load() {
		return 0, h.errClosed("purge")
	}
	q := h.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, q.errClosed("purge")
	}
	removed := q.remove(func(*record) bool { return true })
	return int64(len(removed)), nil
}

// remove takes the waiting records that match out of the queue and returns
// copies of their messages with their original enqueue times. Parked records
// go first, so that releasing an active record does not promote a parked one
// that is about to be removed anyway. Called with q.mu held.
func (q *queue) remove(match func(*record) bool) []deadMsg {
	var out []deadMsg
	take := func(r *record) {
		out = append(out, deadMsg{msg: r.msg, enq: r.enq, seq: r.seq})
	}
	for _, ks := range q.keys {
		n := ks.parked.n
		for range n {
			r := ks.parked.pop()
			if !match(r) {
				ks.parked.push(r)
				continue
			}
			q.nParked--
			take(r)
			r.ks = nil
			q.release(r, 0)
		}
	}
	for p := range q.ready.levels {
		l := &q.ready.levels[p]
		n := l.n
		for range n {
			r := l.pop()
			if !match(r) {
				l.push(r)
				continue
			}
			q.nReady--
			take(r)
			q.release(r, q.e.now())
		}
		if l.n == 0 {
			q.ready.mask[p>>6] &^= 1 << uint(p&63)
		}
	}
	for i := q.delayed.Len() - 1; i >= 0; i-- {
		if i >= q.delayed.Len() || !match(q.delayed.At(i)) {
			continue
		}
		r := q.delayed.Remove(i)
		take(r)
		q.release(r, q.e.now())
	}
	return out
}

// Redrive implements engines.Redriver.
func (h *handle) Redrive(ctx context.Context, ids []string) (int, error) {
	if h.closed.Load() {
		return 0, h.errClosed("redrive")
	}
	q := h.q
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, q.errClosed("redrive")
	}
	moved := q.remove(func(r *record) bool {
		if r.msg.Attributes[engines.AttrDeadLetterSource] == "" {
			return false
		}
		return len(want) == 0 || want[r.msg.ID]
	})
	q.mu.Unlock()
	for i := range moved {
		m := &moved[i]
		m.target = m.msg.Attributes[engines.AttrDeadLetterSource]
		attrs := maps.Clone(m.msg.Attributes)
		delete(attrs, engines.AttrDeadLetterSource)
		delete(attrs, engines.AttrDeadLetterReason)
		m.msg.Attributes = attrs
	}
	// Group by target, as flushDead expects, and keep the order in which
	// the messages reached this queue within each target.
	slices.SortFunc(moved, func(a, b deadMsg) int {
		return cmp.Or(cmp.Compare(a.target, b.target), cmp.Compare(a.seq, b.seq))
	})
	q.flushDead(moved)
	return len(moved), nil
}
