package disk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
	"github.com/qrun-dev/qrun/engines/internal/pagesel"
)

// queue is the in-memory index of one stored queue, shared by every handle
// on it. One mutex guards it; every operation under it is short and
// batch-shaped, and disk I/O happens outside it (reads) or in the committer
// (writes).
type queue struct {
	e    *Engine
	name string

	mu     sync.Mutex
	closed bool

	// Settings, from the most recent Open that set any, or from disk.
	policy  lease.Policy
	ordered bool

	ready   heap // by priority, then enqueue order
	delayed heap // by visible time
	leases  heap // by lease deadline
	nParked int

	keys map[string]*keyState
	// bySeq lists the records in seq (bbolt key) order, for PeekPage to
	// start a page where its cursor points rather than walk the queue.
	bySeq pagesel.Log[*record]

	dedup      map[string]dedupEntry
	dedupMarks []dedupMark
	dedupHead  int

	// waitCh is closed, and cleared, whenever a message may have become
	// ready; receivers that found nothing wait on it.
	waitCh chan struct{}
	// waiters counts the takes handed waitCh since it was made: the
	// receivers blocked on it, or about to be, which is the event a test
	// waits for before it wakes them (export_test.go, Waiting).
	waiters int

	// One timer per queue, armed for the earliest delayed message or
	// lease deadline.
	timer lease.Timer

	st engines.Stats // the totals; the gauges are computed
}

func newQueue(e *Engine, name string) *queue {
	q := &queue{e: e, name: name, policy: lease.DefaultPolicy()}
	q.timer = lease.NewTimer(q.onTimer)
	return q
}

func (q *queue) errClosed(op string) error {
	return fmt.Errorf("disk: %s %q: %w", op, q.name, engines.ErrClosed)
}

// configure applies an Open's spec and returns the batch that stores it
// (nil when nothing needs storing).
func (q *queue) configure(s engines.QueueSpec, created bool) (*batch, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, q.errClosed("open")
	}
	if s == (engines.QueueSpec{Name: s.Name}) {
		if !created {
			return nil, nil
		}
	} else {
		if s.Ordered != q.ordered && q.depth() > 0 {
			return nil, fmt.Errorf("disk: open %q: cannot change Ordered to %v while the queue holds messages: %w", q.name, s.Ordered, engines.ErrInvalid)
		}
		q.policy.Apply(s)
		q.ordered = s.Ordered
	}
	p := &q.policy
	return q.e.add(op{kind: opPutSpec, q: q, val: encodeSpec(spec{vt: p.VT, maxAttempts: p.MaxAttempts, ordered: q.ordered, deadLetter: p.DeadLetter, retry: p.Retry})})
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.timer.Stop()
	q.wake()
	q.mu.Unlock()
}

func (q *queue) depth() int {
	return q.ready.Len() + q.nParked + q.delayed.Len() + q.leases.Len()
}

// added indexes a message whose commit just completed.
func (q *queue) added(r *record, now int64) {
	q.st.EnqueuedTotal++
	if q.closed {
		return
	}
	q.admit(r, now)
	q.bySeq.Add(r.seq, r)
	q.bySeq.Trim(q.depth(), live)
}

// live reports whether a bySeq entry's record is still in the queue
// (records are never reused, so its seq cannot have changed).
func live(x pagesel.Entry[*record]) bool { return x.R.state != stateGone }

// admit places a stored record: behind its ordering key if the key is
// busy, otherwise ready or delayed according to r.due.
func (q *queue) admit(r *record, now int64) {
	if q.ordered && r.okey != "" {
		ks := q.keys[r.okey]
		if ks == nil {
			ks = &keyState{key: r.okey}
			if q.keys == nil {
				q.keys = make(map[string]*keyState)
			}
			q.keys[r.okey] = ks
		}
		r.ks = ks
		if ks.active != nil {
			r.state = stateParked
			ks.parked = append(ks.parked, r)
			q.nParked++
			return
		}
		ks.active = r
	}
	q.schedule(r, r.due, now)
}

