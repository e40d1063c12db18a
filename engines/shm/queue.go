//go:build linux

package shm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
	"github.com/qrun-dev/qrun/engines/shm/ring"
)

const (
	// maxFree bounds the recycled-record list.
	maxFree = 4096
	// heldRetry is how soon a delayed enqueue or a dead-letter move that
	// found its ring full is tried again.
	heldRetry = 50 * time.Millisecond
	// heldPush bounds one attempt to publish a held message from the timer,
	// which must not stall behind a full ring.
	heldPush = 20 * time.Millisecond
	// closeFlush bounds how long Close spends publishing held messages back.
	closeFlush = 2 * time.Second
	// warnEvery rate-limits the engine's warnings so a stuck ring cannot
	// flood the log.
	warnEvery = 10 * time.Second
)

// TooLargeError reports a message that does not fit a slot. It wraps
// engines.ErrTooLarge.
type TooLargeError struct {
	Queue string
	// Index is the message's position in the Enqueue call.
	Index int
	// Size is the record the message needs: its body, plus its envelope
	// when it carries more than a body.
	Size     int
	Body     int
	SlotSize int
}

// Error says both sizes and, when they differ, why the record is bigger
// than the body.
func (e *TooLargeError) Error() string {
	if e.Size == e.Body {
		return fmt.Sprintf("shm: enqueue to %q: message %d body is %d bytes, the slot size is %d", e.Queue, e.Index, e.Body, e.SlotSize)
	}
	return fmt.Sprintf("shm: enqueue to %q: message %d needs %d bytes (a %d-byte body and its ID, attributes and other fields), the slot size is %d",
		e.Queue, e.Index, e.Size, e.Body, e.SlotSize)
}

// Unwrap makes errors.Is(err, engines.ErrTooLarge) hold.
func (e *TooLargeError) Unwrap() error { return engines.ErrTooLarge }

// queue is the state one engine keeps for a queue: the mapped ring and the
// messages this process holds outside it. Every handle shares it.
type queue struct {
	e        *Engine
	name     string
	r        *ring.Ring
	slotSize int
	idPrefix string

	// nReady mirrors ready.n for the lock-free check a sleeping receiver makes.
	nReady   atomic.Int64
	seq      atomic.Uint64 // IDs of delayed enqueues, which have no position yet
	enqueued atomic.Int64  // EnqueuedTotal, kept off the lock producers would share
	// scratch recycles the per-call record slices of Enqueue and Receive.
	scratch sync.Pool

	mu     sync.Mutex
	closed bool
	policy lease.Policy

	ready fifo // to be redelivered, ahead of the ring
	// localKeys numbers, for PeekPage, the records this process holds that
	// never had a ring position; they sort after every position.
	localKeys uint64
	delayed   dueHeap // by due time
	leases    leaseSet
	free      []*record

	timer lease.Timer

	st       engines.Stats
	lastWarn time.Time
	quiet    int

	// busy counts moves in progress outside the lock (timer publishes,
	// dead-letter moves), so close can wait for them and flush what they
	// could not place instead of losing it.
	busy sync.WaitGroup
}

func newQueue(e *Engine, name string, r *ring.Ring) *queue {
	q := &queue{
		e: e, name: name, r: r, slotSize: r.Geometry().SlotSize,
		idPrefix: fmt.Sprintf("%08x.", uint32(r.Nonce())),
		policy:   lease.DefaultPolicy(),
	}
	q.timer = lease.NewTimer(q.onTimer)
	return q
}

func (q *queue) configure(spec engines.QueueSpec) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.policy.Apply(spec)
}

func (q *queue) errClosed(op string) error {
	return fmt.Errorf("shm: %s %q: %w", op, q.name, engines.ErrClosed)
}

// warn logs at most once per warnEvery, reporting how many it held back.
// Called with q.mu held.
func (q *queue) warn(msg string, fields ...zap.Field) {
	now := time.Now()
	if now.Sub(q.lastWarn) < warnEvery {
		q.quiet++
		return
	}
	q.e.log.Warn(msg, append(fields, zap.String("queue", q.name), zap.Int("suppressed", q.quiet))...)
	q.lastWarn, q.quiet = now, 0
}

