//go:build linux

package shm

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/shm/ring"
)

// AttrMalformed is set on a delivery whose envelope could not be decoded;
// the body is then the record's raw bytes.
const AttrMalformed = "qrun.shm.malformed"

func (o *Options) defaults() {
	if o.Dir == "" {
		o.Dir = ring.DefaultDir
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.SlotSize == 0 {
		o.SlotSize = DefaultSlotSize
	}
	if o.Capacity == 0 {
		o.Capacity = DefaultCapacity
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = ring.DefaultSendTimeout
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

func (o Options) geometry() ring.Geometry {
	return ring.Geometry{SlotSize: o.SlotSize, Capacity: o.Capacity, Mode: o.Mode}
}

// Engine is a set of shared-memory queues.
type Engine struct {
	opts  Options
	log   *zap.Logger
	epoch time.Time
	// nonce tells apart the IDs this engine gives delayed enqueues from
	// those of other processes.
	nonce uint64

	mu     sync.Mutex
	closed bool
	queues map[string]*queue
}

var _ engines.Engine = (*Engine)(nil)

// New checks the options and returns an engine; it opens nothing yet.
func New(opts Options) (*Engine, error) {
	opts.defaults()
	if err := opts.geometry().Validate(); err != nil {
		return nil, fmt.Errorf("shm: %w: %w", err, engines.ErrInvalid)
	}
	if err := ring.ValidateName(opts.Prefix + "q"); err != nil {
		return nil, fmt.Errorf("shm: prefix %q: %w: %w", opts.Prefix, err, engines.ErrInvalid)
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	return &Engine{opts: opts, log: opts.Logger, epoch: time.Now(), nonce: binary.LittleEndian.Uint64(nonce[:]), queues: make(map[string]*queue)}, nil
}

// Capabilities: leases, delay, dead-lettering and TTL are provided in the
// process (see the package doc for what a crash loses); the queues are
// shared with other processes on the machine; nothing survives a reboot.
func (e *Engine) Capabilities() engines.Capabilities {
	return engines.Capabilities{
		Visibility:     true,
		Delay:          true,
		DeadLetter:     true,
		TTL:            true,
		CrossProcess:   true,
		MaxMessageSize: e.opts.SlotSize,
	}
}

// SegmentPath is the file that holds the named queue's ring.
func (e *Engine) SegmentPath(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("shm: empty queue name: %w", engines.ErrInvalid)
	}
	p, err := ring.Path(e.opts.Dir, e.opts.Prefix+name)
	if err != nil {
		return "", fmt.Errorf("shm: queue %q: %w: %w", name, err, engines.ErrInvalid)
	}
	return p, nil
}

// Open returns a handle on the named queue, creating its segment if it does
// not exist. A spec with more than a name sets the queue's lease length,
// attempts and dead-letter queue for this process (the latest Open wins).
func (e *Engine) Open(ctx context.Context, spec engines.QueueSpec) (engines.Queue, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("shm: open %q: %w", spec.Name, err)
	}
	if spec.Ordered {
		return nil, fmt.Errorf("shm: open %q: ordered delivery: %w", spec.Name, engines.ErrUnsupported)
	}
	if spec.DeadLetter != "" {
		if _, err := e.SegmentPath(spec.DeadLetter); err != nil {
			return nil, err
		}
	}
	q, err := e.queue(spec.Name)
	if err != nil {
		return nil, err
	}
	q.configure(spec)
	return &Queue{q: q}, nil
}

// queue returns the named queue, mapping (and if need be creating) its
// segment.
func (e *Engine) queue(name string) (*queue, error) {
	path, err := e.SegmentPath(name)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("shm: queue %q: %w", name, engines.ErrClosed)
	}
	if q := e.queues[name]; q != nil {
		return q, nil
	}
	r, err := e.attach(path)
	if err != nil {
		return nil, fmt.Errorf("shm: queue %q: %w", name, err)
	}
	q := newQueue(e, name, r)
	e.queues[name] = q
	return q, nil
}

// attach opens the segment, or creates it when it does not exist, and
// checks that its geometry is the configured one.
func (e *Engine) attach(path string) (*ring.Ring, error) {
	ropts := ring.Options{StallTimeout: e.opts.StallTimeout, SendTimeout: e.opts.SendTimeout}
	want := e.opts.geometry()
	for range 3 {
		r, err := ring.Open(path, ropts)
		if errors.Is(err, fs.ErrNotExist) {
			r, err = ring.Create(path, want, ropts)
			if errors.Is(err, fs.ErrExist) {
				continue // another process created it first: open theirs
			}
		}
		if err != nil {
			if errors.Is(err, ring.ErrCorrupt) {
				return nil, fmt.Errorf("%w (if no process uses it, delete %s and it will be created afresh): %w", err, path, engines.ErrInvalid)
			}
			return nil, err
		}
		if got := r.Geometry(); got != want {
			_ = r.Close()
			return nil, fmt.Errorf("segment %s has slot_size %d, capacity %d, mode %s; this engine is configured with %d, %d, %s (delete the segment or change the configuration): %w: %w",
				path, got.SlotSize, got.Capacity, got.Mode, want.SlotSize, want.Capacity, want.Mode, ring.ErrGeometry, engines.ErrInvalid)
		}
		return r, nil
	}
	return nil, fmt.Errorf("segment %s: created and deleted repeatedly by other processes while opening", path)
}

// Delete removes the named queue's segment. This process's handles on it
// are closed (their held messages are dropped, not flushed: the queue is
// gone); other processes keep their mappings until they close them, but
// nothing new finds the segment.
func (e *Engine) Delete(ctx context.Context, name string) error {
	path, err := e.SegmentPath(name)
	if err != nil {
		return err
	}
	e.mu.Lock()
	q := e.queues[name]
	delete(e.queues, name)
	e.mu.Unlock()
	if q != nil {
		q.close(false)
	}
	if err := ring.Delete(path); err != nil {
		return fmt.Errorf("shm: delete %q: %w", name, err)
	}
	return nil
}

// Close closes every queue of the engine. What this process held outside
// the rings (delayed, to be redelivered, leased) is published back into
// them, within the send timeout; blocked receivers return ErrClosed.
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
	e.queues = nil
	e.mu.Unlock()
	var errs []error
	for _, q := range qs {
		if err := q.close(true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// now is the engine clock: monotonic nanoseconds since the engine started.
func (e *Engine) now() int64 { return int64(time.Since(e.epoch)) }

// wall converts the engine clock to a time.
func (e *Engine) wall(t int64) time.Time { return e.epoch.Add(time.Duration(t)) }

// fromUnix converts a Unix-nanosecond time from a slot (another process's
// wall clock) to the engine clock.
func (e *Engine) fromUnix(ns int64, now int64, wallNow time.Time) int64 {
	return after(now, time.Duration(ns-wallNow.UnixNano()))
}

// after adds d to t, saturating instead of wrapping.
func after(t int64, d time.Duration) int64 {
	s := t + int64(d)
	if d > 0 && s < t {
		return 1<<63 - 1
	}
	if d < 0 && s > t {
		return -1 << 63
	}
	return s
}

// Segments lists the queue names that have a segment under this engine's
// directory and prefix, for operators and tests.
func (e *Engine) Segments() ([]string, error) {
	ents, err := os.ReadDir(e.opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("shm: list %s: %w", e.opts.Dir, err)
	}
	var names []string
	for _, ent := range ents {
		if n, ok := strings.CutPrefix(ent.Name(), e.opts.Prefix); ok && n != "" {
			names = append(names, n)
		}
	}
	return names, nil
}

// Dir is the directory holding the segments.
func (e *Engine) Dir() string { return filepath.Clean(e.opts.Dir) }
