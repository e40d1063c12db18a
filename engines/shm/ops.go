//go:build linux

package shm

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/pagesel"
	"github.com/qrun-dev/qrun/engines/shm/ring"
)

// The operator extensions. A ring can be read in place and emptied, but
// not edited in the middle, so Redrive takes the whole dead-letter ring and
// publishes back, at its tail, what it does not move.
var (
	_ engines.Peeker   = (*Queue)(nil)
	_ engines.Purger   = (*Queue)(nil)
	_ engines.Redriver = (*Queue)(nil)
)

// Peek returns up to max messages without leasing them: those this process
// holds ready, then the ring's from the head, then the delayed ones by due
// time. Messages other processes hold are not visible from here.
func (h *Queue) Peek(ctx context.Context, max int) ([]engines.Delivery, error) {
	q := h.q
	if max < 1 {
		return nil, fmt.Errorf("shm: peek %q: max %d < 1: %w", q.name, max, engines.ErrInvalid)
	}
	if h.closed.Load() {
		return nil, q.errClosed("peek")
	}
	peeked := func(m engines.Message, enq int64, attempt, failures int32) engines.Delivery {
		return engines.Delivery{Message: m, Queue: q.name, Attempt: int(attempt), Failures: int(failures), EnqueuedAt: time.Unix(0, enq)}
	}
	var ready, later []engines.Delivery
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, q.errClosed("peek")
	}
	for i := 0; i < q.ready.n && len(ready) < max; i++ {
		r := q.ready.buf[(q.ready.head+i)&(len(q.ready.buf)-1)]
		m, _ := q.message(r)
		ready = append(ready, peeked(m, r.enq, r.Attempt, r.Failures))
	}
	delayed := slices.Collect(q.delayed.All())
	slices.SortFunc(delayed, func(a, b *record) int { return cmp.Compare(a.due, b.due) })
	for _, r := range delayed {
		if r.kind != dueDeadLetter {
			m, _ := q.message(r)
			later = append(later, peeked(m, r.enq, r.Attempt, r.Failures))
		}
	}
	q.mu.Unlock()

	if len(ready) < max {
		recs, err := q.r.Peek(max - len(ready))
		if err != nil {
			return nil, q.errClosed("peek")
		}
		now := time.Now().UnixNano()
		for _, rc := range recs {
			r := record{raw: rc.Data, flags: rc.Flags, enq: rc.Enqueued}
			m, env := q.decodeForeign(&r, rc.Pos)
			d := peeked(m, r.enq, int32(min(env.attempt, 1<<31-1)), int32(min(env.failures, 1<<31-1)))
			if rc.Visible > now {
				later = append([]engines.Delivery{d}, later...)
			} else {
				ready = append(ready, d)
			}
		}
	}
	return append(ready, later...)[:min(max, len(ready)+len(later))], nil
}

// localKeyBase is where the scan keys of records that never had a ring
// position start: above any position a ring reaches.
const localKeyBase = 1 << 63

// nextLocalKey numbers a record that never had a ring position. Called with
// q.mu held.
func (q *queue) nextLocalKey() uint64 {
	q.localKeys++
	return localKeyBase + q.localKeys
}