// ttlDeadline is the Unix-nanosecond expiry of a message visible at
// visible (Unix nanoseconds), 0 for none.
func ttlDeadline(visible int64, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return after(visible, ttl)
}

// Enqueue validates the whole batch (sizes, unsupported fields) before
// publishing any of it. Messages without Delay are published in order; a
// blocking ring that stays full past the deadline leaves the rest
// unpublished, and the error says how many went in (their IDs are set).
func (q *queue) enqueue(ctx context.Context, msgs []engines.Message) error {
	envBytes, held := 0, 0
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.DedupID != "":
			return fmt.Errorf("shm: enqueue to %q: message %d has a dedup ID: %w", q.name, i, engines.ErrUnsupported)
		case m.TTL < 0:
			return fmt.Errorf("shm: enqueue to %q: message %d has negative TTL %v: %w", q.name, i, m.TTL, engines.ErrInvalid)
		}
		size := len(m.Body)
		if m.Delay > 0 || needsEnvelope(m) {
			n, err := envelopeSize(m)
			if err != nil {
				return fmt.Errorf("shm: enqueue to %q: message %d: %w", q.name, i, err)
			}
			size = n
			if m.Delay > 0 {
				if m.ID == "" {
					size += len(q.idPrefix) + heldIDExtra // the ID it is given now
				}
				held++
			} else {
				envBytes += n
			}
		}
		if size > q.slotSize {
			return &TooLargeError{Queue: q.name, Index: i, Size: size, Body: len(m.Body), SlotSize: q.slotSize}
		}
	}
	if held > 0 {
		q.hold(msgs)
	}
	if held == len(msgs) {
		return nil
	}

	now := time.Now().UnixNano()
	sc := q.getScratch(len(msgs) - held)
	defer q.scratch.Put(sc)
	recs := sc.recs[:0]
	var env []byte
	if envBytes > 0 {
		env = make([]byte, 0, envBytes)
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Delay > 0 {
			continue
		}
		rec := ring.Record{Enqueued: now, Data: m.Body}
		if needsEnvelope(m) {
			start := len(env)
			env = appendEnvelope(env, m, envelope{expires: ttlDeadline(now, m.TTL)})
			rec.Data, rec.Flags = env[start:], ring.FlagEnvelope
		}
		recs = append(recs, rec)
	}
	n, err := q.r.Push(ctx, recs)
	q.setIDs(msgs, recs[:n])
	q.enqueued.Add(int64(n))
	if err != nil {
		if errors.Is(err, ring.ErrClosed) {
			return q.errClosed("enqueue to")
		}
		return fmt.Errorf("shm: enqueue to %q: %d of %d messages published: %w", q.name, n, len(recs), err)
	}
	return nil
}

// setIDs writes the IDs of published messages back, deriving the missing
// ones from their positions, all from one allocation.
func (q *queue) setIDs(msgs []engines.Message, recs []ring.Record) {
	arena := make([]byte, 0, len(recs)*(len(q.idPrefix)+maxPosDigits))
	j := 0
	for i := range msgs {
		if msgs[i].Delay > 0 {
			continue
		}
		if j == len(recs) {
			return
		}
		if msgs[i].ID == "" {
			start := len(arena)
			arena = appendPos(append(arena, q.idPrefix...), recs[j].Pos)
			msgs[i].ID = bytesString(arena[start:])
		}
		j++
	}
}

// hold keeps the delayed messages of a batch in this process until they
// are due; each gets its ID now.
func (q *queue) hold(msgs []engines.Message) {
	now := q.e.now()
	enq := time.Now().UnixNano()
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range msgs {
		m := &msgs[i]
		if m.Delay <= 0 {
			continue
		}
		if m.ID == "" {
			m.ID = q.idPrefix + "d" + strconv.FormatUint(q.e.nonce, 36) + "-" + strconv.FormatUint(q.seq.Add(1), 36)
		}
		r := q.newRecord()
		r.id, r.flags = m.ID, ring.FlagEnvelope
		r.raw = appendEnvelope(nil, m, envelope{expires: ttlDeadline(after(enq, m.Delay), m.TTL)})
		r.enq = enq
		r.kind = dueEnqueue
		r.key = q.nextLocalKey()
		q.delay(r, after(now, m.Delay))
		q.enqueued.Add(1)
	}
}

