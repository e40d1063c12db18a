package postgres

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// lease is this process's record of one delivery's lease. The database is
// the authority (a settle matches seq, token, state and expiry there); the
// local record lets a second settle of the same delivery fail without a
// round trip, and tells an Ack whether it can be batched.
type lease struct {
	e        *Engine
	seq      int64
	queue    int32
	ordered  bool
	deadline atomic.Int64 // engine clock; never later than the database's expiry
	state    atomic.Int32
}

const (
	leaseHeld int32 = iota
	leaseBusy       // a settle or extend is talking to the database
	leaseDone
)

// ackMargin is how much lease an Ack must have left to be batched: it
// returns at once and the acker deletes the message within milliseconds,
// far inside the margin. With less left the Ack is written before it
// returns, so an ack that could land after the expiry reports ErrLeaseLost
// instead of succeeding in name only.
const ackMargin = 2 * time.Second

var _ engines.Settler = (*Engine)(nil)

func (e *Engine) leaseOf(t engines.Ticket, op string) (*lease, error) {
	l, ok := t.Ref.(*lease)
	if !ok || l == nil || l.e != e {
		return nil, fmt.Errorf("postgres: %s: foreign ticket: %w", op, engines.ErrNotLeased)
	}
	if e.closed.Load() {
		return nil, fmt.Errorf("postgres: %s: %w", op, engines.ErrClosed)
	}
	return l, nil
}

// Settle implements engines.Settler.
//
// An Ack with time to spare on its lease is batched (the River "batch
// completer" idea): it is recorded, returns, and a background writer
// deletes every pending ack in one statement, while the next batch is
// already being handled. Acks therefore cost the database one statement
// per batch rather than one transaction (and fsync) per message. The
// price is the usual at-least-once one: if this process dies in the
// milliseconds before the write, the message is redelivered after its
// lease. Nack, Requeue and DeadLetter are rarer and written at once.
func (e *Engine) Settle(ctx context.Context, t engines.Ticket, s engines.Settlement) error {
	op := s.Verdict.String()
	l, err := e.leaseOf(t, op)
	if err != nil {
		return err
	}
	switch s.Verdict {
	case engines.Ack, engines.Nack, engines.Requeue, engines.DeadLetter:
	default:
		return fmt.Errorf("postgres: settle: unknown verdict %d: %w", s.Verdict, engines.ErrInvalid)
	}
	if !l.state.CompareAndSwap(leaseHeld, leaseBusy) {
		return fmt.Errorf("postgres: %s message %d: %w", op, l.seq, engines.ErrLeaseLost)
	}
	now := e.now()
	left := l.deadline.Load() - now
	if left <= 0 {
		l.state.Store(leaseDone)
		return fmt.Errorf("postgres: %s message %d: lease expired: %w", op, l.seq, engines.ErrLeaseLost)
	}
	token := int64(t.Token)
	if s.Verdict == engines.Ack && left > int64(ackMargin) {
		e.acks.add(ackReq{seq: l.seq, token: token, queue: l.queue, ordered: l.ordered, deadline: l.deadline.Load()})
		l.state.Store(leaseDone)
		return nil
	}
	if s.Verdict == engines.Ack {
		err = e.acks.write(ctx, []ackReq{{seq: l.seq, token: token, queue: l.queue, ordered: l.ordered}}, true)
	} else {
		err = e.settleNow(ctx, l, token, s, now)
	}
	if err != nil {
		if isLeaseLost(err) {
			l.state.Store(leaseDone)
		} else {
			l.state.Store(leaseHeld) // nothing changed; the caller may retry
		}
		if e.closed.Load() {
			return fmt.Errorf("postgres: %s: %w", op, engines.ErrClosed)
		}
		return fmt.Errorf("postgres: %s message %d: %w", op, l.seq, err)
	}
	l.state.Store(leaseDone)
	return nil
}

