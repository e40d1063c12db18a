package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
	"github.com/qrun-dev/qrun/engines/internal/pagesel"
)

const (
	// idBlock is how many IDs a queue takes from the engine counter at once,
	// so enqueues on different queues do not contend on one atomic.
	idBlock = 1024
	// maxFreeRecords bounds the recycled-record list so a drained backlog
	// does not pin its peak memory.
	maxFreeRecords = 4096
	// maxFreeKeys bounds the recycled ordering-key states likewise.
	maxFreeKeys = 1024
)

// queue is the shared state behind every handle with the same name. One
// mutex guards it all: every operation is short and batch-shaped, so a
// single uncontended lock per batch beats finer locking.
type queue struct {
	e    *Engine
	name string

	mu     sync.Mutex
	closed bool

	// Settings, from the most recent Open that set any (see Engine.Open).
	policy  lease.Policy
	ordered bool

	seq    uint64 // enqueue counter for FIFO tie-breaks
	idNext uint64 // next ID of the block reserved from the engine
	idEnd  uint64
	ids    idArena

	ready   readySet
	nReady  int     // records in ready
	nParked int     // records waiting behind an ordering key
	delayed dueHeap // by visible time
	leases  dueHeap // by lease deadline

	keys     map[string]*keyState
	freeKeys []*keyState
	free     []*record

	// bySeq lists the records in enqueue (seq) order, for PeekPage to
	// start a page where its cursor points (peekindex.go).
	bySeq pagesel.Log[*record]

	dedup      map[string]dedupEntry
	dedupMarks []dedupMark
	dedupHead  int

	// waitCh is closed, and cleared, whenever a message may have become
	// ready; receivers that found nothing wait on it. It is created only
	// when someone waits, so a busy queue allocates no channels.
	waitCh chan struct{}
	// waiters counts the takes handed waitCh since it was made: the
	// receivers blocked on it, or about to be, which is the event a test
	// waits for before it wakes them (export_test.go, Waiting).
	waiters int

	// One timer per queue, armed for the earliest delayed message or lease
	// deadline.
	timer lease.Timer

	dead []deadMsg // dead letters to move once the lock is released
	st   engines.Stats
}

func newQueue(e *Engine, name string) *queue {
	q := &queue{e: e, name: name, policy: lease.DefaultPolicy()}
	q.timer = lease.NewTimer(q.onTimer)
	return q
}

func (q *queue) configure(spec engines.QueueSpec) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("memory: open %q: %w", q.name, engines.ErrClosed)
	}
	if spec == (engines.QueueSpec{Name: spec.Name}) {
		return nil
	}
	if spec.Ordered != q.ordered && q.depth() > 0 {
		return fmt.Errorf("memory: open %q: cannot change Ordered to %v while the queue holds messages: %w", q.name, spec.Ordered, engines.ErrInvalid)
	}
	q.policy.Apply(spec)
	q.ordered = spec.Ordered
	return nil
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.timer.Stop()
	q.wake()
	q.mu.Unlock()
}

func (q *queue) depth() int {
	return q.nReady + q.nParked + q.delayed.Len() + q.leases.Len()
}

func (q *queue) errClosed(op string) error {
	return fmt.Errorf("memory: %s %q: %w", op, q.name, engines.ErrClosed)
}

func (q *queue) enqueue(msgs []engines.Message) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return q.errClosed("enqueue to")
	}
	q.enqueueLocked(msgs, q.e.now())
	q.mu.Unlock()
	return nil
}

// enqueueLocked stores msgs; q.mu is held.
func (q *queue) enqueueLocked(msgs []engines.Message, now int64) {
	for i := range msgs {
		q.enqueueOne(&msgs[i], now)
	}
}

// enqueueOne stores m, assigning its ID; q.mu is held.
func (q *queue) enqueueOne(m *engines.Message, now int64) {
	if m.DedupID != "" && q.duplicate(m, now) {
		return
	}
	if m.ID == "" {
		m.ID = q.nextID()
	}
	if m.DedupID != "" {
		q.remember(m.DedupID, m.ID, now)
	}
	q.insert(m, now, now)
}

func (q *queue) nextID() string {
	if q.idNext == q.idEnd {
		q.idEnd = q.e.ids.Add(idBlock)
		q.idNext = q.idEnd - idBlock
	}
	q.idNext++
	return q.ids.format(q.idNext)
}