func (q *queue) newRecord() *record {
	if n := len(q.free); n > 0 {
		r := q.free[n-1]
		q.free[n-1] = nil
		q.free = q.free[:n-1]
		return r
	}
	return &record{idx: -1}
}

// release recycles r; its token is kept, so old tickets never match again.
func (q *queue) release(r *record) {
	r.raw, r.id = nil, ""
	r.reason = ""
	r.state = stateFree
	r.Attempt, r.Failures, r.expires = 0, 0, 0
	if len(q.free) < maxFree {
		q.free = append(q.free, r)
	}
}

func (q *queue) delay(r *record, due int64) {
	r.state = stateDelayed
	r.due = due
	q.delayed.Push(r, &r.idx, r.dueKey())
	q.arm(due)
}

func (q *queue) makeReady(r *record) {
	r.kind = dueRedeliver
	r.state = stateReady
	q.ready.push(r)
	q.nReady.Add(1)
}

// redeliver schedules a settled-but-not-done message again here.
func (q *queue) redeliver(r *record, now int64, d time.Duration) (ready bool) {
	if d > 0 {
		r.kind = dueRedeliver
		q.delay(r, after(now, d))
		return false
	}
	q.makeReady(r)
	return true
}

// arm makes the timer fire by at.
func (q *queue) arm(at int64) {
	if q.timer.Needs(at) {
		q.timer.Arm(at, q.e.now())
	}
}

func (q *queue) rearm() {
	q.timer.Fired()
	next := int64(math.MaxInt64)
	if at, ok := q.leases.next(); ok {
		next = at
	}
	if r := q.delayed.Peek(); r != nil {
		next = min(next, r.due)
	}
	if next != math.MaxInt64 {
		q.arm(next)
	}
}

// receive leases up to len(buf) messages without waiting: first those this
// process holds ready, then from the ring.
func (q *queue) receive(buf []engines.Delivery) (int, error) {
	now := q.e.now()
	n := 0
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, q.errClosed("receive from")
	}
	for n < len(buf) && q.ready.n > 0 {
		r := q.ready.pop()
		q.nReady.Add(-1)
		if r.expires != 0 && now >= r.expires {
			q.st.ExpiredTotal++
			q.release(r)
			continue
		}
		m, _ := q.message(r)
		q.lease(r, now, &buf[n], &m)
		n++
	}
	q.mu.Unlock()
	if n == len(buf) {
		return n, nil
	}
	sc := q.getScratch(len(buf) - n)
	defer q.scratch.Put(sc)
	recs := sc.recs[:len(buf)-n]
	k, ids, err := q.r.TryPopReserve(recs, len(q.idPrefix)+maxPosDigits)
	if err != nil {
		if n > 0 {
			return n, nil
		}
		if errors.Is(err, ring.ErrClosed) {
			return 0, q.errClosed("receive from")
		}
		return 0, fmt.Errorf("shm: receive from %q: %w", q.name, err)
	}
	if k == 0 {
		return n, nil
	}
	return q.admit(buf, n, recs[:k], ids), nil
}

// scratch is what one Enqueue or Receive needs per message, recycled.
type scratch struct {
	recs []ring.Record
}

func (q *queue) getScratch(n int) *scratch {
	sc, _ := q.scratch.Get().(*scratch)
	if sc == nil {
		sc = new(scratch)
	}
	if cap(sc.recs) < n {
		sc.recs = make([]ring.Record, n)
	}
	return sc
}

// heldIDExtra bounds what a held message's ID adds to the prefix.
const heldIDExtra = 2 + 2*maxPosDigits