// schedule makes r visible at the given time: ready now, or delayed.
func (q *queue) schedule(r *record, visible, now int64) {
	r.due = visible
	if visible > now {
		r.state = stateDelayed
		q.delayed.Push(r, &r.idx, r.dueKey())
		q.arm(visible, now)
		return
	}
	r.state = stateReady
	q.ready.Push(r, &r.idx, r.readyKey())
	q.wake()
}

// wake releases every blocked receiver; the losers just wait again.
func (q *queue) wake() {
	if q.waitCh != nil {
		close(q.waitCh)
		q.waitCh = nil
		q.waiters = 0
	}
}

// release forgets a record that left the queue for good and hands its
// ordering key to the next message.
func (q *queue) release(r *record, now int64) {
	r.state = stateGone
	ks := r.ks
	if ks == nil {
		return
	}
	r.ks = nil
	if ks.active != r {
		return
	}
	if len(ks.parked) > 0 {
		next := ks.parked[0]
		ks.parked[0] = nil
		ks.parked = ks.parked[1:]
		q.nParked--
		ks.active = next
		q.schedule(next, next.due, now)
		return
	}
	ks.active = nil
	delete(q.keys, ks.key)
}

// drop removes a record from whichever structure holds it.
func (q *queue) drop(r *record) {
	switch r.state {
	case stateReady:
		q.ready.Remove(int(r.idx))
	case stateDelayed:
		q.delayed.Remove(int(r.idx))
	case stateLeased:
		q.leases.Remove(int(r.idx))
	case stateParked:
		ks := r.ks
		for i, p := range ks.parked {
			if p == r {
				ks.parked = append(ks.parked[:i], ks.parked[i+1:]...)
				break
			}
		}
		q.nParked--
		r.ks = nil
	}
}

// arm makes sure the timer fires no later than at.
func (q *queue) arm(at, now int64) {
	if !q.closed {
		q.timer.Arm(at, now)
	}
}

func (q *queue) onTimer() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.timer.Fired()
	now := q.e.now()
	_, _ = q.advance(now)
	if r := q.delayed.Peek(); r != nil {
		q.arm(r.due, now)
	}
	if r := q.leases.Peek(); r != nil {
		q.arm(r.due, now)
	}
}

// advance moves delayed messages that came due to ready and expires lapsed
// leases: a failure each, the retry delay, and a dead letter once
// MaxAttempts is reached. It returns the batch that stores the last of
// those changes (nil when there were none).
func (q *queue) advance(now int64) (*batch, error) {
	for r := q.delayed.Peek(); r != nil && r.due <= now; r = q.delayed.Peek() {
		q.delayed.Pop()
		r.state = stateReady
		q.ready.Push(r, &r.idx, r.readyKey())
		q.wake()
	}
	var last *batch
	for r := q.leases.Peek(); r != nil && r.due <= now; r = q.leases.Peek() {
		q.leases.Pop()
		// The new state of a retry is stored like a nack's: a restart then
		// finds the message delayed until the same time, not leased, and
		// counts the expiry no second time (the counters committed with any
		// later batch already hold it).
		b, err := q.apply(r, q.policy.Expire(&r.Lease, &q.st), now)
		if err != nil {
			return nil, err
		}
		last = b
	}
	return last, nil
}

// apply carries out a lease transition's outcome for r, which is out of the
// lease heap, and returns the batch that stores it.
func (q *queue) apply(r *record, out lease.Outcome, now int64) (*batch, error) {
	switch out.Action {
	case lease.Retry:
		return q.retry(r, lease.After(now, out.Delay), now)
	case lease.Dead:
		return q.moveDead(r, now, out.Reason)
	}
	q.release(r, now)
	return q.e.add(op{kind: opDelMsg, q: q, seq: r.seq})
}

