//go:build linux

package posixmq

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
	"github.com/qrun-dev/qrun/engines/posixmq/frame"
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

// enqueue implements Queue.Enqueue. The batch is validated whole before
// anything is sent, so the only failures midway are a queue that stayed
// full and Close; the error then says how many messages were stored.
func (q *queue) enqueue(ctx context.Context, h *handle, msgs []engines.Message) error {
	if err := q.validate(msgs); err != nil {
		return err
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return q.errClosed("enqueue to")
	}
	for i := range msgs {
		if msgs[i].ID == "" {
			msgs[i].ID = q.nextID()
		}
	}
	q.mu.Unlock()

	now := time.Now()
	w := &sendState{enq: now.UnixNano(), deadline: now.Add(q.e.opts.SendTimeout)}
	if d, ok := ctx.Deadline(); ok && d.Before(w.deadline) {
		w.deadline = d
	}
	w.buf = scratchPool.Get().(*[]byte)
	defer scratchPool.Put(w.buf)
	defer func() {
		if w.timer != nil {
			w.timer.Stop()
		}
		if w.spilled {
			q.pump()
		}
	}()
	for i := range msgs {
		if err := q.enqueueOne(ctx, h, w, &msgs[i]); err != nil {
			return q.partial(i, len(msgs), err)
		}
	}
	return nil
}

// sendState is what one Enqueue call's messages share.
type sendState struct {
	buf      *[]byte // encoding buffer
	enq      int64   // enqueue time, Unix nanoseconds
	deadline time.Time
	timer    *time.Timer // made at the first wait for room in the outbox
	spilled  bool        // messages went to the outbox: pump when done
}

// enqueueOne stores m: in memory if it is delayed, otherwise into the
// kernel queue, or the outbox when the kernel queue is full and the spill
// has room, or after waiting for room. Messages never overtake those already
// in the outbox.
func (q *queue) enqueueOne(ctx context.Context, h *handle, w *sendState, m *engines.Message) error {
	if m.Delay > 0 {
		return q.delay(m, w.enq)
	}
	for {
		if q.outLen.Load() == 0 {
			if ok, err := q.send(w.buf, m, w.enq); ok || err != nil {
				return err
			}
		}
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return q.errClosed("enqueue to")
		}
		if q.outbox.Len() < q.e.opts.Spill {
			q.spill(m, w.enq)
			q.mu.Unlock()
			w.spilled = true
			return nil
		}
		// Wait for room. The sender parks like any goroutine and the write
		// watcher, the one waiter in the poller, wakes it: no OS thread
		// sleeps in mq_timedsend, which on a busy queue would put the
		// producer to sleep and wake it again for every message.
		if q.roomCh == nil {
			q.roomCh = make(chan struct{})
		}
		room := q.roomCh
		q.mu.Unlock()
		if w.spilled {
			q.pump()
			w.spilled = false
		}
		// Armed after roomCh exists: room made after the send failed is
		// seen by the watcher's check.
		arm(q.armWrite)
		if w.timer == nil {
			w.timer = time.NewTimer(time.Until(w.deadline))
		}
		if err := q.waitRoom(ctx, h, room, w.timer.C); err != nil {
			return err
		}
	}
}

// errFull is what a send that found no room until its deadline wraps: the
// package's timeout, and the errno of a send that waited in vain.
var errFull = fmt.Errorf("the queue stayed full until the deadline: %w: %w", mq.ErrTimeout, unix.ETIMEDOUT)

// waitRoom waits until room may have appeared, or fails.
func (q *queue) waitRoom(ctx context.Context, h *handle, room <-chan struct{}, deadline <-chan time.Time) error {
	select {
	case <-room:
		return nil
	case <-deadline:
		return errFull
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errFull, ctx.Err())
	case <-h.done:
		return h.errClosed("enqueue to")
	}
}

// partial wraps err with how much of the batch was stored.
func (q *queue) partial(stored, n int, err error) error {
	if n == 1 {
		return fmt.Errorf("posixmq: enqueue to %q: %w", q.name, err)
	}
	return fmt.Errorf("posixmq: enqueue to %q: %d of %d messages stored: %w", q.name, stored, n, err)
}