// settleNow writes a nack, requeue or dead-letter.
func (e *Engine) settleNow(ctx context.Context, l *lease, token int64, s engines.Settlement, now int64) error {
	delay := micros(max(s.Delay, 0))
	var (
		lost bool
		woke []int32
	)
	err := e.pool.QueryRow(ctx, e.sql.settle,
		l.seq, token, int32(s.Verdict), delay, s.Reason).Scan(&lost, &woke)
	if err != nil {
		return err
	}
	if lost {
		return engines.ErrLeaseLost
	}
	for _, id := range woke {
		e.wake(id)
	}
	if delay > 0 && (s.Verdict == engines.Nack || s.Verdict == engines.Requeue) {
		e.reaper.kick(saturatingAdd(now, s.Delay))
	}
	return nil
}

// Extend implements engines.Settler: the lease ends by from now.
func (e *Engine) Extend(ctx context.Context, t engines.Ticket, by time.Duration) (time.Time, error) {
	l, err := e.leaseOf(t, "extend")
	if err != nil {
		return time.Time{}, err
	}
	if by <= 0 {
		return time.Time{}, fmt.Errorf("postgres: extend by %v: must be positive: %w", by, engines.ErrInvalid)
	}
	if !l.state.CompareAndSwap(leaseHeld, leaseBusy) {
		return time.Time{}, fmt.Errorf("postgres: extend message %d: %w", l.seq, engines.ErrLeaseLost)
	}
	start := e.now()
	if start >= l.deadline.Load() {
		l.state.Store(leaseDone)
		return time.Time{}, fmt.Errorf("postgres: extend message %d: lease expired: %w", l.seq, engines.ErrLeaseLost)
	}
	tag, err := e.pool.Exec(ctx, e.sql.extend, l.seq, int64(t.Token), micros(by))
	if err != nil {
		l.state.Store(leaseHeld)
		return time.Time{}, e.opErr("extend", fmt.Sprint(l.seq), err)
	}
	if tag.RowsAffected() == 0 {
		l.state.Store(leaseDone)
		return time.Time{}, fmt.Errorf("postgres: extend message %d: %w", l.seq, engines.ErrLeaseLost)
	}
	dl := saturatingAdd(start, by)
	l.deadline.Store(dl)
	l.state.Store(leaseHeld)
	e.reaper.kick(dl)
	return e.wall(dl), nil
}

// ackReq is one ack waiting to be written.
type ackReq struct {
	seq, token int64
	queue      int32
	ordered    bool
	deadline   int64
	gen        uint64
}

// acker writes batched acks. Acks queue up while a write is in flight, so
// the batch size follows the load with no timer: one ack alone is written
// at once, a thousand arriving during one write go in the next.
type acker struct {
	e    *Engine
	kick chan struct{}
	log  *rateLog

	mu      sync.Mutex
	pending []ackReq
	spare   []ackReq
	added   uint64        // generation of the newest ack added
	done    uint64        // every ack up to this generation is written (or moot)
	flushed chan struct{} // closed and replaced whenever done advances
}

// ackChunk bounds one statement's arrays.
const ackChunk = 2000

func newAcker(e *Engine) *acker {
	return &acker{
		e:       e,
		kick:    make(chan struct{}, 1),
		log:     newRateLog(e.log, "writing acks failed; retrying (acked messages whose lease runs out first are redelivered)"),
		flushed: make(chan struct{}),
	}
}

func (a *acker) add(r ackReq) {
	a.mu.Lock()
	a.added++
	r.gen = a.added
	a.pending = append(a.pending, r)
	a.mu.Unlock()
	a.signal()
}

func (a *acker) signal() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *acker) run() {
	for {
		select {
		case <-a.kick:
			a.flush(a.e.ctx)
		case <-a.e.ctx.Done():
			// Last chance for acks already returned: write them within a
			// few seconds or leave them to lease expiry.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			a.flush(ctx)
			cancel()
			return
		}
	}
}

