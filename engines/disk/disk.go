// Package disk is qrun's embedded, durable engine: the default, needing no
// server, and surviving kill -9 (and power loss, as far as the disk honours
// fdatasync).
//
// # Storage
//
// Messages live in one bbolt file, DataDir/qrun.db. bbolt (go.etcd.io/bbolt,
// the store under etcd) was chosen over a hand-written log because it is a
// small, pure-Go, copy-on-write B+tree whose crash safety has a decade of
// production behind it: a transaction is durable once its pages and then
// its meta page are fdatasync'd, and a crash at any point leaves the
// previous meta page, hence the previous consistent tree. Space is reused
// the same way: pages freed by deleted messages go on a freelist and are
// written again by later commits, so under a steady flow the file stops
// growing at the high-water mark of the backlog (it never shrinks; see
// docs/disk-engine.md). A log would need its own compaction and its own
// proof; bbolt gives both, and costs two fsyncs per commit instead of one,
// which group commit amortises.
//
// Each queue is a bucket holding "m" (sequence number -> message payload,
// immutable), "s" (sequence -> 25-byte delivery state: attempts, failures,
// visible time, leased), "d" (dedup ID -> admitted ID and window end), its
// settings and its counters. Sequence numbers are engine-wide, big-endian
// keys, so key order is enqueue order and IDs are never reused.
//
// # Memory
//
// The file is the truth; the engine keeps an index of it in memory, rebuilt
// at open by one scan: ready heap per queue (priority, then enqueue order),
// delayed heap, lease heap, ordering-key states and the dedup window. Receive
// therefore never scans the store; it pops the index and reads only the
// payloads it leases. The index holds no bodies, so a deep backlog costs
// tens of bytes a message.
//
// # Durability
//
// Every change is an op appended to one pending batch; a single committer
// goroutine commits the whole batch in one transaction while the next fills
// (group commit, see commit.go). Enqueue returns only after its batch is on
// disk, in both sync modes. With SyncAlways (the default) so do Receive
// (the lease, i.e. the attempt, is recorded) and every settlement, so an
// acknowledged ack is never undone by a crash. With SyncBatch, leases and
// settlements return as soon as they are applied in memory and reach the
// disk with the next commit, a few milliseconds later: a crash can then
// redeliver a message whose ack had returned (at-least-once still holds,
// nothing acknowledged to a producer is lost), and consumers are not
// bounded by the disk's fsync rate.
//
// A lease that expires while the engine runs counts a failure and waits
// QueueSpec.Retry's delay; the expiry is stored like a nack (failure and
// visible time), so a restart during the delay keeps the same visible
// time and counts nothing again.
// A lease outstanding at a crash is found at restart and treated as a
// failure: the attempt counts, the message waits QueueSpec.Retry's delay
// (as stored by the last Open that set it), and a message that has now
// failed MaxAttempts times is dead-lettered, so a message that kills the
// process can neither circulate forever nor burn its attempts in a restart
// loop. The expiry is stored by the open that finds it, so it is counted
// once (see recover).
//
// One process owns a data directory: bbolt holds an flock on the file, and
// a second opener fails after Options.LockTimeout with an error naming it.
package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/kvmem"
	"github.com/qrun-dev/qrun/internal/clock"
)

// SyncMode chooses when leases and settlements are durable.
type SyncMode uint8

// Sync modes. Enqueue is durable before it returns in both.
const (
	// SyncAlways makes Receive and every settlement wait for their commit.
	SyncAlways SyncMode = iota
	// SyncBatch lets Receive and settlements return before their commit.
	SyncBatch
)

// String names the mode as the HCL setting spells it.
func (m SyncMode) String() string {
	if m == SyncBatch {
		return "batch"
	}
	return "always"
}

// ParseSyncMode parses "always" or "batch".
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "always", "":
		return SyncAlways, nil
	case "batch":
		return SyncBatch, nil
	}
	return 0, fmt.Errorf("sync mode %q: want \"always\" or \"batch\": %w", s, engines.ErrInvalid)
}

// Options configure an Engine.
type Options struct {
	// Dir is the data directory; it is created if missing and holds FileName.
	Dir string
	// Sync chooses when leases and settlements are durable.
	Sync SyncMode
	// MaxMessageSize is the largest body Enqueue accepts; zero means
	// DefaultMaxMessageSize. bbolt holds a value in one allocation, so the
	// limit keeps one message from pinning a huge page run.
	MaxMessageSize int
	// DedupWindow is how long a DedupID suppresses repeats; zero means
	// DefaultDedupWindow.
	DedupWindow time.Duration
	// LockTimeout bounds the wait for the data file's lock; zero means
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// Logger receives the engine's logs; nil discards them.
	Logger *zap.Logger
}

