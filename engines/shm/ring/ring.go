//go:build linux

package ring

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options tune a Ring handle; they are per process, not stored in the segment.
type Options struct {
	// StallTimeout is how long a claimed slot may stay unpublished (or
	// unreleased) before another process skips (or releases) it. Zero means
	// DefaultStallTimeout.
	StallTimeout time.Duration
	// SendTimeout bounds a blocking Push whose context has no deadline, so
	// a send never waits forever. Zero means DefaultSendTimeout.
	SendTimeout time.Duration
}

// Defaults for Options.
const (
	DefaultStallTimeout = time.Second
	DefaultSendTimeout  = 10 * time.Second
)

// header mirrors the documented layout; TestLayout pins every offset.
type header struct {
	magic      atomic.Uint64 // 0
	version    uint32        // 8
	mode       uint32        // 12
	slotSize   uint32        // 16
	capacity   uint32        // 20
	stride     uint32        // 24
	headerSize uint32        // 28
	nonce      uint64        // 32
	created    int64         // 40
	_          [16]byte

	tail atomic.Uint64 // 64
	_    [56]byte
	head atomic.Uint64 // 128
	_    [56]byte

	dataSeq      atomic.Uint32 // 192
	dataWaiters  atomic.Uint32 // 196
	_            [56]byte
	spaceSeq     atomic.Uint32 // 256
	spaceWaiters atomic.Uint32 // 260
	_            [56]byte

	published   atomic.Uint64 // 320
	overwritten atomic.Uint64 // 328
	skipped     atomic.Uint64 // 336
	abandoned   atomic.Uint64 // 344
}

// slotHeader mirrors a slot's first 32 bytes.
type slotHeader struct {
	seq      atomic.Uint64 // 0
	length   uint32        // 8
	flags    uint32        // 12
	enqueued int64         // 16
	visible  int64         // 24
}

var magicWord = binary.LittleEndian.Uint64([]byte(Magic))

// Ring is one process's handle on a ring segment. Its methods are safe for
// concurrent use; Close unmaps the segment once no call is using it.
type Ring struct {
	path   string
	geo    Geometry
	opts   Options
	mem    []byte
	hdr    *header
	slots  unsafe.Pointer
	stride uintptr
	mask   uint64
	cap    uint64
	nonce  uint64

	// life guards the mapping: every operation holds it shared, Close
	// exclusively, so the segment is never unmapped under a reader.
	life   sync.RWMutex
	closed atomic.Bool

	// Stall bookkeeping is local to the process: each process times the
	// slots it finds stuck on its own clock.
	readStall  stall
	writeStall stall
}

// stall remembers since when a position has looked stuck.
type stall struct {
	mu    sync.Mutex
	pos   uint64
	upTo  uint64 // positions below this were already claimed when the clock started
	since time.Time
	armed bool
	// active mirrors armed so the hot path can skip the lock.
	active atomic.Bool
}

// overdue reports whether pos has been stuck for longer than d, starting
// the clock if this is the first time pos is seen stuck, and returns when
// it will be overdue. claimed is the counter that was claimed past pos
// (tail for a write, head for a read): a dead process's batch leaves
// several positions stuck, and those that were already claimed when the
// first one's clock started have waited as long as it, so they do not
// restart the clock.
func (s *stall) overdue(pos, claimed uint64, d time.Duration) (bool, time.Time) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.armed || s.pos != pos {
		if s.armed && pos > s.pos && pos < s.upTo && !now.Before(s.since.Add(d)) {
			s.pos = pos
		} else {
			s.pos, s.upTo, s.since, s.armed = pos, claimed, now, true
			s.active.Store(true)
		}
	}
	due := s.since.Add(d)
	return !now.Before(due), due
}

func (s *stall) clear() {
	if !s.active.Load() {
		return
	}
	s.mu.Lock()
	s.armed = false
	s.active.Store(false)
	s.mu.Unlock()
}