// insert stores a new message; enq is its original enqueue time, which a
// dead-lettered message carries over from its source queue.
func (q *queue) insert(m *engines.Message, enq, now int64) *record {
	var r *record
	if n := len(q.free); n > 0 {
		r = q.free[n-1]
		q.free[n-1] = nil
		q.free = q.free[:n-1]
	} else {
		r = new(record)
	}
	r.msg = *m
	q.seq++
	r.seq = q.seq
	q.bySeq.Add(r.seq, r)
	r.enq = enq
	r.Attempt, r.Failures = 0, 0
	r.due = lease.After(now, m.Delay)
	r.expire = 0
	if m.TTL > 0 {
		r.expire = lease.After(r.due, m.TTL)
	}
	q.st.EnqueuedTotal++
	q.admit(r, now)
	q.bySeq.Trim(q.depth(), live)
	return r
}

// admit places a new record: behind its ordering key if the key is busy,
// otherwise ready or delayed according to r.due.
func (q *queue) admit(r *record, now int64) {
	if q.ordered && r.msg.OrderingKey != "" {
		ks := q.keys[r.msg.OrderingKey]
		if ks == nil {
			ks = q.newKeyState(r.msg.OrderingKey)
		}
		r.ks = ks
		if ks.active != nil {
			r.state = stateParked
			ks.parked.push(r)
			q.nParked++
			return
		}
		ks.active = r
	}
	q.schedule(r, r.due, now)
}

func (q *queue) newKeyState(key string) *keyState {
	var ks *keyState
	if n := len(q.freeKeys); n > 0 {
		ks = q.freeKeys[n-1]
		q.freeKeys = q.freeKeys[:n-1]
	} else {
		ks = new(keyState)
	}
	ks.key = key
	if q.keys == nil {
		q.keys = make(map[string]*keyState)
	}
	q.keys[key] = ks
	return ks
}

// schedule makes r visible at the given time: ready now, or delayed.
func (q *queue) schedule(r *record, visible, now int64) {
	if visible > now {
		r.state = stateDelayed
		r.due = visible
		q.delayed.Push(r, &r.idx, r.dueKey())
		q.arm(visible, now)
		return
	}
	q.makeReady(r)
}

func (q *queue) makeReady(r *record) {
	r.state = stateReady
	q.ready.push(r)
	q.nReady++
	q.wake()
}

// wake releases every blocked receiver. Broadcasting is simpler than handing
// messages to chosen waiters and cannot strand a message when a chosen
// waiter's context ends; the losers just wait again.
func (q *queue) wake() {
	if q.waitCh != nil {
		close(q.waitCh)
		q.waitCh = nil
		q.waiters = 0
	}
}

// release forgets a record that left the queue for good (acked, expired,
// dead-lettered), hands its ordering key to the next message and recycles it.
// now may be 0 when the caller has not read the clock: an Ack, the commonest
// call, then reads it only if a parked message needs scheduling.
func (q *queue) release(r *record, now int64) {
	if ks := r.ks; ks != nil {
		r.ks = nil
		if ks.parked.n > 0 {
			next := ks.parked.pop()
			q.nParked--
			ks.active = next
			if now == 0 {
				now = q.e.now()
			}
			q.schedule(next, next.due, now)
		} else {
			ks.active = nil
			delete(q.keys, ks.key)
			ks.key = ""
			if len(q.freeKeys) < maxFreeKeys {
				q.freeKeys = append(q.freeKeys, ks)
			}
		}
	}
	r.msg = engines.Message{} // drop references to the caller's body and attributes
	r.mstate = nil            // per-message state goes with the message
	r.state = stateFree
	if len(q.free) < maxFreeRecords {
		q.free = append(q.free, r)
	}
}

// duplicate reports whether m repeats a DedupID still inside its window,
// counting it and telling the caller the original's ID.
func (q *queue) duplicate(m *engines.Message, now int64) bool {
	q.pruneDedup(now)
	ent, ok := q.dedup[m.DedupID]
	if !ok {
		return false
	}
	q.st.DuplicateTotal++
	if m.ID == "" {
		m.ID = ent.id
	}
	return true
}

