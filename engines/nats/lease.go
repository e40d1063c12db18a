package nats

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// lease is one delivery's lease. The server holds it for the consumer's
// ack wait (the visibility timeout plus AckMargin); the engine's own timer
// ends it at the visibility timeout, or keeps the server's alive past its
// ack wait for an Extend, so the lease a caller sees is exact while the
// node runs and the server's only matters once it died.
type lease struct {
	q   *queueState
	msg jetstream.Msg
	seq uint64
	vt  time.Duration

	rec      record
	hasRec   bool // the bucket may hold a record to drop
	dirty    bool // rec changed since it was read
	attempt  int
	failures int

	mu       sync.Mutex
	held     bool
	deadline time.Time
	refresh  time.Time // when the server's ack wait was last restarted
	timer    *time.Timer
}

// start takes the lease at now and returns its expiry.
func (l *lease) start(now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = true
	l.q.track(l)
	l.deadline = now.Add(l.vt)
	l.refresh = now
	l.arm(now)
	return l.deadline
}

// ackWait is the server's ack wait of the lease's queue.
func (l *lease) ackWait() time.Duration { return l.q.e.ackWait(l.vt) }

// arm sets the timer for the next thing the lease needs: its end, or,
// before that, restarting the server's ack wait (half-way through it).
// Called with mu held.
func (l *lease) arm(now time.Time) {
	next := l.deadline
	if r := l.refresh.Add(l.ackWait() / 2); r.Before(next) {
		next = r
	}
	d := next.Sub(now)
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.tick)
	} else {
		l.timer.Reset(d)
	}
}

// tick runs on the lease's timer.
func (l *lease) tick() {
	l.mu.Lock()
	if !l.held {
		l.mu.Unlock()
		return
	}
	now := time.Now()
	if now.Before(l.deadline) {
		// Keep the server's lease alive past its ack wait.
		l.refresh = now
		l.arm(now)
		l.mu.Unlock()
		if err := l.msg.InProgress(); err != nil {
			l.q.e.log.Warn("extending a lease on the server", zap.String("queue", l.q.name), zap.Uint64("seq", l.seq), zap.Error(err))
		}
		return
	}
	l.held = false
	l.mu.Unlock()
	l.q.untrack(l)
	l.expire()
}

// expire ends a lease its holder let run out: one failure, then the
// retry delay, or the dead-letter queue at MaxAttempts.
func (l *lease) expire() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := l.q
	q.count(ctx, func(c *counters) { c.ExpiredLease++ })
	spec := q.spec.Load()
	failures := l.failures + 1
	if spec.MaxAttempts > 0 && failures >= spec.MaxAttempts {
		l.failures = failures
		l.rec.Failures++
		l.deadLetter(ctx, fmt.Sprintf("lease expired: attempt %d of %d", failures, spec.MaxAttempts), false)
		return
	}
	delay := spec.Retry.Delay(failures - 1)
	l.rec.Settled++
	l.rec.Failures++
	if err := l.handBack(ctx, delay); err != nil {
		q.e.log.Warn("handing back an expired lease; the server takes it back at its ack wait", zap.String("queue", q.name), zap.Uint64("seq", l.seq), zap.Error(err))
	}
}

// handBack records rec (with the time the message is due again) and then
// Naks the message with delay, in that order, so that whoever receives it
// next reads the record that accounts for this delivery.
func (l *lease) handBack(ctx context.Context, delay time.Duration) error {
	l.rec.Until, l.rec.Back = 0, true
	if delay > 0 {
		l.rec.Until = time.Now().Add(delay).UnixNano()
	}
	if err := l.q.putRecord(ctx, l.seq, &l.rec); err != nil {
		return err
	}
	return l.q.e.acks.do(ctx, l.msg.Reply(), nakDelay(delay))
}

// hold takes back a delivery that is no attempt (the message is not due)
// with the delay that remains.
func (l *lease) hold(ctx context.Context, delay time.Duration) {
	l.rec.Settled++
	l.rec.Holds++
	l.rec.Back = true
	if err := l.q.putRecord(ctx, l.seq, &l.rec); err != nil {
		l.q.e.log.Warn("recording a held message", zap.String("queue", l.q.name), zap.Uint64("seq", l.seq), zap.Error(err))
	}
	if err := l.q.e.acks.do(ctx, l.msg.Reply(), nakDelay(delay)); err != nil {
		l.q.e.log.Warn("holding a message not yet due", zap.String("queue", l.q.name), zap.Uint64("seq", l.seq), zap.Error(err))
	}
}

