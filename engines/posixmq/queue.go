//go:build linux

package posixmq

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
	"github.com/qrun-dev/qrun/engines/posixmq/frame"
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

const (
	// idBlock is how many IDs a queue reserves from the engine counter at
	// once, so queues do not contend on one atomic.
	idBlock = 1024
	// maxFreeRecords bounds the recycled-record list.
	maxFreeRecords = 4096
)

// queue is the state shared by every handle on one kernel queue: one
// descriptor, and the messages this process holds in memory.
//
// Lock order: fdMu before mu. Nothing takes fdMu twice, because a pending
// Close (the writer) would deadlock it, and nothing waits under it: every
// system call made under it is non-blocking.
type queue struct {
	e     *Engine
	name  string // qrun name, as first opened; dead letters record it as their source
	kname string // kernel name

	mq   *mq.Queue // non-blocking descriptor
	file *os.File  // the same descriptor, registered with Go's poller; it owns the fd
	rc   syscall.RawConn

	maxMsg, msgSize int  // the kernel queue's actual attributes
	direct          bool // receive straight into body slabs (small message size)

	// fdMu is held shared around system calls on the descriptor and
	// exclusively to close it, so a number is never used after close.
	fdMu     sync.RWMutex
	fdClosed bool

	closing  atomic.Bool
	outLen   atomic.Int64 // len(outbox), read without mu on the enqueue fast path
	enqTotal atomic.Int64

	// armWrite asks the watcher to wait for the descriptor to become
	// writable; stop ends it.
	armWrite chan struct{}
	stop     chan struct{}
	watchers sync.WaitGroup // the write watcher
	// kicked ends the leading receiver's wait in the poller (see receive).
	kicked atomic.Bool

	mu     sync.Mutex
	closed bool

	policy lease.Policy // its DeadLetter is a qrun name

	seq    uint64
	idNext uint64
	idEnd  uint64
	ids    idArena

	ready   heap // redeliveries, by priority
	delayed heap // by visible time
	leases  heap // by lease deadline
	outbox  heap // bound for the kernel queue, by priority

	// waitCh is closed when a receiver may find something (a redelivery, a
	// kernel message, Close); roomCh when an enqueuer may find room.
	waitCh, roomCh chan struct{}
	leading        bool // a receiver waits in the poller
	pumping        bool
	// followers counts the receivers handed waitCh since it was made; with
	// leading, it is what a test waits for before it wakes them
	// (export_test.go, Waiting).
	followers int

	timer lease.Timer

	dead []deadMsg
	free []*record
	st   engines.Stats
}

// deadMsg is a message on its way to a dead-letter queue. Moves are
// collected under the source's lock and made after it is released, so two
// queues dead-lettering into each other cannot deadlock.
type deadMsg struct {
	target string
	msg    engines.Message
	enq    int64
	kprio  uint32
	// The dead letter's attempts and failures in its source queue, which
	// its envelope keeps.
	attempt, failures int32
}

// openQueue opens (creating if needed) the kernel queue kname and starts
// its write watcher.
func openQueue(e *Engine, name, kname string) (*queue, error) {
	mqq, created, err := openKernel(e, kname)
	if err != nil {
		return nil, fmt.Errorf("posixmq: open %q: %w", name, err)
	}
	if !created {
		if err := e.checkMismatch(name, mqq); err != nil {
			_ = mqq.Close()
			return nil, err
		}
	}
	// The descriptor is non-blocking, so os.NewFile registers it with the
	// poller; from here on the File owns it.
	file := os.NewFile(uintptr(mqq.Fd()), kname)
	rc, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("posixmq: open %q: %w", name, err)
	}
	q := &queue{
		e: e, name: name, kname: kname, mq: mqq, file: file, rc: rc,
		maxMsg: mqq.MaxMsg(), msgSize: mqq.MsgSize(), direct: mqq.MsgSize() <= slabSize/4,
		armWrite: make(chan struct{}, 1), stop: make(chan struct{}),
		policy: lease.DefaultPolicy(),
	}
	q.timer = lease.NewTimer(q.onTimer)
	q.watchers.Add(1)
	go q.watchWrite()
	return q, nil
}

// openKernel creates the queue with the engine's attributes, or opens it as
// it is if it exists, and says which happened.
func openKernel(e *Engine, kname string) (*mq.Queue, bool, error) {
	attr := &mq.Attr{MaxMsg: e.maxMsg, MsgSize: e.msgSize}
	perm := uint32(e.opts.Mode.Perm())
	for try := 0; ; try++ {
		q, err := mq.Open(kname, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CREAT|unix.O_EXCL, perm, attr)
		if err == nil {
			return q, true, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, false, err
		}
		q, err = mq.Open(kname, unix.O_RDWR|unix.O_NONBLOCK, 0, nil)
		// Unlinked between the two calls: try creating again, a few times.
		if err == nil || !errors.Is(err, unix.ENOENT) || try == 3 {
			return q, false, err
		}
	}
}

