//go:build linux

package posixmq

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
	"github.com/qrun-dev/qrun/engines/posixmq/frame"
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

// received is what a kernel message brings besides its Message, kept until
// its record is made.
type received struct {
	enq                int64
	attempts, failures uint32
	kprio              uint32
	raw                bool
}

// recvScratch is the per-call working memory of a receive, pooled: the body
// slab's free tail, a copy buffer for large messages, and the side data.
type recvScratch struct {
	arena bodyArena
	copy  []byte
	side  []received
}

var recvPool = sync.Pool{New: func() any { return new(recvScratch) }}

// leaderSlice bounds one wait of the leading receiver in the poller, so
// that a cancelled context is noticed within it.
const leaderSlice = 50 * time.Millisecond

// receive implements Queue.Receive for handle h.
//
// A receiver that finds nothing waits in one of two ways. The first to wait
// becomes the leader and waits in Go's poller for the descriptor itself, so
// a message from the kernel wakes it with no hand-off; the others wait on a
// channel that the leader closes when its wait ends. An in-process event (a
// redelivery, Close) closes the channel and cuts the leader's wait short.
func (q *queue) receive(ctx context.Context, h *handle, buf []engines.Delivery) (int, error) {
	for {
		if h.closed.Load() {
			return 0, h.errClosed("receive from")
		}
		n, err := q.take(buf, h.name)
		if err != nil || n > 0 {
			return n, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return 0, q.errClosed("receive from")
		}
		if q.ready.Len() > 0 {
			q.mu.Unlock()
			continue
		}
		if !q.leading {
			q.leading = true
			q.kicked.Store(false)
			q.mu.Unlock()
			q.lead(ctx)
			q.mu.Lock()
			q.leading = false
			q.wake() // the followers look again, and one of them leads
			q.mu.Unlock()
			continue
		}
		if q.waitCh == nil {
			q.waitCh = make(chan struct{})
		}
		wait := q.waitCh
		q.followers++
		q.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-h.done:
			return 0, h.errClosed("receive from")
		}
	}
}

// lead waits in the poller until the kernel queue has a message, the wait
// is kicked, or leaderSlice (or ctx's deadline) passes. The readiness check
// runs inside the poller's callback, after the poller's state was reset, so
// a message that arrived before the wait is seen by the check and one that
// arrives after wakes the poller: nothing falls between.
func (q *queue) lead(ctx context.Context) {
	deadline := time.Now().Add(leaderSlice)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if q.file.SetReadDeadline(deadline) != nil {
		return // closed
	}
	_ = q.rc.Read(q.readable)
}

// readable is the leader's readiness check.
func (q *queue) readable(uintptr) bool {
	if q.kicked.Load() {
		return true
	}
	a, err := q.mq.Attr()
	return err != nil || a.CurMsgs > 0
}

// kick cuts the leader's wait short; called with mu held.
func (q *queue) kick() {
	if q.leading && !q.kicked.Swap(true) {
		_ = q.file.SetReadDeadline(time.Unix(1, 0))
	}
}

// take leases what is available now: redeliveries first, then messages from
// the kernel queue, without waiting.
func (q *queue) take(buf []engines.Delivery, name string) (int, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, q.errClosed("receive from")
	}
	now := q.e.now()
	q.advance(now)
	n := 0
	if q.ready.Len() > 0 {
		leaseExpires := q.e.wall(lease.After(now, time.Duration(q.policy.VT)))
		for n < len(buf) && q.ready.Len() > 0 {
			q.lease(q.ready.Pop(), &buf[n], name, now, leaseExpires)
			n++
		}
		q.armTimer(now)
	}
	dead := q.takeDead()
	q.mu.Unlock()
	if dead != nil {
		q.e.flushDead(dead)
	}
	var err error
	if n < len(buf) {
		var k int
		k, err = q.fromKernel(buf[n:], name)
		n += k
		if n > 0 {
			err = nil // deliveries in hand: the error will recur on the next call
		}
	}
	if q.outLen.Load() > 0 {
		q.pump() // this receive made room
	}
	return n, err
}