// PeekPage implements engines.Peeker. The scan order is ring position:
// what this process holds (ready again, delayed, leased) sorts by the
// position it was taken from, the ring's own records by theirs, so a
// message moving from the ring into this process during a scan keeps its
// place. Delayed enqueues this process holds, which have no position yet,
// come last. Two exceptions to the Peeker guarantee follow from a ring
// shared by processes: what other processes hold is not visible, and a
// delayed enqueue that comes due (and moves into the ring) while the scan
// is past the ring's records may be missed.
func (h *Queue) PeekPage(ctx context.Context, opts engines.PeekOptions) (engines.PeekPage, error) {
	q := h.q
	after, err := pagesel.Start("shm", q.name, opts)
	if err != nil {
		return engines.PeekPage{}, err
	}
	if h.closed.Load() {
		return engines.PeekPage{}, q.errClosed("peek")
	}
	type entry struct {
		key uint64
		p   engines.Peeked
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return engines.PeekPage{}, q.errClosed("peek")
	}
	sel := pagesel.New(opts.Max, func(r *record) uint64 { return r.key })
	offer := func(r *record) {
		if r.key > after && r.kind != dueDeadLetter {
			sel.Add(r)
		}
	}
	for i := 0; i < q.ready.n; i++ {
		offer(q.ready.buf[(q.ready.head+i)&(len(q.ready.buf)-1)])
	}
	for r := range q.delayed.All() {
		offer(r)
	}
	if opts.InFlight {
		q.leases.each(offer)
	}
	var local []entry
	for _, r := range sel.Sorted() {
		st := engines.StateReady
		switch r.state {
		case stateDelayed:
			st = engines.StateDelayed
		case stateLeased:
			st = engines.StateInFlight
		}
		m, _ := q.message(r)
		local = append(local, entry{r.key, engines.Peeked{State: st, Delivery: engines.Delivery{
			Message: m, Queue: q.name, Attempt: int(r.Attempt), Failures: int(r.Failures), EnqueuedAt: time.Unix(0, r.enq)}}})
	}
	q.mu.Unlock()

	var shared []entry
	if after < localKeyBase {
		recs, err := q.r.PeekFrom(after, opts.Max)
		if err != nil {
			return engines.PeekPage{}, q.errClosed("peek")
		}
		now := time.Now().UnixNano()
		for _, rc := range recs {
			r := record{raw: rc.Data, flags: rc.Flags, enq: rc.Enqueued}
			m, env := q.decodeForeign(&r, rc.Pos)
			st := engines.StateReady
			if rc.Visible > now {
				st = engines.StateDelayed
			}
			shared = append(shared, entry{rc.Pos + 1, engines.Peeked{State: st, Delivery: engines.Delivery{
				Message: m, Queue: q.name, Attempt: int(min(env.attempt, 1<<31-1)), EnqueuedAt: time.Unix(0, r.enq)}}})
		}
	}
	// Merge the two sorted lists; a position taken from the ring between
	// the two reads may show in both, and is kept once.
	var page engines.PeekPage
	last := after
	for len(page.Messages) < opts.Max && (len(local) > 0 || len(shared) > 0) {
		var e entry
		if len(shared) == 0 || (len(local) > 0 && local[0].key <= shared[0].key) {
			e, local = local[0], local[1:]
		} else {
			e, shared = shared[0], shared[1:]
		}
		if len(page.Messages) > 0 && e.key == last {
			continue
		}
		page.Messages = append(page.Messages, e.p)
		last = e.key
	}
	if len(page.Messages) == opts.Max {
		page.Next = pagesel.FormatCursor(last)
	}
	return page, nil
}

// decodeForeign decodes a record read from the ring into r (raw, flags and
// enq set), deriving a missing ID from its position.
func (q *queue) decodeForeign(r *record, pos uint64) (engines.Message, envelope) {
	var m engines.Message
	var env envelope
	if r.flags&ring.FlagEnvelope != 0 {
		var err error
		if env, err = decodeEnvelope(r.raw, &m); err != nil {
			m = engines.Message{Body: r.raw, Attributes: map[string]string{AttrMalformed: err.Error()}}
			env = envelope{}
			r.raw, r.flags = appendEnvelope(nil, &m, env), ring.FlagEnvelope
		}
	} else {
		m.Body = r.raw
	}
	if m.ID == "" {
		m.ID = string(appendPos([]byte(q.idPrefix), pos))
	}
	r.id = m.ID
	return m, env
}

// Purge removes what this process holds ready or delayed and everything in
// the ring, and says how many messages that was. Leases are left alone.
func (h *Queue) Purge(ctx context.Context) (int64, error) {
	q := h.q
	if h.closed.Load() {
		return 0, q.errClosed("purge")
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, q.errClosed("purge")
	}
	n := int64(0)
	for q.ready.n > 0 {
		q.release(q.ready.pop())
		n++
	}
	q.nReady.Store(0)
	n += q.dropDelayed(func(*record) bool { return true })
	q.mu.Unlock()

	buf := make([]ring.Record, 256)
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, err := q.r.TryPop(buf)
		if err != nil {
			return n, q.errClosed("purge")
		}
		if k == 0 {
			return n, nil
		}
		n += int64(k)
	}
}