func (q *queue) remember(key, id string, now int64) {
	if q.dedup == nil {
		q.dedup = make(map[string]dedupEntry)
	}
	exp := now + int64(q.e.opts.DedupWindow)
	q.dedup[key] = dedupEntry{id: id, expire: exp}
	q.dedupMarks = append(q.dedupMarks, dedupMark{key: key, expire: exp})
}

func (q *queue) pruneDedup(now int64) {
	for q.dedupHead < len(q.dedupMarks) {
		mk := q.dedupMarks[q.dedupHead]
		if mk.expire > now {
			break
		}
		if ent, ok := q.dedup[mk.key]; ok && ent.expire == mk.expire {
			delete(q.dedup, mk.key)
		}
		q.dedupMarks[q.dedupHead] = dedupMark{}
		q.dedupHead++
	}
	// Compact once the consumed prefix dominates, keeping pruning amortised O(1).
	if q.dedupHead > 64 && q.dedupHead*2 > len(q.dedupMarks) {
		n := copy(q.dedupMarks, q.dedupMarks[q.dedupHead:])
		clear(q.dedupMarks[n:])
		q.dedupMarks = q.dedupMarks[:n]
		q.dedupHead = 0
	}
}

// receive leases ready messages into buf. When there are none it returns
// the channel to wait on, created under the lock so no wake-up is missed.
func (q *queue) receive(buf []engines.Delivery) (int, <-chan struct{}, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, nil, q.errClosed("receive from")
	}
	now := q.e.now()
	q.advance(now)
	n := 0
	var wait chan struct{}
	if !q.ready.empty() {
		n = q.lease(buf, now)
	}
	if n == 0 {
		if q.waitCh == nil {
			q.waitCh = make(chan struct{})
		}
		wait = q.waitCh
		q.waiters++
	}
	dead := q.takeDead()
	q.mu.Unlock()
	if dead != nil {
		q.flushDead(dead)
	}
	return n, wait, nil
}

func (q *queue) lease(buf []engines.Delivery, now int64) int {
	n := 0
	deadline := now + q.policy.VT
	leaseExpires := q.e.wall(deadline)
	for n < len(buf) {
		r := q.ready.pop()
		if r == nil {
			break
		}
		q.nReady--
		if r.expire != 0 {
			if now >= r.expire {
				q.st.ExpiredTotal++
				q.release(r, now)
				continue
			}
			r.expire = 0 // delivered in time: the TTL has done its job
		}
		tok := r.Grant()
		r.state = stateLeased
		r.due = deadline
		q.leases.Push(r, &r.idx, r.dueKey())
		// Bind first, then fill the fields in place: a Delivery is 256 bytes,
		// and building it as a value to assign costs several full copies.
		buf[n] = engines.NewDelivery(engines.Delivery{}, q, engines.Ticket{Ref: r, Token: tok})
		d := &buf[n]
		n++
		d.Message = r.msg
		d.Queue = q.name
		d.Attempt = int(r.Attempt)
		d.Failures = int(r.Failures)
		d.EnqueuedAt = q.e.wall(r.enq)
		d.LeaseExpires = leaseExpires
	}
	if r := q.leases.Peek(); r != nil {
		q.arm(r.due, now)
	}
	return n
}

// advance moves delayed messages that came due to ready and expires lapsed
// leases (see lease.Policy.Expire). The timer calls it, and so do Receive
// and Stats, so neither waits on timer latency.
func (q *queue) advance(now int64) {
	for r := q.delayed.Peek(); r != nil && r.due <= now; r = q.delayed.Peek() {
		q.makeReady(q.delayed.Pop())
	}
	for r := q.leases.Peek(); r != nil && r.due <= now; r = q.leases.Peek() {
		q.leases.Pop()
		q.apply(r, q.policy.Expire(&r.Lease, &q.st), now)
	}
}