// fromKernel receives up to len(buf) messages from the kernel queue without
// waiting, and leases them. The records are made before the descriptor's
// shared lock is released, so Close, which waits for it, finds them and
// writes them back: a message taken out of the kernel is never in limbo.
func (q *queue) fromKernel(buf []engines.Delivery, name string) (int, error) {
	q.fdMu.RLock()
	defer q.fdMu.RUnlock()
	if q.fdClosed {
		return 0, q.errClosed("receive from")
	}
	sc := recvPool.Get().(*recvScratch)
	defer recvPool.Put(sc)
	sc.side = sc.side[:0]
	wallNow := time.Now().UnixNano()
	got, expired := 0, 0
	var rerr error
	for got < len(buf) {
		var space []byte
		if q.direct {
			space = sc.arena.space(q.msgSize)
		} else {
			if len(sc.copy) < q.msgSize {
				sc.copy = make([]byte, q.msgSize)
			}
			space = sc.copy
		}
		n, prio, err := q.mq.Receive(space, time.Time{})
		if err != nil {
			if !errors.Is(err, mq.ErrTimeout) {
				rerr = err
			}
			break
		}
		var msg []byte
		if q.direct {
			msg = sc.arena.commit(n)
		} else {
			msg = append([]byte(nil), space[:n]...)
		}
		var h frame.Header
		body, framed, ferr := frame.Decode(msg, &h)
		if ferr != nil {
			q.warnf("message looks like a qrun envelope but cannot be read; delivered as raw bytes", zap.Error(ferr))
		}
		if framed && h.ExpiresAt != 0 && wallNow >= h.ExpiresAt {
			expired++
			continue
		}
		side := received{kprio: uint32(prio)}
		d := &buf[got]
		if framed {
			d.Message = engines.Message{ID: h.ID, Body: body, Attributes: h.Attributes, ContentType: h.ContentType,
				CorrelationID: h.CorrelationID, OrderingKey: h.OrderingKey}
			side.enq, side.attempts, side.failures = h.EnqueuedAt, h.Attempts, h.Failures
		} else {
			d.Message = engines.Message{Body: msg}
			side.enq, side.raw = wallNow, true
		}
		d.Message.Priority = uint8(min(prio, engines.MaxPriority))
		sc.side = append(sc.side, side)
		got++
	}
	if got == 0 && expired == 0 {
		return 0, rerr
	}

	q.mu.Lock()
	defer q.mu.Unlock()
	q.st.ExpiredTotal += int64(expired)
	// This receive made room: wake the senders of this process waiting for
	// it directly, rather than through the write watcher, which would need
	// the poller to notice first and then hand the wake-up on.
	q.wakeRoom()
	now := q.e.now()
	leaseExpires := q.e.wall(lease.After(now, time.Duration(q.policy.VT)))
	for i := range got {
		s := &sc.side[i]
		r := q.newRecord()
		r.msg = buf[i].Message
		if r.msg.ID == "" {
			r.msg.ID = q.nextID()
		}
		q.seq++
		r.seq = q.seq
		r.enq, r.expire = s.enq, 0 // delivered in time: the TTL has done its job
		r.Attempt, r.Failures = clampInt32(s.attempts), clampInt32(s.failures)
		r.kprio, r.raw = s.kprio, s.raw
		if q.closed {
			// Close is waiting for fdMu and will write it back.
			r.state = stateReady
			q.ready.Push(r, &r.idx, r.prioKey())
			continue
		}
		q.lease(r, &buf[i], name, now, leaseExpires)
	}
	if q.closed {
		return 0, q.errClosed("receive from")
	}
	q.armTimer(now)
	return got, nil
}

// lease hands r to a receiver in d.
func (q *queue) lease(r *record, d *engines.Delivery, name string, now int64, leaseExpires time.Time) {
	tok := r.Grant()
	r.state = stateLeased
	r.due = lease.After(now, time.Duration(q.policy.VT))
	q.leases.Push(r, &r.idx, r.dueKey())
	// Bind first, then fill in place: a Delivery is large, and building it
	// as a value to assign costs several copies.
	*d = engines.NewDelivery(engines.Delivery{}, q, engines.Ticket{Ref: r, Token: tok})
	d.Message = r.msg
	d.Queue = name
	d.Attempt = int(r.Attempt)
	d.Failures = int(r.Failures)
	d.EnqueuedAt = time.Unix(0, r.enq)
	d.LeaseExpires = leaseExpires
}

// advance makes due delayed messages visible (redeliveries in memory, new
// messages into the outbox for the kernel) and expires lapsed leases.
func (q *queue) advance(now int64) {
	for q.delayed.Len() > 0 && q.delayed.Peek().due <= now {
		r := q.delayed.Pop()
		if r.outbound {
			r.outbound = false
			q.toOutbox(r)
		} else {
			q.makeReady(r)
		}
	}
	for q.leases.Len() > 0 && q.leases.Peek().due <= now {
		r := q.leases.Pop()
		q.apply(r, q.policy.Expire(&r.Lease, &q.st), now)
	}
}

// clampInt32 reads a count from another process's envelope into a lease.
func clampInt32(n uint32) int32 { return int32(min(n, math.MaxInt32)) }

func (q *queue) makeReady(r *record) {
	r.state = stateReady
	q.ready.Push(r, &r.idx, r.prioKey())
	q.wake()
}

func (q *queue) toOutbox(r *record) {
	r.state = stateOutbox
	q.outbox.Push(r, &r.idx, r.prioKey())
	q.outLen.Add(1)
}

// armTimer makes sure the timer fires by the next delayed message or lease
// deadline.
func (q *queue) armTimer(now int64) {
	at := int64(-1)
	if r := q.delayed.Peek(); r != nil {
		at = r.due
	}
	if r := q.leases.Peek(); r != nil && (at < 0 || r.due < at) {
		at = r.due
	}
	if at >= 0 && !q.closed {
		q.timer.Arm(at, now)
	}
}

func (q *queue) onTimer() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.timer.Fired()
	now := q.e.now()
	q.advance(now)
	q.armTimer(now)
	dead := q.takeDead()
	q.mu.Unlock()
	if dead != nil {
		q.e.flushDead(dead)
	}
	if q.outLen.Load() > 0 {
		q.pump()
	}
}
