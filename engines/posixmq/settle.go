//go:build linux

package posixmq

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
)

// Settle implements engines.Settler. Every verdict is applied in memory:
// a redelivery never goes back through the kernel, so it cannot block on a
// full queue and keeps its attempt count.
func (q *queue) Settle(ctx context.Context, t engines.Ticket, s engines.Settlement) error {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return fmt.Errorf("posixmq: %s on %q: foreign ticket: %w", s.Verdict, q.name, engines.ErrNotLeased)
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return q.errClosed(s.Verdict.String() + " on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		q.mu.Unlock()
		return fmt.Errorf("posixmq: %s on %q: %w", s.Verdict, q.name, engines.ErrLeaseLost)
	}
	out, err := q.policy.Settle(&r.Lease, s, &q.st)
	if err != nil {
		q.mu.Unlock()
		return fmt.Errorf("posixmq: settle on %q: %w", q.name, err)
	}
	q.leases.Remove(int(r.idx))
	if out.Action == lease.Drop {
		q.release(r)
		q.mu.Unlock()
		return nil
	}
	q.apply(r, out, q.e.now())
	dead := q.takeDead()
	q.mu.Unlock()
	if dead != nil {
		q.e.flushDead(dead)
	}
	return nil
}

// apply carries out a lease transition's outcome for r, which is out of
// the lease heap.
func (q *queue) apply(r *record, out lease.Outcome, now int64) {
	switch out.Action {
	case lease.Drop:
		q.release(r)
	case lease.Retry:
		q.redeliver(r, out.Delay, now)
	case lease.Dead:
		q.deadLetterRecord(r, out.Reason)
	}
}

// redeliver makes r visible to this process's receivers after delay.
func (q *queue) redeliver(r *record, delay time.Duration, now int64) {
	if delay <= 0 {
		q.makeReady(r)
		return
	}
	r.state = stateDelayed
	r.due = lease.After(now, delay)
	q.delayed.Push(r, &r.idx, r.dueKey())
	q.armTimer(now)
}

// Extend implements engines.Settler: the lease now ends by from now, which
// may also shorten it.
func (q *queue) Extend(ctx context.Context, t engines.Ticket, by time.Duration) (time.Time, error) {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return time.Time{}, fmt.Errorf("posixmq: extend on %q: foreign ticket: %w", q.name, engines.ErrNotLeased)
	}
	if by <= 0 {
		return time.Time{}, fmt.Errorf("posixmq: extend on %q by %v: must be positive: %w", q.name, by, engines.ErrInvalid)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return time.Time{}, q.errClosed("extend on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		return time.Time{}, fmt.Errorf("posixmq: extend on %q: %w", q.name, engines.ErrLeaseLost)
	}
	now := q.e.now()
	r.due = lease.After(now, by)
	q.leases.Fix(int(r.idx), r.dueKey())
	q.armTimer(now)
	return q.e.wall(r.due), nil
}

// deadLetterRecord counts r as dead-lettered, queues it for the dead-letter
// queue if there is one, and forgets it.
func (q *queue) deadLetterRecord(r *record, reason string) {
	q.st.DeadLetteredTotal++
	if dl := q.policy.DeadLetter; dl != "" {
		q.dead = append(q.dead, deadMsg{target: dl, msg: lease.DeadLetter(r.msg, q.name, reason), enq: r.enq, kprio: r.kprio, attempt: r.Attempt, failures: r.Failures})
	}
	q.release(r)
}

func (q *queue) takeDead() []deadMsg {
	if len(q.dead) == 0 {
		return nil
	}
	d := q.dead
	q.dead = nil
	return d
}

// flushDead writes dead letters into their queues (through the outbox, so a
// full dead-letter queue does not block the caller), opening a queue that
// was never opened. Called with no queue lock held.
func (e *Engine) flushDead(dead []deadMsg) {
	for target, batch := range lease.Groups(dead, func(d *deadMsg) string { return d.target }) {
		dlq, err := e.deadLetterQueue(target)
		if err != nil {
			e.limit.log(e.log, zapcore.ErrorLevel, "dead letters dropped: their queue cannot be opened",
				zap.String("dead_letter_queue", target), zap.Int("messages", len(batch)), zap.Error(err))
			continue
		}
		dlq.admitDead(batch)
		dlq.pump()
	}
}

func (e *Engine) deadLetterQueue(name string) (*queue, error) {
	kname, err := e.KernelName(name)
	if err != nil {
		return nil, err
	}
	return e.queue(name, kname)
}

// admitDead puts dead letters into the outbox, up to the backlog a full
// dead-letter queue may keep in memory; beyond it they are dropped, loudly.
func (q *queue) admitDead(batch []deadMsg) {
	limit := max(q.e.opts.Spill, minDeadLetterBacklog)
	dropped := 0
	q.mu.Lock()
	for i := range batch {
		if q.closed || q.outbox.Len() >= limit {
			dropped++
			continue
		}
		r := q.newRecord()
		r.msg = batch[i].msg
		q.seq++
		r.seq = q.seq
		r.enq, r.expire, r.kprio = batch[i].enq, 0, batch[i].kprio
		r.Attempt, r.Failures = batch[i].attempt, batch[i].failures
		r.framed = true
		q.toOutbox(r)
		q.enqTotal.Add(1)
	}
	q.mu.Unlock()
	if dropped > 0 {
		q.errorf("dead letters dropped: the dead-letter queue is full and its in-memory backlog too",
			zap.Int("dropped", dropped), zap.Int("backlog_limit", limit))
	}
}

func (q *queue) stats() (engines.Stats, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return engines.Stats{}, q.errClosed("stats of")
	}
	now := q.e.now()
	q.advance(now)
	q.armTimer(now)
	s := q.st
	s.Ready = int64(q.ready.Len() + q.outbox.Len())
	s.Delayed = int64(q.delayed.Len())
	s.InFlight = int64(q.leases.Len())
	dead := q.takeDead()
	q.mu.Unlock()
	if dead != nil {
		q.e.flushDead(dead)
	}
	if q.outLen.Load() > 0 {
		q.pump() // advance may have made delayed messages due
	}
	s.EnqueuedTotal = q.enqTotal.Load()
	q.fdMu.RLock()
	defer q.fdMu.RUnlock()
	if q.fdClosed {
		return engines.Stats{}, q.errClosed("stats of")
	}
	a, err := q.mq.Attr()
	if err != nil {
		return engines.Stats{}, fmt.Errorf("posixmq: stats of %q: %w", q.name, err)
	}
	s.Ready += int64(a.CurMsgs)
	return s, nil
}