// flush writes everything pending, retrying with backoff on errors until
// ctx ends; acks whose lease ran out meanwhile are dropped, since the
// database will hand their messages out again anyway.
func (a *acker) flush(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		a.mu.Lock()
		batch := a.pending
		a.pending = a.spare[:0]
		a.spare = nil
		a.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		last := batch[len(batch)-1].gen
		err := a.write(ctx, batch, false)
		if err != nil {
			a.log.fail(err)
			now := a.e.now()
			keep := batch[:0]
			for _, r := range batch {
				if r.deadline > now {
					keep = append(keep, r)
				}
			}
			a.mu.Lock()
			a.pending = append(keep, a.pending...)
			if len(keep) == 0 {
				a.resolved(last)
			}
			a.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(backoff*2, 50*time.Millisecond), 5*time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		a.log.ok()
		backoff = 0
		a.mu.Lock()
		a.resolved(last)
		if a.spare == nil {
			a.spare = batch[:0]
		}
		a.mu.Unlock()
	}
}

// resolved records that every ack up to gen is settled; a.mu is held.
func (a *acker) resolved(gen uint64) {
	if gen > a.done {
		a.done = gen
		close(a.flushed)
		a.flushed = make(chan struct{})
	}
}

// write deletes the acked messages. For a single synchronous ack (single)
// a message that was not deleted means the lease was lost.
func (a *acker) write(ctx context.Context, batch []ackReq, single bool) error {
	e := a.e
	for len(batch) > 0 {
		n := min(len(batch), ackChunk)
		chunk := batch[:n]
		batch = batch[n:]
		// Most acks are one statement; those of ordered queues also hand
		// each key to its next message, which takes the key's lock.
		var plain, ordered [2][]int64
		for _, r := range chunk {
			if r.ordered {
				ordered[0], ordered[1] = append(ordered[0], r.seq), append(ordered[1], r.token)
			} else {
				plain[0], plain[1] = append(plain[0], r.seq), append(plain[1], r.token)
			}
		}
		var deleted int64
		if len(plain[0]) > 0 {
			if err := e.pool.QueryRow(ctx, e.sql.ack, plain[0], plain[1]).Scan(&deleted); err != nil {
				return err
			}
		}
		if len(ordered[0]) > 0 {
			var k int64
			if err := e.pool.QueryRow(ctx, e.sql.ackOrdered, ordered[0], ordered[1]).Scan(&k); err != nil {
				return err
			}
			deleted += k
			var last int32
			for _, r := range chunk {
				if r.ordered && r.queue != last {
					e.wake(r.queue)
					last = r.queue
				}
			}
		}
		if single && deleted == 0 {
			return engines.ErrLeaseLost
		}
	}
	return nil
}

// sync waits until every ack added before the call is written.
func (a *acker) sync(ctx context.Context) error {
	a.mu.Lock()
	target := a.added
	a.mu.Unlock()
	for {
		a.mu.Lock()
		if a.done >= target {
			a.mu.Unlock()
			return nil
		}
		ch := a.flushed
		a.mu.Unlock()
		a.signal()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-a.e.ctx.Done():
			return engines.ErrClosed
		}
	}
}

// rateLog logs a failing background activity at most once per interval,
// with how many failures it left out, and once when it recovers: a
// database outage must not flood the log.
type rateLog struct {
	log   *zap.Logger
	msg   string
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
	failing    bool
}

func newRateLog(log *zap.Logger, msg string) *rateLog {
	return &rateLog{log: log, msg: msg, every: 10 * time.Second}
}

func (r *rateLog) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing = true
	if now := time.Now(); r.last.IsZero() || now.Sub(r.last) >= r.every {
		r.log.Warn(r.msg, zap.Error(err), zap.Int("suppressed", r.suppressed))
		r.last, r.suppressed = now, 0
		return
	}
	r.suppressed++
}

func (r *rateLog) ok() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		r.log.Info("recovered: "+r.msg, zap.Int("suppressed", r.suppressed))
		r.failing, r.suppressed, r.last = false, 0, time.Time{}
	}
}