// maxPosDigits is the longest position appendPos writes.
const maxPosDigits = 13

// appendPos writes pos in base 32 (shifts, not divisions: it is per message).
func appendPos(dst []byte, pos uint64) []byte {
	const digits = "0123456789abcdefghijklmnopqrstuv"
	var b [maxPosDigits]byte
	i := len(b)
	for {
		i--
		b[i] = digits[pos&31]
		pos >>= 5
		if pos == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}

// admit turns records taken from the ring into leased deliveries in
// buf[n:], holding back those not yet visible and dropping the expired. It
// decodes each straight into its record under one lock acquisition, so a
// message is copied once more only into its delivery.
func (q *queue) admit(buf []engines.Delivery, n int, recs []ring.Record, arena []byte) int {
	wallNow := time.Now()
	wallNs := wallNow.UnixNano()
	out := n
	malformed := 0
	var firstErr error
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.e.now()
	for i := range recs {
		rc := &recs[i]
		r := q.newRecord()
		r.raw, r.flags = rc.Data, rc.Flags
		r.key = rc.Pos + 1
		var m engines.Message
		var env envelope
		if rc.Flags&ring.FlagEnvelope != 0 {
			var err error
			if env, err = decodeEnvelope(rc.Data, &m); err != nil {
				// Kept as an envelope of its own, so a redelivery or a
				// dead letter still says what was wrong.
				m = engines.Message{Body: rc.Data, Attributes: map[string]string{AttrMalformed: err.Error()}}
				env = envelope{}
				r.raw = appendEnvelope(nil, &m, env)
				malformed++
				firstErr = err
			}
		} else {
			m.Body = rc.Data
		}
		if m.ID == "" {
			start := len(arena)
			arena = appendPos(append(arena, q.idPrefix...), rc.Pos)
			m.ID = bytesString(arena[start:])
		}
		r.id = m.ID
		r.enq = rc.Enqueued
		if r.enq == 0 {
			r.enq = wallNs
		}
		r.Attempt, r.Failures = int32(min(env.attempt, math.MaxInt32)), int32(min(env.failures, math.MaxInt32))
		if env.expires != 0 {
			r.expires = q.e.fromUnix(env.expires, now, wallNow)
		}
		if rc.Visible != 0 {
			if due := q.e.fromUnix(rc.Visible, now, wallNow); due > now {
				r.kind = dueRedeliver
				q.delay(r, due)
				continue
			}
		}
		if r.expires != 0 && now >= r.expires {
			q.st.ExpiredTotal++
			q.release(r)
			continue
		}
		q.lease(r, now, &buf[out], &m)
		out++
	}
	if malformed > 0 {
		q.warn("delivering records whose envelope is malformed as bare bodies", zap.Int("records", malformed), zap.Error(firstErr))
	}
	return out
}

// message decodes r. Its envelope was checked when it came out of the ring
// (or was written by this process), so decoding cannot fail here.
func (q *queue) message(r *record) (engines.Message, envelope) {
	if r.flags&ring.FlagEnvelope == 0 {
		return engines.Message{ID: r.id, Body: r.raw}, envelope{}
	}
	var m engines.Message
	env, _ := decodeEnvelope(r.raw, &m)
	if m.ID == "" {
		m.ID = r.id
	}
	return m, env
}

// lease hands r, whose message is m, out as the delivery d. Called with
// q.mu held.
func (q *queue) lease(r *record, now int64, d *engines.Delivery, m *engines.Message) {
	r.state = stateLeased
	tok := r.Grant()
	r.expires = 0 // delivered: no longer subject to its TTL
	r.due = after(now, time.Duration(q.policy.VT))
	q.leases.add(r)
	q.arm(r.due)
	*d = engines.NewDelivery(engines.Delivery{
		Message: *m, Queue: q.name, Attempt: int(r.Attempt), Failures: int(r.Failures),
		EnqueuedAt: time.Unix(0, r.enq), LeaseExpires: q.e.wall(r.due),
	}, q, engines.Ticket{Ref: r, Token: tok})
}

// Settle implements engines.Settler.
func (q *queue) Settle(ctx context.Context, t engines.Ticket, s engines.Settlement) error {
	r, _ := t.Ref.(*record)
	q.mu.Lock()
	if r == nil || r.state != stateLeased || r.Token != t.Token {
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return q.errClosed("settle on")
		}
		return fmt.Errorf("shm: settle on %q: %w", q.name, engines.ErrLeaseLost)
	}
	out, err := q.policy.Settle(&r.Lease, s, &q.st)
	if err != nil {
		q.mu.Unlock()
		return fmt.Errorf("shm: settle on %q: %w", q.name, err)
	}
	q.leases.remove(r)
	switch out.Action {
	case lease.Drop:
		q.release(r)
		q.mu.Unlock()
		return nil
	case lease.Retry:
		ready := q.redeliver(r, q.e.now(), out.Delay)
		q.mu.Unlock()
		if ready {
			q.r.Notify()
		}
		return nil
	}
	return q.deadLetterLocked(ctx, r, out.Reason, s.Verdict == engines.Nack)
}