// deadLetter counts r as dead-lettered and moves it to the dead-letter
// queue, or deletes it when there is none. r is already out of the index
// structures.
func (q *queue) moveDead(r *record, now int64, reason string) (*batch, error) {
	q.st.DeadLetteredTotal++
	q.release(r, now)
	if q.policy.DeadLetter == "" {
		return q.e.add(op{kind: opDelMsg, q: q, seq: r.seq})
	}
	dst, _, err := q.e.queue(q.policy.DeadLetter)
	if err != nil {
		return nil, err
	}
	return q.e.add(op{kind: opDeadLetter, q: q, seq: r.seq, key: reason, dst: dst, rec: &record{seq: q.e.seq.Add(1), idx: -1},
		val: deadLetterHistory(r)})
}

// enqueue stores msgs, whose payloads are already encoded, and returns the
// batch that commits them.
func (q *queue) enqueue(msgs []engines.Message, payloads [][]byte, seqs []uint64, now int64, extra ...op) (*batch, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, q.errClosed("enqueue to")
	}
	ops := q.enqueueOps(make([]op, 0, len(msgs)+len(extra)), msgs, payloads, seqs, now)
	ops = append(ops, extra...)
	if len(ops) == 0 {
		return nil, nil
	}
	return q.e.add(ops...)
}

// enqueueOps appends to ops what stores msgs (see enqueue); q.mu is held.
func (q *queue) enqueueOps(ops []op, msgs []engines.Message, payloads [][]byte, seqs []uint64, now int64) []op {
	recs := make([]record, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if m.DedupID != "" {
			ops = q.pruneDedup(now, ops)
			if ent, ok := q.dedup[m.DedupID]; ok {
				q.st.DuplicateTotal++
				if seqs[i] != 0 {
					m.ID = ent.id // the engine named it: tell the caller the original's ID
				}
				continue
			}
			exp := lease.After(now, q.e.opts.DedupWindow)
			if q.dedup == nil {
				q.dedup = make(map[string]dedupEntry)
			}
			q.dedup[m.DedupID] = dedupEntry{id: m.ID, expire: exp}
			q.dedupMarks = append(q.dedupMarks, dedupMark{key: m.DedupID, expire: exp})
			ops = append(ops, op{kind: opPutDedup, q: q, key: m.DedupID, val: encodeDedup(m.ID, exp)})
		}
		r := &recs[i]
		seq := seqs[i]
		if seq == 0 {
			seq = q.e.seq.Add(1)
		}
		due := lease.After(now, m.Delay)
		*r = record{seq: seq, id: m.ID, prio: m.Priority, enq: now, due: due, expire: 0, okey: m.OrderingKey, idx: -1}
		if m.TTL > 0 {
			r.expire = lease.After(due, m.TTL)
		}
		ops = append(ops, op{kind: opPutMsg, q: q, seq: seq, val: payloads[i], rec: r})
	}
	return ops
}

// pruneDedup forgets dedup IDs whose window closed, on disk too.
func (q *queue) pruneDedup(now int64, ops []op) []op {
	for q.dedupHead < len(q.dedupMarks) {
		mk := q.dedupMarks[q.dedupHead]
		if mk.expire > now {
			break
		}
		if ent, ok := q.dedup[mk.key]; ok && ent.expire == mk.expire {
			delete(q.dedup, mk.key)
			ops = append(ops, op{kind: opDelDedup, q: q, key: mk.key})
		}
		q.dedupMarks[q.dedupHead] = dedupMark{}
		q.dedupHead++
	}
	if q.dedupHead > 64 && q.dedupHead*2 > len(q.dedupMarks) {
		n := copy(q.dedupMarks, q.dedupMarks[q.dedupHead:])
		clear(q.dedupMarks[n:])
		q.dedupMarks = q.dedupMarks[:n]
		q.dedupHead = 0
	}
	return ops
}

