//go:build linux

package posixmq

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq/frame"
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

// Format is how the engine writes new messages into a kernel queue.
type Format uint8

const (
	// Framed writes the envelope (package frame) in front of the body, so
	// the ID, attributes, enqueue time and TTL travel with the message.
	Framed Format = iota
	// Raw writes only the body, so any mq_receive program reads exactly what
	// was published. The kernel then carries nothing but the body and the
	// priority: Enqueue refuses attributes, caller-chosen IDs and TTLs
	// (ErrUnsupported), and the ID it writes back is not the one the message
	// is later delivered with. Dead letters are framed regardless: their
	// reason and source are their point.
	Raw
)

// String returns the format's configuration spelling.
func (f Format) String() string {
	if f == Raw {
		return "raw"
	}
	return "framed"
}

// Mismatch says what Open does when a queue already exists with other
// attributes than configured (the kernel keeps an existing queue's depth
// and message size).
type Mismatch uint8

const (
	// Warn logs the difference and uses the queue as it is.
	Warn Mismatch = iota
	// Fail makes Open fail with ErrInvalid.
	Fail
)

// Options configure an Engine.
type Options struct {
	// MaxMessages is the depth of a queue the engine creates (mq_maxmsg);
	// zero means the machine's default, /proc/sys/fs/mqueue/msg_default.
	// Without CAP_SYS_RESOURCE it cannot exceed /proc/sys/fs/mqueue/msg_max.
	MaxMessages int
	// MessageSize is the longest message, envelope included, of a queue the
	// engine creates (mq_msgsize); zero means the machine's default,
	// /proc/sys/fs/mqueue/msgsize_default.
	MessageSize int
	// OnMismatch decides what happens when a queue exists with another
	// MaxMessages or MessageSize than set here (zero values are not
	// compared).
	OnMismatch Mismatch
	// Format of the messages the engine writes.
	Format Format
	// Prefix is put in front of every queue name to form the kernel name:
	// queue "orders" with prefix "qrun." is /qrun.orders.
	Prefix string
	// Mode is the permission of queues the engine creates; zero means 0600.
	Mode os.FileMode
	// Spill is how many messages per queue Enqueue may hold in memory while
	// the kernel queue is full. Zero (the default) holds none: Enqueue waits
	// for room, so a message is in the kernel, and survives a crash of qrun,
	// once Enqueue returns.
	Spill int
	// SendTimeout bounds how long Enqueue waits for room when its context
	// allows longer; zero means DefaultSendTimeout.
	SendTimeout time.Duration
	// UnlinkOnClose removes, at Close, every kernel queue the engine opened:
	// for tests and throwaway deployments.
	UnlinkOnClose bool
	// Logger receives warnings (attribute mismatches, malformed envelopes,
	// messages lost at Close); nil means none.
	Logger *zap.Logger
}

// DefaultSendTimeout is how long Enqueue waits for room in a full queue
// when Options.SendTimeout is zero and its context has no earlier deadline.
const DefaultSendTimeout = 5 * time.Second

// Overhead is the envelope's size for a message with an engine-assigned ID
// and no other metadata: the most a framed body can be is MessageSize less
// this. The fixed header, a field tag and length, and the longest ID.
const Overhead = frame.FixedSize + 2 + maxIDLen

// maxIDLen is the longest ID the engine assigns: an 8-character prefix and
// a 64-bit counter in base 32.
const maxIDLen = idPrefixLen + 13

const idPrefixLen = 8

// minDeadLetterBacklog is how many dead letters a full dead-letter queue may
// have waiting in memory, at least, before more are dropped (and logged).
const minDeadLetterBacklog = 1024

// Engine is a set of POSIX message queues. Queues are shared with every
// process that opens the same names.
type Engine struct {
	opts  Options
	log   *zap.Logger
	epoch time.Time
	// maxMsg and msgSize are what the engine creates queues with.
	maxMsg, msgSize int

	idPrefix string
	ids      atomic.Uint64

	mu     sync.Mutex
	closed bool
	queues map[string]*queue // by kernel name
}

var _ engines.Engine = (*Engine)(nil)

// New checks opts against the machine's limits and returns an engine. It
// opens no queue.
func New(opts Options) (*Engine, error) {
	switch {
	case opts.MaxMessages < 0:
		return nil, fmt.Errorf("posixmq: max messages %d is negative: %w", opts.MaxMessages, engines.ErrInvalid)
	case opts.MessageSize < 0:
		return nil, fmt.Errorf("posixmq: message size %d is negative: %w", opts.MessageSize, engines.ErrInvalid)
	case opts.Spill < 0:
		return nil, fmt.Errorf("posixmq: spill %d is negative: %w", opts.Spill, engines.ErrInvalid)
	case opts.SendTimeout < 0:
		return nil, fmt.Errorf("posixmq: send timeout %v is negative: %w", opts.SendTimeout, engines.ErrInvalid)
	case opts.Format > Raw:
		return nil, fmt.Errorf("posixmq: unknown format %d: %w", opts.Format, engines.ErrInvalid)
	case opts.OnMismatch > Fail:
		return nil, fmt.Errorf("posixmq: unknown mismatch policy %d: %w", opts.OnMismatch, engines.ErrInvalid)
	case opts.Mode&^os.ModePerm != 0:
		return nil, fmt.Errorf("posixmq: mode %v has more than permission bits: %w", opts.Mode, engines.ErrInvalid)
	}
	if opts.Prefix != "" {
		if _, err := mq.CanonicalName(opts.Prefix + "x"); err != nil || strings.HasPrefix(opts.Prefix, "/") {
			return nil, fmt.Errorf("posixmq: prefix %q: a slash or NUL byte cannot be part of a queue name: %w", opts.Prefix, engines.ErrInvalid)
		}
	}
	if opts.SendTimeout == 0 {
		opts.SendTimeout = DefaultSendTimeout
	}
	if opts.Mode == 0 {
		opts.Mode = 0o600
	}
	e := &Engine{opts: opts, log: opts.Logger, epoch: time.Now(), queues: make(map[string]*queue)}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	e.maxMsg, e.msgSize = opts.MaxMessages, opts.MessageSize
	if e.maxMsg == 0 {
		e.maxMsg = readDefault("/proc/sys/fs/mqueue/msg_default", 10)
	}
	if e.msgSize == 0 {
		e.msgSize = readDefault("/proc/sys/fs/mqueue/msgsize_default", 8192)
	}
	// Refuse what the machine will refuse before any queue is opened, with
	// the limit's name (a *mq.LimitError, which matches ErrInvalid).
	if err := mq.CheckAttr("", e.maxMsg, e.msgSize); err != nil {
		return nil, fmt.Errorf("posixmq: %w", err)
	}
	if opts.Format == Framed && e.msgSize <= Overhead {
		return nil, fmt.Errorf("posixmq: message size %d leaves no room for a body after the %d-byte envelope: %w", e.msgSize, Overhead, engines.ErrInvalid)
	}
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("posixmq: ID prefix: %w", err)
	}
	// Random per engine, so IDs assigned by two processes sharing a queue
	// do not collide.
	e.idPrefix = strings.ToLower(base32.StdEncoding.EncodeToString(rnd[:]))
	return e, nil
}