// deadLetterLocked moves r (removed from the leases) to the dead-letter
// queue, or drops it when there is none. It is called with q.mu held and
// returns with it released. If the move fails the lease is restored, so
// the message is not lost and the caller may settle again.
func (q *queue) deadLetterLocked(ctx context.Context, r *record, reason string, nacked bool) error {
	dl := q.policy.DeadLetter
	if dl == "" {
		q.st.DeadLetteredTotal++
		q.release(r)
		q.mu.Unlock()
		return nil
	}
	r.state = stateMoving
	q.busy.Add(1)
	defer q.busy.Done()
	q.mu.Unlock()
	err := q.moveDead(ctx, r, dl, reason)
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		if nacked {
			r.Failures--
			q.st.NackedTotal--
		}
		r.state = stateLeased
		q.leases.add(r)
		q.arm(r.due)
		return fmt.Errorf("shm: dead-letter from %q to %q: %w", q.name, dl, err)
	}
	q.st.DeadLetteredTotal++
	q.release(r)
	return nil
}

// moveDead publishes r's message into the dead-letter queue dl, with its
// attempts and failures.
func (q *queue) moveDead(ctx context.Context, r *record, dl, reason string) error {
	dq, err := q.e.queue(dl)
	if err != nil {
		return err
	}
	m, _ := q.message(r)
	m = lease.DeadLetter(m, q.name, reason)
	// The dead letter keeps its history: the envelope carries the attempts
	// and failures it had here.
	env := envelope{attempt: uint32(r.Attempt), failures: uint32(r.Failures)}
	if err := dq.publishHeld(ctx, &m, r.enq, env, 0); err != nil {
		return err
	}
	dq.enqueued.Add(1)
	return nil
}

// publishHeld publishes one message that this process held, in an
// envelope (it always has an ID by then).
func (q *queue) publishHeld(ctx context.Context, m *engines.Message, enq int64, env envelope, visible int64) error {
	size, err := envelopeSize(m)
	if err != nil {
		return err
	}
	if size > q.slotSize {
		return &TooLargeError{Queue: q.name, Size: size, Body: len(m.Body), SlotSize: q.slotSize}
	}
	rec := []ring.Record{{Flags: ring.FlagEnvelope, Enqueued: enq, Visible: visible,
		Data: appendEnvelope(make([]byte, 0, size), m, env)}}
	if _, err := q.r.Push(ctx, rec); err != nil {
		if errors.Is(err, ring.ErrClosed) {
			return q.errClosed("publish to")
		}
		return err
	}
	return nil
}

// Extend implements engines.Settler.
func (q *queue) Extend(ctx context.Context, t engines.Ticket, by time.Duration) (time.Time, error) {
	if by <= 0 {
		return time.Time{}, fmt.Errorf("shm: extend on %q: %v: %w", q.name, by, engines.ErrInvalid)
	}
	r, _ := t.Ref.(*record)
	q.mu.Lock()
	defer q.mu.Unlock()
	if r == nil || r.state != stateLeased || r.Token != t.Token {
		return time.Time{}, fmt.Errorf("shm: extend on %q: %w", q.name, engines.ErrLeaseLost)
	}
	q.leases.setDue(r, after(q.e.now(), by))
	q.arm(r.due)
	return q.e.wall(r.due), nil
}