// lease leases ready records into buf (their payloads are read later,
// outside the lock). When there are none it returns the channel to wait on.
func (q *queue) lease(buf []engines.Delivery) (n int, wait <-chan struct{}, b *batch, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, nil, nil, q.errClosed("receive from")
	}
	now := q.e.now()
	if b, err = q.advance(now); err != nil {
		return 0, nil, nil, err
	}
	deadline := lease.After(now, time.Duration(q.policy.VT))
	var ops []op
	for n < len(buf) {
		r := q.ready.Peek()
		if r == nil {
			break
		}
		q.ready.Pop()
		if r.expire != 0 {
			if now >= r.expire {
				q.st.ExpiredTotal++
				q.release(r, now)
				ops = append(ops, op{kind: opDelMsg, q: q, seq: r.seq})
				continue
			}
			r.expire = 0 // delivered in time: the TTL has done its job
		}
		tok := r.Grant()
		r.state = stateLeased
		r.due = deadline
		q.leases.Push(r, &r.idx, r.dueKey())
		ops = append(ops, op{kind: opPutState, q: q, seq: r.seq, val: encodeState(state{leased: true, attempt: r.Attempt, failures: r.Failures, due: now})})
		buf[n] = engines.NewDelivery(engines.Delivery{}, q, engines.Ticket{Ref: r, Token: tok})
		d := &buf[n]
		d.Queue = q.name
		d.Attempt = int(r.Attempt)
		d.Failures = int(r.Failures)
		d.EnqueuedAt = wall(r.enq)
		d.LeaseExpires = wall(deadline)
		n++
	}
	if r := q.leases.Peek(); r != nil {
		q.arm(r.due, now)
	}
	if len(ops) > 0 {
		if b, err = q.e.add(ops...); err != nil {
			return 0, nil, nil, err
		}
	}
	if n == 0 {
		if q.waitCh == nil {
			q.waitCh = make(chan struct{})
		}
		wait = q.waitCh
		q.waiters++
	}
	return n, wait, b, nil
}

// read fills in the payloads of freshly leased deliveries from the store
// and drops any whose message vanished meanwhile (its lease expired before
// it was even read, and someone else settled it).
func (q *queue) read(buf []engines.Delivery) (int, error) {
	var h header
	n := 0
	err := q.e.db.View(func(tx *bolt.Tx) error {
		x, err := queueBuckets(tx, q.name, false)
		if err != nil {
			return err
		}
		var key [8]byte
		for i := range buf {
			r := buf[i].Ticket().Ref.(*record)
			var v []byte
			if x != nil {
				v = x.msgs.Get(seqKey(&key, r.seq))
			}
			if v == nil {
				continue
			}
			if err := decodePayload(v, &h, &buf[i].Message, true); err != nil {
				return fmt.Errorf("message %d: %w", r.seq, err)
			}
			if n != i {
				buf[n] = buf[i]
			}
			n++
		}
		return nil
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return 0, q.errClosed("receive from")
	}
	if err != nil {
		return 0, fmt.Errorf("disk: receive from %q: reading %s: %w", q.name, q.e.path, err)
	}
	return n, nil
}

// Settle implements engines.Settler.
func (q *queue) Settle(ctx context.Context, t engines.Ticket, s engines.Settlement) error {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return fmt.Errorf("disk: %s on %q: foreign ticket: %w", s.Verdict, q.name, engines.ErrNotLeased)
	}
	b, err := q.settle(r, t.Token, s)
	if err != nil || b == nil {
		return err
	}
	if q.e.opts.Sync == SyncAlways || q.e.full(b) {
		if err := b.Wait(ctx); err != nil {
			return fmt.Errorf("disk: %s on %q: %w", s.Verdict, q.name, err)
		}
	}
	return nil
}