// Defaults for Options left zero.
const (
	DefaultMaxMessageSize = 16 << 20
	DefaultDedupWindow    = 5 * time.Minute
	DefaultLockTimeout    = time.Second
	// FileName is the data file inside Options.Dir.
	FileName = "qrun.db"
	// maxNameLen is the longest queue name: it is a bbolt key, which
	// must stay well under a page.
	maxNameLen = 1024
)

// ErrLocked is returned by Open when another process owns the data file.
var ErrLocked = errors.New("data directory in use by another process")

// Bucket and key names.
var (
	bucketMeta   = []byte("meta")
	bucketQueues = []byte("queues")
	keyVersion   = []byte("version")
	keySeq       = []byte("seq")
	keySpec      = []byte("spec")
	keyStats     = []byte("stats")
	subMsgs      = []byte("m")
	subState     = []byte("s")
	subDedup     = []byte("d")
	// subUser holds per-message state (StateSettler) by sequence; it is
	// created with the first state a queue stores.
	subUser = []byte("u")
)

// storeVersion is the layout version written to meta; Open refuses others.
const storeVersion = 1

// Engine is a durable engine over one data file.
type Engine struct {
	opts Options
	path string
	db   *bolt.DB
	log  *zap.Logger

	// The clock: wall time at open plus monotonic time since, so deadlines
	// survive a restart (they are stored as Unix nanoseconds) but a clock
	// step while running cannot reorder them.
	wallBase  int64
	monoStart time.Time
	// clock is a test's clock.Fake (export_test.go), nil the system clock.
	// Only the queues' clock reads it; timers wait in real time and the
	// key-value stores' TTLs (kv.go) read the system clock.
	clock clock.Clock

	seq atomic.Uint64 // last sequence number handed out

	mu     sync.Mutex
	closed bool
	// closedFlag mirrors closed for isClosed, which every key-value read
	// calls: an atomic load rather than the engine's lock, which every
	// worker and the committer take.
	closedFlag atomic.Bool
	queues     map[string]*queue
	stores     map[string]*kvmem.Store // key-value stores, loaded at open (kv.go)

	// txMu serialises SettleTx calls, the only operations that hold more
	// than one queue's lock at once (see kv.go).
	txMu sync.Mutex
	// txOps is a SettleTx's scratch list of ops, under txMu: add copies
	// them into the batch, so one slice serves every settle.
	txOps []op
	// sweepDone stops the key-value sweeper at Close.
	sweepDone chan struct{}

	// Committer state (commit.go), under cmu.
	cmu           sync.Mutex
	cur           *batch
	stopping      bool
	failed        error
	kick          chan struct{}
	committerDone chan struct{}

	ticks tickBook // schedule ticks (ticks.go)
}

var (
	_ engines.Engine = (*Engine)(nil)
)

// Open opens (creating if needed) the engine's data file in opts.Dir and
// rebuilds its index. A damaged file is reported with its path; a file
// locked by another process yields ErrLocked after opts.LockTimeout.
func Open(ctx context.Context, opts Options) (*Engine, error) { return open(ctx, opts, nil) }

// open is Open on the clock c, nil meaning the system clock.
func open(ctx context.Context, opts Options, c clock.Clock) (*Engine, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("disk: no data directory: %w", engines.ErrInvalid)
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("disk: data directory: %w", err)
	}
	path := filepath.Join(opts.Dir, FileName)
	if err := checkMeta(path); err != nil {
		return nil, err
	}
	db, err := openBolt(path, &bolt.Options{
		Timeout: opts.LockTimeout,
		// The freelist is written with every commit (one page) rather than
		// rebuilt at open: bbolt rebuilds it on a goroutine of its own,
		// where a damaged page would crash the process instead of
		// failing Open.
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("disk: %s: %w (its lock is held; is another qrun running on %s?)", path, ErrLocked, opts.Dir)
		}
		return nil, fmt.Errorf("disk: opening %s: %w (the file is damaged or not a qrun data file)", path, err)
	}
	now := time.Now()
	if c != nil {
		now = c.Now()
	}
	e := &Engine{
		opts: opts, path: path, db: db, log: opts.Logger,
		wallBase: now.UnixNano(), monoStart: now, clock: c,
		queues:        make(map[string]*queue),
		cur:           &batch{done: make(chan struct{})},
		kick:          make(chan struct{}, 1),
		committerDone: make(chan struct{}),
	}
	if err := e.recover(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("disk: reading %s: %w", path, err)
	}
	go e.commitLoop()
	e.sweepDone = make(chan struct{})
	go e.sweepLoop(e.sweepDone)
	return e, nil
}

// Path returns the data file's path.
func (e *Engine) Path() string { return e.path }

// Capabilities reports everything but sharing with other processes and
// machines.
func (e *Engine) Capabilities() engines.Capabilities {
	return capabilities(e.opts)
}