// dropDelayed removes the delayed records (except pending dead-letter
// moves) that match, and says how many. Called with q.mu held.
func (q *queue) dropDelayed(match func(*record) bool) int64 {
	n := int64(0)
	for _, r := range q.delayed.Drain() {
		if r.kind != dueDeadLetter && match(r) {
			q.release(r)
			n++
			continue
		}
		q.delayed.Push(r, &r.idx, r.dueKey())
	}
	return n
}

// Redrive moves dead letters back to the queue named by their source
// attribute: those this process holds, then the ring's. It takes at most
// what the ring held when it started, and publishes the messages it does
// not move back into the ring, at its tail.
func (h *Queue) Redrive(ctx context.Context, ids []string) (int, error) {
	q := h.q
	if h.closed.Load() {
		return 0, q.errClosed("redrive")
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	match := func(m *engines.Message) bool {
		return m.Attributes[engines.AttrDeadLetterSource] != "" && (len(ids) == 0 || want[m.ID])
	}
	var move []engines.Message
	var moveEnq []int64
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, q.errClosed("redrive")
	}
	var ready fifo
	for q.ready.n > 0 {
		r := q.ready.pop()
		if m, _ := q.message(r); match(&m) {
			move, moveEnq = append(move, m), append(moveEnq, r.enq)
			q.release(r)
			continue
		}
		ready.push(r)
	}
	q.ready = ready
	q.nReady.Store(int64(ready.n))
	q.dropDelayed(func(r *record) bool {
		m, _ := q.message(r)
		if match(&m) {
			move, moveEnq = append(move, m), append(moveEnq, r.enq)
			return true
		}
		return false
	})
	q.mu.Unlock()

	var keep []ring.Record
	buf := make([]ring.Record, 256)
	for left := q.r.Len(); left > 0; {
		k, err := q.r.TryPop(buf[:min(len(buf), left)])
		if err != nil || k == 0 {
			break
		}
		left -= k
		for _, rc := range buf[:k] {
			r := record{raw: rc.Data, flags: rc.Flags, enq: rc.Enqueued}
			m, _ := q.decodeForeign(&r, rc.Pos)
			if match(&m) {
				move, moveEnq = append(move, m), append(moveEnq, r.enq)
			} else {
				rc.Data, rc.Flags = r.raw, r.flags
				if rc.Flags&ring.FlagEnvelope == 0 {
					// A bare record's ID is its position: keep it in an envelope.
					rc.Data, rc.Flags = appendEnvelope(nil, &m, envelope{}), ring.FlagEnvelope
				}
				keep = append(keep, rc)
			}
		}
	}

	moved := 0
	var firstErr error
	for i := range move {
		m := move[i]
		src := m.Attributes[engines.AttrDeadLetterSource]
		attrs := make(map[string]string, len(m.Attributes))
		for k, v := range m.Attributes {
			if k != engines.AttrDeadLetterSource && k != engines.AttrDeadLetterReason {
				attrs[k] = v
			}
		}
		m.Attributes = attrs
		err := q.redriveTo(ctx, src, &m, moveEnq[i])
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			// Not moved: it stays a dead letter, back at the ring's tail.
			m.Attributes[engines.AttrDeadLetterSource] = src
			keep = append(keep, ring.Record{Flags: ring.FlagEnvelope, Enqueued: moveEnq[i], Data: appendEnvelope(nil, &m, envelope{})})
			continue
		}
		moved++
	}
	if len(keep) > 0 {
		if n, err := q.r.Push(ctx, keep); err != nil {
			q.holdReady(keep[n:])
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if firstErr != nil {
		return moved, fmt.Errorf("shm: redrive from %q: %d moved: %w", q.name, moved, firstErr)
	}
	return moved, nil
}

func (q *queue) redriveTo(ctx context.Context, src string, m *engines.Message, enq int64) error {
	sq, err := q.e.queue(src)
	if err != nil {
		return err
	}
	if err := sq.publishHeld(ctx, m, enq, envelope{}, 0); err != nil {
		return err
	}
	sq.enqueued.Add(1)
	return nil
}

// holdReady keeps records that could not be published back as ready in
// this process, rather than drop them.
func (q *queue) holdReady(recs []ring.Record) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, rc := range recs {
		r := q.newRecord()
		r.raw, r.flags, r.enq = rc.Data, rc.Flags, rc.Enqueued
		r.key = q.nextLocalKey()
		m, _ := q.message(r)
		r.id = m.ID
		q.makeReady(r)
	}
}