// checkMismatch compares an existing queue with the configured attributes.
func (e *Engine) checkMismatch(name string, q *mq.Queue) error {
	var diffs []string
	if e.opts.MaxMessages != 0 && q.MaxMsg() != e.opts.MaxMessages {
		diffs = append(diffs, fmt.Sprintf("max_messages %d (configured %d)", q.MaxMsg(), e.opts.MaxMessages))
	}
	if e.opts.MessageSize != 0 && q.MsgSize() != e.opts.MessageSize {
		diffs = append(diffs, fmt.Sprintf("message_size %d (configured %d)", q.MsgSize(), e.opts.MessageSize))
	}
	if len(diffs) == 0 {
		return nil
	}
	if e.opts.OnMismatch == Fail {
		return fmt.Errorf("posixmq: open %q: %s already exists with %v, and the kernel keeps an existing queue's attributes; unlink it to recreate it, or set on_mismatch = \"warn\" to use it as it is: %w",
			name, q.Name(), diffs, engines.ErrInvalid)
	}
	e.log.Warn("queue exists with other attributes than configured; using it as it is",
		zap.String("queue", name), zap.String("kernel_name", q.Name()), zap.Strings("differences", diffs))
	return nil
}

func (q *queue) configure(spec engines.QueueSpec) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return q.errClosed("open")
	}
	q.policy.Apply(spec)
	return nil
}

func (q *queue) errClosed(op string) error {
	return fmt.Errorf("posixmq: %s %q: %w", op, q.name, engines.ErrClosed)
}

// wake releases every blocked receiver, the leader included; the losers of
// the race wait again.
func (q *queue) wake() {
	if q.waitCh != nil {
		close(q.waitCh)
		q.waitCh = nil
		q.followers = 0
	}
	q.kick()
}

// wakeRoom releases every enqueuer waiting for room.
func (q *queue) wakeRoom() {
	if q.roomCh != nil {
		close(q.roomCh)
		q.roomCh = nil
	}
}

// arm asks a watcher to wait for the descriptor; asking twice is one ask.
func arm(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// watchWrite turns the descriptor's writability into pumping the outbox
// and waking enqueuers, while someone waits for room. The check runs inside
// the poller's callback, after the poller's state was reset, so room made
// before the wait is seen by the check and room made after wakes the
// poller: nothing falls between.
func (q *queue) watchWrite() {
	defer q.watchers.Done()
	check := func(uintptr) bool {
		a, err := q.mq.Attr()
		return err != nil || a.CurMsgs < a.MaxMsg // on error the waiters find it themselves
	}
	for {
		select {
		case <-q.armWrite:
		case <-q.stop:
			return
		}
		if q.rc.Write(check) != nil {
			return // the descriptor was closed
		}
		q.pump()
		q.mu.Lock()
		q.wakeRoom()
		q.mu.Unlock()
	}
}

// scratchPool holds encoding buffers for sends.
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

// encode returns the bytes to send for r: its frame, or its bare body on a
// raw-format engine (or when the frame would not fit but the body does,
// which keeps a full-size message from another program deliverable).
func (q *queue) encode(buf *[]byte, r *record) []byte {
	if q.e.opts.Format == Raw && !r.framed {
		return r.msg.Body
	}
	h := frame.Header{
		ID: r.msg.ID, ContentType: r.msg.ContentType, CorrelationID: r.msg.CorrelationID, OrderingKey: r.msg.OrderingKey,
		Attributes: r.msg.Attributes, Attempts: uint32(r.Attempt), Failures: uint32(r.Failures), EnqueuedAt: r.enq, ExpiresAt: r.expire,
	}
	if frame.HeaderSize(&h)+len(r.msg.Body) > q.msgSize && len(r.msg.Body) <= q.msgSize {
		q.warnf("message too large for its envelope: written without it, losing its ID, attributes and counts",
			zap.String("id", r.msg.ID), zap.Int("body_bytes", len(r.msg.Body)), zap.Int("message_size", q.msgSize))
		return r.msg.Body
	}
	*buf = frame.Append((*buf)[:0], &h, r.msg.Body)
	return *buf
}

// pump moves outbox records into the kernel queue until it is empty or the
// kernel is full, in which case the write watcher resumes it. One pump runs
// at a time per queue, so records leave in order.
func (q *queue) pump() {
	q.mu.Lock()
	if q.pumping || q.outbox.Len() == 0 || q.closed {
		q.mu.Unlock()
		return
	}
	q.pumping = true
	q.mu.Unlock()

	buf := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(buf)
	q.fdMu.RLock()
	defer q.fdMu.RUnlock()
	full := false
	for {
		q.mu.Lock()
		r := q.outbox.Peek()
		if r == nil || q.closed || q.fdClosed {
			q.pumping = false
			q.mu.Unlock()
			break
		}
		// Encode under the lock: Close may be reading the record too.
		data := q.encode(buf, r)
		q.mu.Unlock()
		ok, err := q.mq.TrySend(data, uint(r.kprio))
		q.mu.Lock()
		if !ok && err == nil {
			q.pumping = false
			q.mu.Unlock()
			full = true
			break
		}
		// Sent, or refused for good (a dead letter too large for its
		// queue): either way it leaves the outbox.
		q.outbox.Remove(int(r.idx))
		q.outLen.Add(-1)
		q.release(r)
		q.wakeRoom()
		q.mu.Unlock()
		if err != nil {
			q.warnf("message dropped: the kernel refused it", zap.String("id", r.msg.ID), zap.Error(err))
		}
	}
	if full {
		arm(q.armWrite)
	}
}

// close closes the queue: it wakes every waiter, writes the messages held
// in memory back into the kernel queue as far as it has room, and closes
// the descriptor.
func (q *queue) close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.closing.Store(true)
	q.timer.Stop()
	q.wake()
	q.wakeRoom()
	q.mu.Unlock()
	close(q.stop)

	q.fdMu.Lock()
	q.mu.Lock()
	recs := q.leases.Drain()
	recs = append(recs, q.ready.Drain()...)
	recs = append(recs, q.delayed.Drain()...)
	recs = append(recs, q.outbox.Drain()...)
	dead := len(q.dead)
	q.dead = nil
	q.mu.Unlock()
	// Oldest first: the kernel orders by priority, then by arrival.
	slices.SortFunc(recs, func(a, b *record) int { return cmp.Compare(a.seq, b.seq) })
	buf := scratchPool.Get().(*[]byte)
	lost := 0
	for _, r := range recs {
		if ok, _ := q.mq.TrySend(q.encode(buf, r), uint(r.kprio)); !ok {
			lost++
		}
	}
	scratchPool.Put(buf)
	q.fdClosed = true
	err := q.file.Close() // also ends a watcher waiting in the poller
	q.fdMu.Unlock()
	q.watchers.Wait()

	if len(recs) > 0 {
		q.e.log.Info("messages held in memory written back to the kernel queue",
			zap.String("queue", q.name), zap.Int("written", len(recs)-lost))
	}
	if lost+dead > 0 {
		q.e.log.Error("messages lost at close: the kernel queue had no room for them",
			zap.String("queue", q.name), zap.Int("lost", lost), zap.Int("dead_letters_in_transit", dead))
	}
	if q.e.opts.UnlinkOnClose {
		if uerr := mq.Unlink(q.kname); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
			err = errors.Join(err, uerr)
		}
	}
	if err != nil {
		return fmt.Errorf("posixmq: close %q: %w", q.name, err)
	}
	return nil
}