// Settle implements engines.Settler.
func (q *queueState) Settle(ctx context.Context, t engines.Ticket, s engines.Settlement) error {
	l, ok := t.Ref.(*lease)
	if !ok || l.q != q {
		return engines.ErrNotLeased
	}
	if s.Delay < 0 {
		return fmt.Errorf("settle in %q: negative delay: %w", q.name, engines.ErrInvalid)
	}
	if s.Verdict > engines.DeadLetter {
		return fmt.Errorf("settle in %q: verdict %d: %w", q.name, s.Verdict, engines.ErrInvalid)
	}
	if err := l.take(); err != nil {
		return err
	}
	spec := q.spec.Load()
	switch s.Verdict {
	case engines.Ack:
		p, err := q.startAck(l)
		if err != nil {
			return err
		}
		return p.Wait(ctx)
	case engines.Nack:
		q.count(ctx, func(c *counters) { c.Nacked++ })
		l.failures++
		l.rec.Failures++
		if spec.MaxAttempts > 0 && l.failures >= spec.MaxAttempts {
			reason := s.Reason
			if reason == "" {
				reason = "nacked"
			}
			return l.deadLetter(ctx, fmt.Sprintf("max attempts %d reached: %s", spec.MaxAttempts, reason), false)
		}
		l.rec.Settled++
		if err := l.handBack(ctx, s.Delay); err != nil {
			return fmt.Errorf("nack in %q: %w", q.name, err)
		}
	case engines.Requeue:
		l.rec.Settled++
		if err := l.handBack(ctx, s.Delay); err != nil {
			return fmt.Errorf("requeue in %q: %w", q.name, err)
		}
	case engines.DeadLetter:
		return l.deadLetter(ctx, s.Reason, false)
	}
	return nil
}

// take ends the lease for a settle: ErrLeaseLost if it already ended.
func (l *lease) take() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held || !time.Now().Before(l.deadline) {
		return fmt.Errorf("settle in %q: %w", l.q.name, engines.ErrLeaseLost)
	}
	l.held = false
	l.timer.Stop()
	l.q.untrack(l)
	return nil
}

// Extend implements engines.Settler: the lease ends at now+by. The
// server's ack wait is restarted now and, for a lease longer than it,
// again half-way through each (InProgress); a shorter lease is ended by
// the engine's timer.
func (q *queueState) Extend(ctx context.Context, t engines.Ticket, by time.Duration) (time.Time, error) {
	l, ok := t.Ref.(*lease)
	if !ok || l.q != q {
		return time.Time{}, engines.ErrNotLeased
	}
	if by <= 0 {
		return time.Time{}, fmt.Errorf("extend in %q: %v: %w", q.name, by, engines.ErrInvalid)
	}
	l.mu.Lock()
	now := time.Now()
	if !l.held || !now.Before(l.deadline) {
		l.mu.Unlock()
		return time.Time{}, fmt.Errorf("extend in %q: %w", q.name, engines.ErrLeaseLost)
	}
	l.deadline = now.Add(by)
	l.refresh = now
	l.arm(now)
	exp := l.deadline
	l.mu.Unlock()
	if err := l.msg.InProgress(); err != nil {
		return exp, fmt.Errorf("extend in %q: %w", q.name, err)
	}
	return exp, nil
}