func readDefault(path string, fallback int) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return fallback
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return fallback
	}
	return n
}

// Capabilities: leases, delays, attempts and dead letters are supplied in
// process; priorities and sharing with other processes are the kernel's.
// Durable is false: messages in the kernel survive a crash of qrun but not
// a reboot, and those in qrun's memory (leased, delayed, spilled) do not
// survive a crash. Raw format cannot carry a TTL.
func (e *Engine) Capabilities() engines.Capabilities {
	c := engines.Capabilities{
		Visibility:     true,
		Delay:          true,
		DeadLetter:     true,
		Priority:       true,
		TTL:            e.opts.Format == Framed,
		CrossProcess:   true,
		MaxMessageSize: e.msgSize,
	}
	if e.opts.Format == Framed {
		c.MaxMessageSize -= Overhead
	}
	return c
}

// KernelName returns the kernel name (with its leading slash) of the queue
// qrun calls name, for telling other programs where to find it.
func (e *Engine) KernelName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("posixmq: empty queue name: %w", engines.ErrInvalid)
	}
	return mq.CanonicalName("/" + e.opts.Prefix + strings.TrimPrefix(name, "/"))
}

// Open opens, creating it if needed, the kernel queue for spec.Name and
// returns a handle on it. A spec with only a Name attaches with the queue's
// current settings; a fuller spec replaces them.
func (e *Engine) Open(ctx context.Context, spec engines.QueueSpec) (engines.Queue, error) {
	switch {
	case spec.Name == "":
		return nil, fmt.Errorf("posixmq: open: empty queue name: %w", engines.ErrInvalid)
	case spec.VisibilityTimeout < 0:
		return nil, fmt.Errorf("posixmq: open %q: negative visibility timeout %v: %w", spec.Name, spec.VisibilityTimeout, engines.ErrInvalid)
	case spec.MaxAttempts < 0:
		return nil, fmt.Errorf("posixmq: open %q: negative max attempts %d: %w", spec.Name, spec.MaxAttempts, engines.ErrInvalid)
	case spec.Ordered:
		return nil, fmt.Errorf("posixmq: open %q: ordered delivery: %w", spec.Name, engines.ErrUnsupported)
	}
	kname, err := e.KernelName(spec.Name)
	if err != nil {
		return nil, err
	}
	if spec.DeadLetter != "" {
		dk, err := e.KernelName(spec.DeadLetter)
		if err != nil {
			return nil, fmt.Errorf("posixmq: open %q: dead-letter queue: %w", spec.Name, err)
		}
		if dk == kname {
			return nil, fmt.Errorf("posixmq: open %q: queue cannot be its own dead-letter queue: %w", spec.Name, engines.ErrInvalid)
		}
	}
	q, err := e.queue(spec.Name, kname)
	if err != nil {
		return nil, err
	}
	if err := q.configure(spec); err != nil {
		return nil, err
	}
	return &handle{q: q, name: spec.Name, done: make(chan struct{})}, nil
}

// queue returns the shared state of a kernel queue, opening it if needed.
func (e *Engine) queue(name, kname string) (*queue, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("posixmq: queue %q: %w", name, engines.ErrClosed)
	}
	if q := e.queues[kname]; q != nil {
		return q, nil
	}
	q, err := openQueue(e, name, kname)
	if err != nil {
		return nil, err
	}
	e.queues[kname] = q
	return q, nil
}

// Close closes every queue: blocked calls return ErrClosed, and messages
// held in memory are written back to their kernel queues as far as there is
// room (what is not is logged as lost). Closing twice is harmless.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	qs := make([]*queue, 0, len(e.queues))
	for _, q := range e.queues {
		qs = append(qs, q)
	}
	e.mu.Unlock()
	var errs []error
	for _, q := range qs {
		if err := q.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// now is the engine clock: nanoseconds since the engine started, monotonic,
// so wall-clock steps cannot reorder leases and delays.
func (e *Engine) now() int64 { return int64(time.Since(e.epoch)) }

// wall converts the engine clock to a time.Time.
func (e *Engine) wall(t int64) time.Time { return e.epoch.Add(time.Duration(t)) }