// StartSettle implements engines.GroupSettler: the settle is applied to the
// index and joins the pending commit at once, and the returned batch is
// what to wait on for it to be on disk (nil with sync = "batch", where
// Settle would not wait either, unless the pending commit is full). Many
// settles started before any is waited for share one commit and one fsync.
func (h *handle) StartSettle(ctx context.Context, d *engines.Delivery, s engines.Settlement) (engines.Pending, error) {
	q := h.q
	if d.Queue != q.name { // not ours: settle it the ordinary way
		return nil, d.Settle(ctx, s)
	}
	t := d.Ticket()
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return nil, fmt.Errorf("disk: %s on %q: foreign ticket: %w", s.Verdict, q.name, engines.ErrNotLeased)
	}
	b, err := q.settle(r, t.Token, s)
	if err != nil || b == nil {
		return nil, err
	}
	if q.e.opts.Sync == SyncAlways || q.e.full(b) {
		return b, nil
	}
	return nil, nil
}

func (q *queue) settle(r *record, token uint64, s engines.Settlement) (*batch, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, q.errClosed(s.Verdict.String() + " on")
	}
	if r.state != stateLeased || r.Token != token {
		return nil, fmt.Errorf("disk: %s on %q: %w", s.Verdict, q.name, engines.ErrLeaseLost)
	}
	out, err := q.policy.Settle(&r.Lease, s, &q.st)
	if err != nil {
		return nil, fmt.Errorf("disk: settle on %q: %w", q.name, err)
	}
	q.leases.Remove(int(r.idx))
	return q.apply(r, out, q.e.now())
}

// retry makes r visible again at the given time and stores its new state.
func (q *queue) retry(r *record, visible, now int64) (*batch, error) {
	q.schedule(r, visible, now)
	return q.e.add(op{kind: opPutState, q: q, seq: r.seq, val: encodeState(state{attempt: r.Attempt, failures: r.Failures, due: visible})})
}

// Extend implements engines.Settler. Lease deadlines are kept in memory
// only: after a restart every lease has expired anyway.
func (q *queue) Extend(ctx context.Context, t engines.Ticket, by time.Duration) (time.Time, error) {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return time.Time{}, fmt.Errorf("disk: extend on %q: foreign ticket: %w", q.name, engines.ErrNotLeased)
	}
	if by <= 0 {
		return time.Time{}, fmt.Errorf("disk: extend on %q by %v: must be positive: %w", q.name, by, engines.ErrInvalid)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return time.Time{}, q.errClosed("extend on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		return time.Time{}, fmt.Errorf("disk: extend on %q: %w", q.name, engines.ErrLeaseLost)
	}
	now := q.e.now()
	r.due = lease.After(now, by)
	q.leases.Fix(int(r.idx), r.dueKey())
	q.arm(r.due, now)
	return wall(r.due), nil
}

func (q *queue) stats() (engines.Stats, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return engines.Stats{}, q.errClosed("stats of")
	}
	if _, err := q.advance(q.e.now()); err != nil {
		return engines.Stats{}, err
	}
	s := q.st
	s.Ready = int64(q.ready.Len() + q.nParked)
	s.Delayed = int64(q.delayed.Len())
	s.InFlight = int64(q.leases.Len())
	return s, nil
}

// handle is one Open's view of a queue. Closing it stops its own calls and
// wakes its own blocked receivers without disturbing other handles.
type handle struct {
	q      *queue
	closed atomic.Bool
	once   sync.Once
	done   chan struct{}
}

var (
	_ engines.Queue    = (*handle)(nil)
	_ engines.Peeker   = (*handle)(nil)
	_ engines.Purger   = (*handle)(nil)
	_ engines.Redriver = (*handle)(nil)

	_ engines.GroupSettler = (*handle)(nil)
)

// Name returns the queue name.
func (h *handle) Name() string { return h.q.name }

// Close closes the handle. Leases taken through it stay valid until they
// expire, because the settler is the queue, not the handle.
func (h *handle) Close() error {
	h.once.Do(func() {
		h.closed.Store(true)
		close(h.done)
	})
	return nil
}

func (h *handle) errClosed(op string) error { return h.q.errClosed(op) }