// deadLetter moves the message to the dead-letter queue (or drops it
// without one): it publishes the copy, then terminates the original. A
// crash between the two leaves the original to be delivered again; the
// copy's Nats-Msg-Id (source stream and sequence) keeps a second move
// within the dedup window from making a second copy.
func (l *lease) deadLetter(ctx context.Context, reason string, atReceive bool) error {
	q := l.q
	if dl := q.spec.Load().DeadLetter; dl != "" {
		dlq := q.e.subject(dl)
		md, err := decodeMeta(l.msg.Headers())
		if err != nil {
			md = meta{}
		}
		meta0, _ := l.msg.Metadata()
		msg := messageOf(&md, l.seq, nil)
		attrs := make(map[string]string, len(md.Attrs)+2)
		for k, v := range md.Attrs {
			attrs[k] = v
		}
		attrs[engines.AttrDeadLetterReason] = reason
		attrs[engines.AttrDeadLetterSource] = q.name
		attempt := l.attempt
		if atReceive {
			// The expiries found at receive ended the last attempt,
			// which was the one before this delivery.
			attempt--
		}
		dm := meta{ID: msg.ID, Attrs: attrs, ContentType: md.ContentType, Correlation: md.Correlation,
			OrderingKey: md.OrderingKey, Priority: md.Priority, Attempt: attempt, Failures: l.failures}
		if meta0 != nil {
			dm.EnqueuedAt = enqueuedAt(&md, meta0.Timestamp).UnixNano()
		}
		nm, err := encode(dlq, &dm, l.msg.Data(), fmt.Sprintf("dl-%s-%d", q.stream, l.seq))
		if err != nil {
			return fmt.Errorf("dead-letter in %q: %w", q.name, err)
		}
		if _, err := q.e.js.PublishMsg(ctx, nm); err != nil {
			// Leave the lease to run out: the message comes back.
			return fmt.Errorf("dead-letter in %q: publishing to %s: %w", q.name, dlq, err)
		}
	}
	if err := q.e.acks.do(ctx, l.msg.Reply(), ackTerm); err != nil {
		return fmt.Errorf("dead-letter in %q: %w", q.name, err)
	}
	q.count(ctx, func(c *counters) { c.DeadLettered++ })
	if l.hasRec || l.dirty {
		q.dropRecord(ctx, l.seq)
	}
	return nil
}

// recordBytes and parseRecord are the bucket's encoding of a record.
func recordBytes(r *record) []byte {
	b, _ := json.Marshal(r)
	return b
}

func parseRecord(b []byte) record {
	var r record
	_ = json.Unmarshal(b, &r)
	return r
}

// StartSettle implements engines.GroupSettler: an Ack is published at
// once and Wait confirms it with one round trip shared by every ack
// waiting at the time (the server has received it, so a crash of this
// process can no longer undo it): the queue's next fetch when it has
// room for one (the batch it brings waits for the next Receive), else a
// PING. Other verdicts are settled before it returns.
func (q *Queue) StartSettle(ctx context.Context, d *engines.Delivery, s engines.Settlement) (engines.Pending, error) {
	l, ok := d.Ticket().Ref.(*lease)
	if s.Verdict != engines.Ack || !ok || l.q != q.queueState {
		return nil, d.Settle(ctx, s)
	}
	if err := l.take(); err != nil {
		return nil, err
	}
	if err := q.e.nc.Publish(l.msg.Reply(), ackAck); err != nil {
		return nil, fmt.Errorf("ack in %q: %w", q.name, err)
	}
	seq, conn := q.e.flush.note()
	return &ackPending{l: l, seq: seq, conn: conn}, nil
}

// startAck sends the ack of a lease already taken, with a reply subject
// on which the server confirms it applied it.
func (q *queueState) startAck(l *lease) (*ackPending, error) {
	p, err := q.e.acks.send(l.msg.Reply(), ackAck)
	if err != nil {
		return nil, fmt.Errorf("ack in %q: %w", q.name, err)
	}
	return &ackPending{l: l, p: p}, nil
}

// ackPending is an ack awaiting the server's confirmation (p) or a flush
// (p nil).
type ackPending struct {
	l    *lease
	p    *pendingAck
	seq  uint64 // the round trip that confirms it, when p is nil,
	conn uint64 // on this connection
}

// Wait implements engines.Pending.
func (a *ackPending) Wait(ctx context.Context) error {
	q := a.l.q
	var err error
	if a.p != nil {
		err = a.p.wait(ctx)
	} else {
		err = q.e.flush.wait(ctx, a.seq, a.conn, q.fetchAhead)
	}
	if err != nil {
		return fmt.Errorf("ack in %q: %w", q.name, err)
	}
	if a.l.hasRec {
		q.dropRecord(ctx, a.l.seq)
	}
	return nil
}
