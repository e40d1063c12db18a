package disk

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/pagesel"
)

// The operator extensions (engines.Peeker, Purger, Redriver). They are
// rare and may be slow: each looks at every waiting message of the queue.

// waiting returns the queue's ready, parked and delayed records in the
// order they would be delivered. The caller holds q.mu.
func (q *queue) waiting() []*record {
	rs := make([]*record, 0, q.ready.Len()+q.nParked+q.delayed.Len())
	rs = slices.AppendSeq(rs, q.ready.All())
	slices.SortFunc(rs, func(a, b *record) int {
		if a.prio != b.prio {
			return cmp.Compare(b.prio, a.prio)
		}
		return cmp.Compare(a.seq, b.seq)
	})
	n := len(rs)
	for _, ks := range q.keys {
		rs = append(rs, ks.parked...)
	}
	slices.SortFunc(rs[n:], func(a, b *record) int { return cmp.Compare(a.seq, b.seq) })
	n = len(rs)
	rs = slices.AppendSeq(rs, q.delayed.All())
	slices.SortFunc(rs[n:], func(a, b *record) int {
		if c := cmp.Compare(a.due, b.due); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	return rs
}

// Peek implements engines.Peeker: the deliveries carry no lease.
func (h *handle) Peek(ctx context.Context, max int) ([]engines.Delivery, error) {
	if h.closed.Load() {
		return nil, h.errClosed("peek at")
	}
	if max < 1 {
		return nil, fmt.Errorf("disk: peek at %q: max %d < 1: %w", h.q.name, max, engines.ErrInvalid)
	}
	q := h.q
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, q.errClosed("peek at")
	}
	rs := q.waiting()
	if len(rs) > max {
		rs = rs[:max]
	}
	ds := make([]engines.Delivery, len(rs))
	for i, r := range rs {
		// A ticket is needed only to find the record in read; NewDelivery
		// with a nil settler keeps the delivery unsettleable.
		ds[i] = engines.NewDelivery(engines.Delivery{Queue: q.name, Attempt: int(r.Attempt), Failures: int(r.Failures), EnqueuedAt: wall(r.enq)}, nil, engines.Ticket{Ref: r})
	}
	q.mu.Unlock()
	n, err := q.read(ds)
	if err != nil {
		return nil, err
	}
	for i := range ds[:n] {
		ds[i] = engines.NewDelivery(ds[i], nil, engines.Ticket{})
	}
	return ds[:n], nil
}

// PeekPage implements engines.Peeker: a scan in enqueue order, the cursor
// being the last record's sequence number (its bbolt key), which a record
// keeps through deliveries and retries. A page costs time in proportion to
// the records it reads past, not to the queue's length.
func (h *handle) PeekPage(ctx context.Context, opts engines.PeekOptions) (engines.PeekPage, error) {
	if h.closed.Load() {
		return engines.PeekPage{}, h.errClosed("peek at")
	}
	after, err := pagesel.Start("disk", h.q.name, opts)
	if err != nil {
		return engines.PeekPage{}, err
	}
	q := h.q
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return engines.PeekPage{}, q.errClosed("peek at")
	}
	// Read on from the cursor in seq order: the page costs its own records
	// and the ones it skips, not the queue's length.
	var rs []*record
	more := false
	for _, x := range q.bySeq.After(after) {
		r := x.R
		if !live(x) || (r.state == stateLeased && !opts.InFlight) {
			continue
		}
		if len(rs) == opts.Max {
			more = true
			break
		}
		rs = append(rs, r)
	}
	ds := make([]engines.Delivery, len(rs))
	states := make(map[*record]engines.MessageState, len(rs))
	for i, r := range rs {
		ds[i] = engines.NewDelivery(engines.Delivery{Queue: q.name, Attempt: int(r.Attempt), Failures: int(r.Failures), EnqueuedAt: wall(r.enq)}, nil, engines.Ticket{Ref: r})
		switch r.state {
		case stateDelayed:
			states[r] = engines.StateDelayed
		case stateLeased:
			states[r] = engines.StateInFlight
		default:
			states[r] = engines.StateReady
		}
	}
	q.mu.Unlock()
	// A record settled between the unlock and the read is gone from the
	// file and skipped: it was removed during the scan.
	n, err := q.read(ds)
	if err != nil {
		return engines.PeekPage{}, err
	}
	page := engines.PeekPage{Messages: make([]engines.Peeked, n)}
	for i := range ds[:n] {
		st := states[ds[i].Ticket().Ref.(*record)]
		page.Messages[i] = engines.Peeked{Delivery: engines.NewDelivery(ds[i], nil, engines.Ticket{}), State: st}
	}
	if more {
		page.Next = pagesel.FormatCursor(rs[len(rs)-1].seq)
	}
	return page, nil
}

// Purge implements engines.Purger.
func (h *handle) Purge(ctx context.Context) (int64, error) {
	if h.closed.Load() {
		return 0, h.errClosed("purge")
	}
	q := h.q
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, q.errClosed("purge")
	}
	rs := q.waiting()
	ops := make([]op, 0, len(rs))
	for _, r := range rs {
		q.drop(r)
	}
	for _, r := range rs {
		// Release after every drop, so no parked record is promoted into
		// a structure already emptied.
		if r.ks != nil && r.ks.active == r {
			r.ks.active = nil
			delete(q.keys, r.ks.key)
		}
		r.ks = nil
		r.state = stateGone
		ops = append(ops, op{kind: opDelMsg, q: q, seq: r.seq})
	}
	var b *batch
	var err error
	if len(ops) > 0 {
		b, err = q.e.add(ops...)
	}
	q.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if b != nil {
		if err := b.Wait(ctx); err != nil {
			return 0, fmt.Errorf("disk: purge %q: %w", q.name, err)
		}
	}
	return int64(len(rs)), nil
}

// Redrive implements engines.Redriver.
func (h *handle) Redrive(ctx context.Context, ids []string) (int, error) {
	if h.closed.Load() {
		return 0, h.errClosed("redrive from")
	}
	q := h.q
	var want map[string]bool
	if len(ids) > 0 {
		want = make(map[string]bool, len(ids))
		for _, id := range ids {
			want[id] = true
		}
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, q.errClosed("redrive from")
	}
	now := q.e.now()
	var ops []op
	for _, r := range q.waiting() {
		if r.source == "" || (want != nil && !want[r.id]) {
			continue
		}
		dst, _, err := q.e.queue(r.source)
		if err != nil {
			q.mu.Unlock()
			return 0, err
		}
		q.drop(r)
		q.release(r, now)
		ops = append(ops, op{kind: opRedrive, q: q, seq: r.seq, dst: dst, rec: &record{seq: q.e.seq.Add(1), idx: -1}})
	}
	var b *batch
	var err error
	if len(ops) > 0 {
		b, err = q.e.add(ops...)
	}
	q.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if b == nil {
		return 0, nil
	}
	if err := b.Wait(ctx); err != nil {
		return 0, fmt.Errorf("disk: redrive from %q: %w", q.name, err)
	}
	moved := 0
	for i := range ops {
		if ops[i].rec != nil {
			moved++
		}
	}
	return moved, nil
}