// validate checks the whole batch against what the engine and the kernel
// queue can carry.
func (q *queue) validate(msgs []engines.Message) error {
	raw := q.e.opts.Format == Raw
	for i := range msgs {
		m := &msgs[i]
		var why error
		switch {
		case m.TTL < 0:
			why = fmt.Errorf("negative TTL %v: %w", m.TTL, engines.ErrInvalid)
		case m.DedupID != "":
			why = fmt.Errorf("deduplication (DedupID %q): %w", m.DedupID, engines.ErrUnsupported)
		case raw && (m.ID != "" || len(m.Attributes) > 0 || m.ContentType != "" || m.CorrelationID != "" || m.OrderingKey != "" || m.TTL > 0):
			why = fmt.Errorf("format raw carries only the body and the priority, not an ID, attributes, content type, correlation ID, ordering key or TTL: %w", engines.ErrUnsupported)
		}
		if why != nil {
			return fmt.Errorf("posixmq: enqueue to %q: message %d: %w", q.name, i, why)
		}
		size := len(m.Body)
		if !raw {
			size += headerSize(m)
		}
		if size > q.msgSize {
			return fmt.Errorf("posixmq: enqueue to %q: message %d: %w", q.name, i, &mq.TooLargeError{Op: "send", Name: q.kname, Size: size, Max: q.msgSize})
		}
	}
	return nil
}

// headerSize is the envelope size of m, counting an ID the engine has yet
// to assign at its longest.
func headerSize(m *engines.Message) int {
	h := frame.Header{ID: m.ID, ContentType: m.ContentType, CorrelationID: m.CorrelationID, OrderingKey: m.OrderingKey, Attributes: m.Attributes}
	n := frame.HeaderSize(&h)
	if m.ID == "" {
		n += 2 + maxIDLen
	}
	return n
}

// expiry is the TTL deadline of m in Unix nanoseconds (0 for none),
// counted from when it becomes visible.
func expiry(m *engines.Message, enq int64) int64 {
	if m.TTL <= 0 {
		return 0
	}
	return lease.After(lease.After(enq, max(m.Delay, 0)), m.TTL)
}

// encodeNew returns what to send for a new message: its frame, or its
// bare body on a raw-format engine.
func (q *queue) encodeNew(buf *[]byte, m *engines.Message, enq int64) []byte {
	if q.e.opts.Format == Raw {
		return m.Body
	}
	h := frame.Header{ID: m.ID, ContentType: m.ContentType, CorrelationID: m.CorrelationID, OrderingKey: m.OrderingKey,
		Attributes: m.Attributes, EnqueuedAt: enq, ExpiresAt: expiry(m, enq)}
	*buf = frame.Append((*buf)[:0], &h, m.Body)
	return *buf
}

// send writes m into the kernel queue without waiting; false with a nil
// error means the queue is full.
func (q *queue) send(buf *[]byte, m *engines.Message, enq int64) (bool, error) {
	data := q.encodeNew(buf, m, enq)
	q.fdMu.RLock()
	defer q.fdMu.RUnlock()
	if q.fdClosed {
		return false, q.errClosed("enqueue to")
	}
	ok, err := q.mq.TrySend(data, uint(m.Priority))
	if ok {
		q.enqTotal.Add(1)
	}
	return ok, err
}

// record makes a record of a new message; called with mu held.
func (q *queue) record(m *engines.Message, enq int64) *record {
	r := q.newRecord()
	r.msg = *m
	q.seq++
	r.seq = q.seq
	r.enq, r.expire = enq, expiry(m, enq)
	r.Attempt, r.Failures = 0, 0
	r.kprio = uint32(m.Priority)
	return r
}

// spill holds m in the outbox until the kernel queue has room; mu held.
func (q *queue) spill(m *engines.Message, enq int64) {
	q.toOutbox(q.record(m, enq))
	q.enqTotal.Add(1)
}

// delay holds m in memory until it is due, when it goes to the kernel.
func (q *queue) delay(m *engines.Message, enq int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return q.errClosed("enqueue to")
	}
	r := q.record(m, enq)
	r.outbound = true
	r.state = stateDelayed
	now := q.e.now()
	r.due = lease.After(now, m.Delay)
	q.delayed.Push(r, &r.idx, r.dueKey())
	q.enqTotal.Add(1)
	q.armTimer(now)
	return nil
}