// deadline is when the current stall (if any) becomes overdue.
func (s *stall) deadline(d time.Duration) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.since.Add(d), s.armed
}

// Path returns the segment's file name under dir.
func Path(dir, name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	if dir == "" {
		dir = DefaultDir
	}
	return filepath.Join(dir, name), nil
}

// Create makes a new segment at path with geometry g and maps it. It fails
// with an error wrapping fs.ErrExist if the segment exists.
func Create(path string, g Geometry, opts Options) (*Ring, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if err := ValidateName(filepath.Base(path)); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ring: create %s: %w", path, err)
	}
	defer f.Close()
	fail := func(err error) (*Ring, error) {
		_ = os.Remove(path)
		return nil, err
	}
	if err := f.Truncate(g.Size()); err != nil {
		return fail(fmt.Errorf("ring: create %s: size %d: %w", path, g.Size(), err))
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(g.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("ring: create %s: mmap %d bytes: %w", path, g.Size(), err))
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	h := (*header)(unsafe.Pointer(&mem[0]))
	h.version = Version
	h.mode = uint32(g.Mode)
	h.slotSize = uint32(g.SlotSize)
	h.capacity = uint32(g.Capacity)
	h.stride = uint32(g.Stride())
	h.headerSize = HeaderSize
	h.nonce = binary.LittleEndian.Uint64(nonce[:])
	h.created = time.Now().UnixNano()
	r := newRing(path, g, opts, mem)
	for i := uint64(0); i < r.cap; i++ {
		r.slot(i).seq.Store(2 * i)
	}
	// Publishing the magic last tells openers the segment is complete.
	h.magic.Store(magicWord)
	return r, nil
}

// openWait bounds how long Open waits for a creator in another process to
// finish initialising a segment it has just created.
const openWait = 2 * time.Second

// Open maps the existing segment at path, validating its header. The
// geometry comes from the segment; Geometry() reports it.
func Open(path string, opts Options) (*Ring, error) {
	if err := ValidateName(filepath.Base(path)); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("ring: open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ring: open %s: %w", path, err)
	}
	// A creator in another process may be between creating and sizing.
	for deadline := time.Now().Add(openWait); fi.Size() < HeaderSize && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		if fi, err = f.Stat(); err != nil {
			return nil, fmt.Errorf("ring: open %s: %w", path, err)
		}
	}
	if fi.Size() < HeaderSize {
		return nil, fmt.Errorf("ring: open %s: %d bytes, smaller than the %d-byte header: %w", path, fi.Size(), HeaderSize, ErrCorrupt)
	}
	if fi.Size() > MaxSegment+HeaderSize {
		return nil, fmt.Errorf("ring: open %s: %d bytes, over the %d limit: %w", path, fi.Size(), int64(MaxSegment), ErrCorrupt)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("ring: open %s: mmap: %w", path, err)
	}
	g, err := checkHeader(mem)
	if err != nil {
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("ring: open %s: %w", path, err)
	}
	return newRing(path, g, opts, mem), nil
}

// checkHeader validates a mapped header against the documented layout and
// the mapping's size, and returns the geometry it describes.
func checkHeader(mem []byte) (Geometry, error) {
	h := (*header)(unsafe.Pointer(&mem[0]))
	for deadline := time.Now().Add(openWait); h.magic.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if m := h.magic.Load(); m != magicWord {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], m)
		return Geometry{}, fmt.Errorf("magic %q, want %q: %w", b[:], Magic, ErrCorrupt)
	}
	if h.version != Version {
		return Geometry{}, fmt.Errorf("layout version %d, this qrun reads version %d: %w", h.version, Version, ErrCorrupt)
	}
	if h.headerSize != HeaderSize {
		return Geometry{}, fmt.Errorf("header size %d, want %d: %w", h.headerSize, HeaderSize, ErrCorrupt)
	}
	g := Geometry{SlotSize: int(h.slotSize), Capacity: int(h.capacity), Mode: Mode(h.mode)}
	if err := g.Validate(); err != nil {
		return Geometry{}, fmt.Errorf("header geometry: %w (%w)", err, ErrCorrupt)
	}
	if int(h.stride) != g.Stride() {
		return Geometry{}, fmt.Errorf("slot stride %d, want %d for slot size %d: %w", h.stride, g.Stride(), g.SlotSize, ErrCorrupt)
	}
	if int64(len(mem)) != g.Size() {
		return Geometry{}, fmt.Errorf("segment is %d bytes, its header describes %d (%d slots of stride %d): %w", len(mem), g.Size(), g.Capacity, g.Stride(), ErrCorrupt)
	}
	return g, nil
}