// onTimer expires leases and moves due messages: to the local ready FIFO,
// into the ring (delayed enqueues) or to the dead-letter queue.
func (q *queue) onTimer() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	now := q.e.now()
	var pub, dead []*record
	woke := false
	for {
		r := q.leases.popExpired(now)
		if r == nil {
			break
		}
		out := q.policy.Expire(&r.Lease, &q.st)
		if out.Action == lease.Dead {
			if q.policy.DeadLetter == "" {
				q.st.DeadLetteredTotal++
				q.release(r)
				continue
			}
			r.state, r.reason = stateMoving, out.Reason
			dead = append(dead, r)
			continue
		}
		if q.redeliver(r, now, out.Delay) {
			woke = true
		}
	}
	for r := q.delayed.Peek(); r != nil && r.due <= now; r = q.delayed.Peek() {
		q.delayed.Pop()
		switch r.kind {
		case dueEnqueue:
			r.state = stateMoving
			pub = append(pub, r)
		case dueDeadLetter:
			r.state = stateMoving
			dead = append(dead, r)
		default:
			q.makeReady(r)
			woke = true
		}
	}
	q.rearm()
	dl := q.policy.DeadLetter
	if len(pub)+len(dead) > 0 {
		q.busy.Add(1)
		defer q.busy.Done()
	}
	q.mu.Unlock()
	if woke {
		q.r.Notify()
	}
	for _, r := range pub {
		ctx, cancel := context.WithTimeout(context.Background(), heldPush)
		_, err := q.r.Push(ctx, []ring.Record{{Flags: r.flags, Enqueued: r.enq, Data: r.raw}})
		cancel()
		q.settleHeld(r, err, dueEnqueue, "a delayed message is due but its ring is full; retrying")
	}
	for _, r := range dead {
		ctx, cancel := context.WithTimeout(context.Background(), heldPush)
		err := q.moveDead(ctx, r, dl, r.reason)
		cancel()
		if err == nil {
			q.mu.Lock()
			q.st.DeadLetteredTotal++
			q.mu.Unlock()
		}
		q.settleHeld(r, err, dueDeadLetter, "cannot move a message to its dead-letter queue; retrying")
	}
}

// settleHeld finishes a timer-driven publish: the record is freed, or
// scheduled again shortly when the publish failed, so nothing is lost.
func (q *queue) settleHeld(r *record, err error, kind uint8, warning string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err == nil {
		q.release(r)
		return
	}
	// Even when closing: close waits for this and then flushes r.
	q.warn(warning, zap.String("message_id", r.id), zap.Error(err))
	r.kind = kind
	q.delay(r, after(q.e.now(), heldRetry))
}

// close ends the queue in this process. With flush, what this process
// holds outside the ring is published back into it first.
func (q *queue) close(flush bool) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.timer.Stop()
	q.mu.Unlock()
	q.busy.Wait()
	q.mu.Lock()
	type heldMsg struct {
		r       *record
		visible time.Time // zero: at once
	}
	var held []heldMsg
	for q.ready.n > 0 {
		held = append(held, heldMsg{r: q.ready.pop()})
	}
	q.nReady.Store(0)
	for _, r := range q.delayed.Drain() {
		held = append(held, heldMsg{r: r, visible: q.e.wall(r.due)})
	}
	for {
		r := q.leases.popExpired(math.MaxInt64)
		if r == nil {
			break
		}
		held = append(held, heldMsg{r: r})
	}
	for _, h := range held {
		h.r.state = stateFree
	}
	q.mu.Unlock()

	var errs []error
	if flush && len(held) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), closeFlush)
		lost := 0
		for _, h := range held {
			r := h.r
			m, env := q.message(r)
			env.attempt, env.failures = uint32(r.Attempt), uint32(r.Failures)
			visible := int64(0)
			if !h.visible.IsZero() && h.visible.Before(time.Unix(0, math.MaxInt64)) {
				visible = h.visible.UnixNano()
			}
			if err := q.publishHeld(ctx, &m, r.enq, env, visible); err != nil {
				lost++
				errs = append(errs, err)
			}
		}
		cancel()
		if lost > 0 {
			q.e.log.Warn("closing: could not publish held messages back into the ring; they are lost",
				zap.String("queue", q.name), zap.Int("lost", lost), zap.Int("held", len(held)), zap.Error(errors.Join(errs...)))
			errs = []error{fmt.Errorf("shm: close %q: %d of %d held messages could not be published back: %w", q.name, lost, len(held), errs[0])}
		}
	}
	if err := q.r.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stats combines the ring's depth with this process's counters.