// Enqueue validates the whole batch, encodes it outside any lock, and
// returns once it is on disk.
func (h *handle) Enqueue(ctx context.Context, msgs ...engines.Message) error {
	return h.enqueueWith(ctx, nil, msgs...)
}

// enqueueWith is Enqueue committing extra ops in the same transaction as
// the messages (a schedule's tick record, ticks.go).
func (h *handle) enqueueWith(ctx context.Context, extra []op, msgs ...engines.Message) error {
	if h.closed.Load() {
		return h.errClosed("enqueue to")
	}
	q := h.q
	limit := q.e.opts.MaxMessageSize
	for i := range msgs {
		m := &msgs[i]
		if len(m.Body) > limit {
			return fmt.Errorf("disk: enqueue to %q: message %d body is %d bytes, limit %d: %w", q.name, i, len(m.Body), limit, engines.ErrTooLarge)
		}
		if m.TTL < 0 {
			return fmt.Errorf("disk: enqueue to %q: message %d has negative TTL %v: %w", q.name, i, m.TTL, engines.ErrInvalid)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	now := q.e.now()
	payloads, seqs := q.e.encode(msgs, now)
	b, err := q.enqueue(msgs, payloads, seqs, now, extra...)
	if err != nil || b == nil {
		return err
	}
	if err := b.Wait(ctx); err != nil {
		return fmt.Errorf("disk: enqueue to %q: %w", q.name, err)
	}
	return nil
}

// Receive leases up to len(buf) messages into buf, blocking until one is
// available. With SyncAlways it returns once the leases are on disk, so an
// attempt that crashes the process is still counted.
func (h *handle) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	if len(buf) == 0 {
		return 0, fmt.Errorf("disk: receive from %q: empty buffer: %w", h.q.name, engines.ErrInvalid)
	}
	q := h.q
	return lease.Block(ctx, h.done, h.closedErr, func() (int, <-chan struct{}, error) {
		n, wait, b, err := q.lease(buf)
		if err != nil || n == 0 {
			return 0, wait, err
		}
		if n, err = q.read(buf[:n]); err != nil {
			return 0, nil, err
		}
		if q.e.opts.Sync == SyncAlways || q.e.full(b) {
			if err := b.Wait(ctx); err != nil && ctx.Err() == nil {
				return 0, nil, fmt.Errorf("disk: receive from %q: %w", q.name, err)
			}
		}
		return n, nil, nil // none when all vanished meanwhile: Block takes again
	})
}

// closedErr is the handle's ErrClosed error once it is closed, nil before.
func (h *handle) closedErr() error {
	if h.closed.Load() {
		return h.errClosed("receive from")
	}
	return nil
}

// Stats reports the queue's counters. Ready includes messages waiting
// behind their ordering key.
func (h *handle) Stats(ctx context.Context) (engines.Stats, error) {
	if h.closed.Load() {
		return engines.Stats{}, h.errClosed("stats of")
	}
	return h.q.stats()
}

// encode names the messages without an ID and encodes their payloads,
// outside any lock. seqs[i] is non-zero when the engine named message i,
// and is then the sequence its ID was made from.
func (e *Engine) encode(msgs []engines.Message, now int64) (payloads [][]byte, seqs []uint64) {
	return e.encodeInto(msgs, now, make([][]byte, len(msgs)), make([]uint64, len(msgs)))
}

// encodeInto is encode into payloads and seqs, of len(msgs) each.
func (e *Engine) encodeInto(msgs []engines.Message, now int64, payloads [][]byte, seqs []uint64) ([][]byte, []uint64) {
	for i := range msgs {
		m := &msgs[i]
		if m.ID == "" {
			seqs[i] = e.seq.Add(1)
			m.ID = formatID(seqs[i])
		}
		due := lease.After(now, m.Delay)
		var expire int64
		if m.TTL > 0 {
			expire = lease.After(due, m.TTL)
		}
		payloads[i] = encodePayload(m, now, due, expire)
	}
	return payloads, seqs
}
