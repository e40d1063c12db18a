package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	// A producer engine runs no batching loop: its acks are written at once.
	if s.Verdict == engines.Ack && left > int64(ackMargin) && !e.opts.Producer {
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
		// No message ID in the text: identical database failures must read
		// the same so the runtime's log limiter can fold them together (the
		// runtime logs the ID as a field).
		return fmt.Errorf("postgres: %s: %w", op, err)
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
	err := retrySafe(func() error {
		return e.pool.QueryRow(ctx, e.sql.settle, l.seq, token, int32(s.Verdict), delay, s.Reason).Scan(&lost, &woke)
	})
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
	var tag pgconn.CommandTag
	err = retrySafe(func() (err error) {
		tag, err = e.pool.Exec(ctx, e.sql.extend, l.seq, int64(t.Token), micros(by))
		return err
	})
	if err != nil {
		l.state.Store(leaseHeld)
		if e.closed.Load() {
			return time.Time{}, fmt.Errorf("postgres: extend: %w", engines.ErrClosed)
		}
		return time.Time{}, fmt.Errorf("postgres: extend: %w", err)
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
}

// acker holds batched acks until they are written, by whichever comes
// first: the next Receive of any queue of this engine, which sends them
// ahead of its lease statement in the same transaction (one commit, one
// fsync, for both), or the acker's own goroutine after ackLinger, for a
// consumer that has stopped receiving.
type acker struct {
	e    *Engine
	kick chan struct{}
	log  *rateLog

	mu      sync.Mutex
	pending []ackReq
	writing int           // batches taken and not yet finished
	changed chan struct{} // closed and replaced whenever a batch finishes
}

const (
	// ackChunk bounds one statement's arrays.
	ackChunk = 2000
	// ackLinger is how long an ack may wait for a Receive to carry it.
	ackLinger = 5 * time.Millisecond
)

func newAcker(e *Engine) *acker {
	return &acker{
		e:       e,
		kick:    make(chan struct{}, 1),
		log:     newRateLog(e.log, "writing acks failed; retrying (acked messages whose lease runs out first are redelivered)"),
		changed: make(chan struct{}),
	}
}

func (a *acker) add(r ackReq) {
	a.mu.Lock()
	a.pending = append(a.pending, r)
	first := len(a.pending) == 1
	a.mu.Unlock()
	if first {
		a.signal()
	}
}

func (a *acker) signal() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// take removes up to ackChunk pending acks for the caller to write; the
// caller must finish them.
func (a *acker) take() []ackReq {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := min(len(a.pending), ackChunk)
	if n == 0 {
		return nil
	}
	batch := slices.Clone(a.pending[:n])
	a.pending = append(a.pending[:0], a.pending[n:]...)
	a.writing++
	return batch
}

// finish records the outcome of writing a taken batch. A failed batch goes
// back, less the acks whose lease ran out meanwhile: the database hands
// their messages out again anyway.
func (a *acker) finish(batch []ackReq, err error) {
	e := a.e
	if err == nil {
		a.log.ok()
		var last int32
		for _, r := range batch {
			// In an ordered queue an ack frees the key for its next message.
			if r.ordered && r.queue != last {
				e.wake(r.queue)
				last = r.queue
			}
		}
	}
	a.mu.Lock()
	if err != nil {
		now := e.now()
		keep := batch[:0]
		for _, r := range batch {
			if r.deadline > now {
				keep = append(keep, r)
			}
		}
		a.pending = append(keep, a.pending...)
	}
	a.writing--
	close(a.changed)
	a.changed = make(chan struct{})
	more := len(a.pending) > 0
	a.mu.Unlock()
	// A write cut by Close, or a final write out of time, is no failure
	// to log: the acks are left to the next process or to lease expiry.
	if err != nil && !e.closed.Load() && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		a.log.fail(err)
	}
	if more {
		a.signal()
	}
}

func (a *acker) run() {
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-a.kick:
		case <-a.e.ctx.Done():
			// Last chance for acks already returned: write them within a
			// few seconds or leave them to lease expiry.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			for batch := a.take(); batch != nil; batch = a.take() {
				err := a.write(ctx, batch, false)
				a.finish(batch, err)
				if err != nil {
					break
				}
			}
			cancel()
			return
		}
		// Give a Receive the chance to carry them; then write what is left.
		linger.Reset(ackLinger + backoff)
		select {
		case <-linger.C:
		case <-a.e.ctx.Done():
			linger.Stop()
			a.signal() // handled at the top
			continue
		}
		for batch := a.take(); batch != nil; batch = a.take() {
			err := a.write(a.e.ctx, batch, false)
			a.finish(batch, err)
			if err != nil {
				backoff = min(max(backoff*2, 50*time.Millisecond), 5*time.Second)
				break
			}
			backoff = 0
		}
	}
}

// ackStatements queues the statements that write batch onto b.
func (a *acker) queue(b *pgx.Batch, batch []ackReq) (statements int) {
	var plain, ordered [2][]int64
	for _, r := range batch {
		if r.ordered {
			ordered[0], ordered[1] = append(ordered[0], r.seq), append(ordered[1], r.token)
		} else {
			plain[0], plain[1] = append(plain[0], r.seq), append(plain[1], r.token)
		}
	}
	// Most acks are one statement; those of ordered queues also hand each
	// key to its next message, which takes the key's lock.
	if len(plain[0]) > 0 {
		b.Queue(a.e.sql.ack, plain[0], plain[1])
		statements++
	}
	if len(ordered[0]) > 0 {
		b.Queue(a.e.sql.ackOrdered, ordered[0], ordered[1])
		statements++
	}
	return statements
}

// results reads the acked counts of the statements queue added.
func (a *acker) results(br pgx.BatchResults, statements int) (int64, error) {
	var total int64
	for range statements {
		var k int64
		if err := br.QueryRow().Scan(&k); err != nil {
			return 0, err
		}
		total += k
	}
	return total, nil
}

// write deletes the acked messages in one transaction. For a single
// synchronous ack (single) a message that was not deleted means the lease
// was lost.
func (a *acker) write(ctx context.Context, batch []ackReq, single bool) error {
	var deleted int64
	err := retrySafe(func() error {
		b := &pgx.Batch{}
		n := a.queue(b, batch)
		br := a.e.pool.SendBatch(ctx, b)
		var err error
		deleted, err = a.results(br, n)
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return err
	}
	if single && deleted == 0 {
		return engines.ErrLeaseLost
	}
	if single {
		a.finishSingle(batch)
	}
	return nil
}

// finishSingle wakes what a synchronous ordered ack freed.
func (a *acker) finishSingle(batch []ackReq) {
	for _, r := range batch {
		if r.ordered {
			a.e.wake(r.queue)
		}
	}
}

// sync writes every pending ack and waits for those others are writing, so
// that an Ack which returned before the call is in the database after it.
func (a *acker) sync(ctx context.Context) error {
	for batch := a.take(); batch != nil; batch = a.take() {
		err := a.write(ctx, batch, false)
		a.finish(batch, err)
		if err != nil {
			return err
		}
	}
	for {
		a.mu.Lock()
		if a.writing == 0 && len(a.pending) == 0 {
			a.mu.Unlock()
			return nil
		}
		ch := a.changed
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

// retrySafe runs f again, once, when it failed before anything reached the
// server (pgconn.SafeToRetry): typically a pooled connection that died with
// a database restart, which the pool replaces on the second try.
func retrySafe(f func() error) error {
	err := f()
	if err != nil && pgconn.SafeToRetry(err) {
		err = f()
	}
	return err
}
