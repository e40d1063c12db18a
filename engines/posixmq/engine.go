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
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

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
	limit    logLimit // rate limit of repeated warnings and errors

	mu     sync.Mutex
	closed bool
	queues map[string]*queue // by kernel name
}

var _ engines.Engine = (*Engine)(nil)

// New checks opts against the machine's limits and returns an engine. It
// opens no queue.
func New(opts Options) (*Engine, error) {
	if problems := opts.Check(); len(problems) > 0 {
		return nil, problems[0]
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
	// Defaults come from the machine; check them as Check did explicit sizes.
	if err := checkSizes(Options{MaxMessages: e.maxMsg, MessageSize: e.msgSize, Format: opts.Format}); err != nil {
		return nil, err
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
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("posixmq: open %q: %w", spec.Name, err)
	}
	if spec.Ordered {
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