func (q *queue) stats() (engines.Stats, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return engines.Stats{}, q.errClosed("stats of")
	}
	st := q.st
	st.EnqueuedTotal = q.enqueued.Load()
	st.Ready = int64(q.ready.n)
	st.Delayed = int64(q.delayed.Len())
	st.InFlight = int64(q.leases.len())
	q.mu.Unlock()
	st.Ready += int64(q.r.Len())
	return st, nil
}

// Queue is a handle on one shared-memory queue.
type Queue struct {
	q      *queue
	closed atomic.Bool
}

var _ engines.Queue = (*Queue)(nil)

// Name is the queue's name.
func (h *Queue) Name() string { return h.q.name }

// Close closes the handle and wakes its blocked receivers. Leases taken
// through it stay valid.
func (h *Queue) Close() error {
	if !h.closed.Swap(true) {
		h.q.r.Notify()
	}
	return nil
}

// Enqueue publishes msgs into the ring (see the package doc for Delay). A
// message that does not fit a slot is a *TooLargeError and nothing of the
// batch is published; a full blocking ring waits until ctx is done or, when
// ctx has no deadline, for the engine's send timeout.
func (h *Queue) Enqueue(ctx context.Context, msgs ...engines.Message) error {
	if h.closed.Load() {
		return h.q.errClosed("enqueue to")
	}
	if len(msgs) == 0 {
		return nil
	}
	h.q.mu.Lock()
	closed := h.q.closed
	h.q.mu.Unlock()
	if closed {
		return h.q.errClosed("enqueue to")
	}
	return h.q.enqueue(ctx, msgs)
}

// Receive leases up to len(buf) messages, blocking (a brief spin, then a
// futex sleep) until one is available, ctx is done or the handle closes.
func (h *Queue) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	q := h.q
	if len(buf) == 0 {
		return 0, fmt.Errorf("shm: receive from %q: empty buffer: %w", q.name, engines.ErrInvalid)
	}
	local := func() bool { return q.nReady.Load() > 0 || h.closed.Load() }
	for {
		if h.closed.Load() {
			return 0, q.errClosed("receive from")
		}
		n, err := q.receive(buf)
		if n > 0 || err != nil {
			return n, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := q.r.WaitData(ctx, time.Time{}, local); err != nil {
			if errors.Is(err, ring.ErrClosed) {
				return 0, q.errClosed("receive from")
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("shm: receive from %q: %w", q.name, err)
		}
	}
}

// Stats reports the ring's depth plus this process's held messages and
// counters (see the package doc).
func (h *Queue) Stats(ctx context.Context) (engines.Stats, error) {
	if h.closed.Load() {
		return engines.Stats{}, h.q.errClosed("stats of")
	}
	return h.q.stats()
}

// RingStats reports the segment's shared counters: everything published by
// every process, overwrites (cyclic mode) and what the stall rule skipped.
func (h *Queue) RingStats() (ring.Stats, error) {
	if h.closed.Load() {
		return ring.Stats{}, h.q.errClosed("stats of")
	}
	st, err := h.q.r.Stats()
	if errors.Is(err, ring.ErrClosed) {
		return st, h.q.errClosed("stats of")
	}
	return st, err
}