// Open returns a handle on the named queue, creating it if needed.
//
// A spec that sets nothing but Name attaches to the queue as it is
// (settings included, as stored). Any other spec becomes the queue's
// settings, stored durably before Open returns, except that Ordered cannot
// change while the queue holds messages.
func (e *Engine) Open(ctx context.Context, s engines.QueueSpec) (engines.Queue, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("disk: open %q: %w", s.Name, err)
	}
	switch {
	case len(s.Name) > maxNameLen:
		return nil, fmt.Errorf("disk: open: queue name of %d bytes, limit %d: %w", len(s.Name), maxNameLen, engines.ErrInvalid)
	case len(s.DeadLetter) > maxNameLen:
		return nil, fmt.Errorf("disk: open %q: dead-letter queue name too long: %w", s.Name, engines.ErrInvalid)
	}
	q, created, err := e.queue(s.Name)
	if err != nil {
		return nil, err
	}
	b, err := q.configure(s, created)
	if err != nil {
		return nil, err
	}
	if b != nil {
		if err := b.Wait(ctx); err != nil {
			return nil, fmt.Errorf("disk: open %q: %w", s.Name, err)
		}
	}
	return &handle{q: q, done: make(chan struct{})}, nil
}

// queue returns the named queue, creating its in-memory state if needed
// (its buckets are created by the first commit that touches it).
func (e *Engine) queue(name string) (*queue, bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, false, fmt.Errorf("disk: queue %q: %w", name, engines.ErrClosed)
	}
	q := e.queues[name]
	if q != nil {
		return q, false, nil
	}
	q = newQueue(e, name)
	e.queues[name] = q
	return q, true, nil
}

// Close commits what is pending, closes every queue (blocked receivers
// return ErrClosed) and releases the file. Closing twice is harmless.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.closedFlag.Store(true)
	qs := make([]*queue, 0, len(e.queues))
	for _, q := range e.queues {
		qs = append(qs, q)
	}
	e.mu.Unlock()
	for _, q := range qs {
		q.close()
	}
	close(e.sweepDone)
	e.cmu.Lock()
	e.stopping = true
	e.cmu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
	<-e.committerDone
	err := e.db.Close()
	if err != nil {
		return fmt.Errorf("disk: closing %s: %w", e.path, err)
	}
	e.cmu.Lock()
	defer e.cmu.Unlock()
	if e.failed != nil {
		return e.failed
	}
	return nil
}

// now is the engine clock in Unix nanoseconds (see Engine.wallBase).
func (e *Engine) now() int64 {
	if e.clock == nil {
		return e.wallBase + int64(time.Since(e.monoStart))
	}
	return e.wallBase + int64(e.clock.Now().Sub(e.monoStart))
}

// wall converts the engine clock to a time.Time.
func wall(t int64) time.Time { return time.Unix(0, t) }

// buckets are one queue's buckets inside a transaction.
type buckets struct {
	root, msgs, state, dedup *bolt.Bucket
	user                     *bolt.Bucket // nil until a state is stored
}

// delUser deletes a message's per-message state, if the queue has any.
func (x *buckets) delUser(k []byte) error {
	if x.user == nil {
		return nil
	}
	return x.user.Delete(k)
}

// msgsFill is how full a commit packs the pages of a queue's messages
// when it splits them (bbolt's Bucket.FillPercent, 0.5 by default, which
// suits random keys). Messages are keyed by a sequence that only grows, so
// nearly every write appends at the end of the bucket: half-full pages
// would only double the pages each commit writes and the tree's size.
// Some slack is left for the few writes that arrive out of order.
const msgsFill = 0.9

// queueBuckets finds (or, with create, makes) a queue's buckets.
func queueBuckets(tx *bolt.Tx, name string, create bool) (*buckets, error) {
	qs := tx.Bucket(bucketQueues)
	if qs == nil {
		return nil, fmt.Errorf("bucket %q missing: %w", bucketQueues, errCorrupt)
	}
	var root *bolt.Bucket
	if create {
		var err error
		if root, err = qs.CreateBucketIfNotExists([]byte(name)); err != nil {
			return nil, err
		}
		x := &buckets{root: root}
		for _, p := range []struct {
			b    **bolt.Bucket
			name []byte
		}{{&x.msgs, subMsgs}, {&x.state, subState}, {&x.dedup, subDedup}} {
			if *p.b, err = root.CreateBucketIfNotExists(p.name); err != nil {
				return nil, err
			}
		}
		x.user = root.Bucket(subUser)
		x.msgs.FillPercent = msgsFill
		return x, nil
	}
	if root = qs.Bucket([]byte(name)); root == nil {
		return nil, nil
	}
	x := &buckets{root: root, msgs: root.Bucket(subMsgs), state: root.Bucket(subState), dedup: root.Bucket(subDedup), user: root.Bucket(subUser)}
	if x.msgs == nil || x.state == nil || x.dedup == nil {
		return nil, fmt.Errorf("queue %q: sub-bucket missing: %w", name, errCorrupt)
	}
	return x, nil
}

func seqBytes(n uint64) []byte {
	var b [8]byte
	return append([]byte(nil), seqKey(&b, n)...)
}