func newRing(path string, g Geometry, opts Options, mem []byte) *Ring {
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = DefaultSendTimeout
	}
	h := (*header)(unsafe.Pointer(&mem[0]))
	return &Ring{
		path: path, geo: g, opts: opts, mem: mem, hdr: h,
		slots:  unsafe.Pointer(&mem[HeaderSize]),
		stride: uintptr(g.Stride()),
		mask:   uint64(g.Capacity - 1),
		cap:    uint64(g.Capacity),
		nonce:  h.nonce,
	}
}

// Delete removes the segment at path. Processes that have it mapped keep
// their mapping until they close it; new opens fail.
func Delete(path string) error {
	if err := ValidateName(filepath.Base(path)); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("ring: delete %s: %w", path, err)
	}
	return nil
}

// Close unmaps the segment after waking this process's sleepers and
// waiting for calls in progress. The segment itself stays (see Delete).
func (r *Ring) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.wakeAll()
	r.life.Lock()
	defer r.life.Unlock()
	mem := r.mem
	r.mem, r.hdr, r.slots = nil, nil, nil
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("ring: close %s: %w", r.path, err)
	}
	return nil
}

// enter guards the mapping for one operation; leave ends it.
func (r *Ring) enter() error {
	r.life.RLock()
	if r.closed.Load() {
		r.life.RUnlock()
		return fmt.Errorf("ring %s: %w", r.path, ErrClosed)
	}
	return nil
}

func (r *Ring) leave() { r.life.RUnlock() }

// Path is the segment's file.
func (r *Ring) Path() string { return r.path }

// Geometry is the segment's shape.
func (r *Ring) Geometry() Geometry { return r.geo }

// Nonce is the random number chosen when the segment was created.
func (r *Ring) Nonce() uint64 { return r.nonce }

// Stats are a ring's shared counters at one moment.
type Stats struct {
	// Len is the number of positions claimed and not yet consumed (it
	// includes records being written).
	Len int64
	// Published counts records published since creation.
	Published uint64
	// Overwritten counts records a cyclic producer overwrote unread.
	Overwritten uint64
	// Skipped counts claimed writes the stall rule skipped.
	Skipped uint64
	// Abandoned counts claimed reads the stall rule released.
	Abandoned uint64
	// Sleepers is the number of consumers, in every process, asleep in
	// WaitData at this moment: what a test waits on to know that
	// consumers are idle rather than guessing how long start-up takes.
	Sleepers uint32
}

// Stats reads the shared counters.
func (r *Ring) Stats() (Stats, error) {
	if err := r.enter(); err != nil {
		return Stats{}, err
	}
	defer r.leave()
	h := r.hdr
	head := h.head.Load()
	tail := h.tail.Load()
	n := int64(tail - head)
	if tail < head {
		n = 0
	}
	return Stats{
		Len: min(n, int64(r.cap)), Published: h.published.Load(),
		Overwritten: h.overwritten.Load(), Skipped: h.skipped.Load(), Abandoned: h.abandoned.Load(),
		Sleepers: h.dataWaiters.Load(),
	}, nil
}

func (r *Ring) slot(pos uint64) *slotHeader {
	return (*slotHeader)(unsafe.Add(r.slots, uintptr(pos&r.mask)*r.stride))
}

func (r *Ring) slotData(s *slotHeader) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(s), SlotHeaderSize)), r.geo.SlotSize)
}
