//go:build linux

package posixmq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
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
			if q.e.opts.Spill == 0 {
				// Nothing to do but wait when the queue is full, so the send
				// waits in the kernel from the start: one system call
				// whether or not there is room.
				if sent, err := q.sendWaiting(ctx, h, w, m); sent || err != nil {
					return err
				}
				continue // the outbox filled meanwhile: queue behind it
			}
			if ok, err := q.send(w.buf, m, w.enq); ok || err != nil {
				return err
			}
		}
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return q.errClosed("enqueue to")
		}
		if q.outbox.len() < q.e.opts.Spill {
			q.spill(m, w.enq)
			q.mu.Unlock()
			w.spilled = true
			return nil
		}
		if q.outbox.len() == 0 {
			// The spill is full but empty of messages for the kernel
			// (Spill is zero): wait for room in the kernel itself.
			q.mu.Unlock()
			if sent, err := q.sendWaiting(ctx, h, w, m); sent || err != nil {
				return err
			}
			continue
		}
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

// sendSlice bounds one wait of a blocking send, so that a cancelled
// context or a Close is noticed within it.
const sendSlice = 50 * time.Millisecond

// sendWaiting sends m through the blocking descriptor, waiting in the kernel
// for room, which a receiver hands to it directly like a plain blocking
// mq_send, in slices of at most sendSlice until the deadline. It reports
// false with no error when messages appeared in the outbox meanwhile, which
// m must queue behind.
func (q *queue) sendWaiting(ctx context.Context, h *handle, w *sendState, m *engines.Message) (bool, error) {
	data := q.encodeNew(w.buf, m, w.enq)
	for {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("%w: %w", errFull, err)
		}
		if h.closed.Load() {
			return false, h.errClosed("enqueue to")
		}
		now := time.Now()
		if !now.Before(w.deadline) {
			return false, errFull
		}
		slice := now.Add(sendSlice)
		if w.deadline.Before(slice) {
			slice = w.deadline
		}
		q.fdMu.RLock()
		if q.fdClosed {
			q.fdMu.RUnlock()
			return false, q.errClosed("enqueue to")
		}
		err := q.bmq.Send(data, uint(m.Priority), slice)
		q.fdMu.RUnlock()
		if err == nil {
			q.enqTotal.Add(1)
			return true, nil
		}
		if !errors.Is(err, mq.ErrTimeout) {
			return false, err
		}
		if q.outLen.Load() > 0 {
			return false, nil
		}
	}
}

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
	return after(after(enq, max(m.Delay, 0)), m.TTL)
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
	r.attempt, r.failures = 0, 0
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
	r.due = after(now, m.Delay)
	q.delayed.push(r)
	q.enqTotal.Add(1)
	q.armTimer(now)
	return nil
}