// apply carries out a lease transition's outcome for r, which is out of
// the lease heap.
func (q *queue) apply(r *record, out lease.Outcome, now int64) {
	switch out.Action {
	case lease.Drop:
		q.release(r, now)
	case lease.Retry:
		q.schedule(r, lease.After(now, out.Delay), now)
	case lease.Dead:
		q.deadLetterRecord(r, now, out.Reason)
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
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.timer.Fired()
	now := q.e.now()
	q.advance(now)
	if r := q.delayed.Peek(); r != nil {
		q.arm(r.due, now)
	}
	if r := q.leases.Peek(); r != nil {
		q.arm(r.due, now)
	}
	dead := q.takeDead()
	q.mu.Unlock()
	if dead != nil {
		q.flushDead(dead)
	}
}

// deadLetterRecord counts r as dead-lettered, queues it for its dead-letter
// queue if the queue has one, and forgets it.
func (q *queue) deadLetterRecord(r *record, now int64, reason string) {
	q.st.DeadLetteredTotal++
	if dl := q.policy.DeadLetter; dl != "" {
		// It keeps its history: the attempts and failures it had here.
		q.dead = append(q.dead, deadMsg{target: dl, msg: lease.DeadLetter(r.msg, q.name, reason), enq: r.enq, attempt: r.Attempt, failures: r.Failures})
	}
	q.release(r, now)
}

func (q *queue) takeDead() []deadMsg {
	if len(q.dead) == 0 {
		return nil
	}
	d := q.dead
	q.dead = nil
	return d
}

// flushDead moves dead letters to their queues, creating a queue that was
// never opened. Called without q.mu held.
func (q *queue) flushDead(dead []deadMsg) {
	for target, batch := range lease.Groups(dead, func(d *deadMsg) string { return d.target }) {
		dlq, err := q.e.queue(target)
		if err != nil {
			return // engine closed: nothing left to deliver to
		}
		dlq.mu.Lock()
		if !dlq.closed {
			now := dlq.e.now()
			for i := range batch {
				r := dlq.insert(&batch[i].msg, batch[i].enq, now)
				r.Attempt, r.Failures = batch[i].attempt, batch[i].failures
			}
		}
		dlq.mu.Unlock()
	}
}

// Settle implements engines.Settler.
func (q *queue) Settle(ctx context.Context, t engines.Ticket, s engines.Settlement) error {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return fmt.Errorf("memory: %s on %q: foreign ticket: %w", s.Verdict, q.name, engines.ErrNotLeased)
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return q.errClosed(s.Verdict.String() + " on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		q.mu.Unlock()
		return fmt.Errorf("memory: %s on %q: %w", s.Verdict, q.name, engines.ErrLeaseLost)
	}
	out, err := q.policy.Settle(&r.Lease, s, &q.st)
	if err != nil {
		q.mu.Unlock()
		return fmt.Errorf("memory: settle on %q: %w", q.name, err)
	}
	q.leases.Remove(int(r.idx))
	if out.Action == lease.Drop {
		// The hot path: no clock read, no dead letters to flush.
		q.release(r, 0)
		q.mu.Unlock()
		return nil
	}
	q.apply(r, out, q.e.now())
	dead := q.takeDead()
	q.mu.Unlock()
	if dead != nil {
		q.flushDead(dead)
	}
	return nil
}

// Extend implements engines.Settler: the lease now ends by from now, which
// may also shorten it.
func (q *queue) Extend(ctx context.Context, t engines.Ticket, by time.Duration) (time.Time, error) {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return time.Time{}, fmt.Errorf("memory: extend on %q: foreign ticket: %w", q.name, engines.ErrNotLeased)
	}
	if by <= 0 {
		return time.Time{}, fmt.Errorf("memory: extend on %q by %v: must be positive: %w", q.name, by, engines.ErrInvalid)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return time.Time{}, q.errClosed("extend on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		return time.Time{}, fmt.Errorf("memory: extend on %q: %w", q.name, engines.ErrLeaseLost)
	}
	now := q.e.now()
	r.due = lease.After(now, by)
	q.leases.Fix(int(r.idx), r.dueKey())
	q.arm(r.due, now)
	return q.e.wall(r.due), nil
}

func (q *queue) stats() (engines.Stats, error) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return engines.Stats{}, q.errClosed("stats of")
	}
	q.advance(q.e.now())
	s := q.st
	s.Ready = int64(q.nReady + q.nParked)
	s.Delayed = int64(q.delayed.Len())
	s.InFlight = int64(q.leases.Len())
	dead := q.takeDead()
	q.mu.Unlock()
	if dead != nil {
		q.flushDead(dead)
	}
	return s, nil
}