// newRecord takes a recycled record or makes one.
func (q *queue) newRecord() *record {
	if n := len(q.free); n > 0 {
		r := q.free[n-1]
		q.free[n-1] = nil
		q.free = q.free[:n-1]
		return r
	}
	return new(record)
}

// release forgets a record that left for good and recycles it.
func (q *queue) release(r *record) {
	r.msg = engines.Message{} // drop references to bodies and attributes
	r.state = stateFree
	r.framed, r.raw, r.outbound = false, false, false
	if len(q.free) < maxFreeRecords {
		q.free = append(q.free, r)
	}
}

func (q *queue) nextID() string {
	if q.idNext == q.idEnd {
		q.idEnd = q.e.ids.Add(idBlock)
		q.idNext = q.idEnd - idBlock
	}
	q.idNext++
	return q.ids.format(q.e.idPrefix, q.idNext)
}

// logLimit keeps each repeated message to one line per logEvery, counting
// what it suppressed, so a flood of bad input or a full dead-letter queue
// cannot flood the log.
type logLimit struct {
	mu   sync.Mutex
	last map[string]logMark
}

type logMark struct {
	at         time.Time
	suppressed int
}

const logEvery = 10 * time.Second

// log writes msg at level unless the same msg was written less than
// logEvery ago.
func (l *logLimit) log(lg *zap.Logger, level zapcore.Level, msg string, fields ...zap.Field) {
	now := time.Now()
	l.mu.Lock()
	m := l.last[msg]
	if !m.at.IsZero() && now.Sub(m.at) < logEvery {
		m.suppressed++
		l.last[msg] = m
		l.mu.Unlock()
		return
	}
	if l.last == nil {
		l.last = make(map[string]logMark)
	}
	l.last[msg] = logMark{at: now}
	l.mu.Unlock()
	if m.suppressed > 0 {
		fields = append(fields, zap.Int("suppressed_since_last", m.suppressed))
	}
	lg.Log(level, msg, fields...)
}

func (q *queue) warnf(msg string, fields ...zap.Field) {
	q.e.limit.log(q.e.log, zapcore.WarnLevel, msg, append(fields, zap.String("queue", q.name))...)
}

func (q *queue) errorf(msg string, fields ...zap.Field) {
	q.e.limit.log(q.e.log, zapcore.ErrorLevel, msg, append(fields, zap.String("queue", q.name))...)
}
