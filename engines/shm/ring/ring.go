// Package ring is a bounded multi-producer multi-consumer queue of fixed-size
// slots in a POSIX shared-memory segment (a file under /dev/shm, mapped
// shared), usable at once by any number of goroutines and processes, with
// no lock that a dead process could hold.
//
// # Design
//
// It is Dmitry Vyukov's bounded MPMC queue laid out in shared memory: a
// producer claims a position by advancing the shared tail with a
// compare-and-swap, writes the slot, then publishes it by moving the slot's
// sequence word; a consumer claims by advancing the head the same way,
// copies the slot, then releases it for the next lap. No step holds anything
// another process waits on except for the few instructions between a claim
// and its publish or release, and for that window there is a recovery rule
// (below), so a process killed at any instant cannot wedge the others.
//
// Every transition of a slot is a compare-and-swap on its sequence word, so
// a consumer validates its copy seqlock-style: the release succeeds only if
// nobody took the slot away while it copied. That is what makes cyclic mode
// safe: a producer that overwrites the oldest message while a consumer is
// copying it makes that consumer's release fail, and the consumer discards
// its (possibly torn) copy instead of delivering it. The overwrite is
// counted once, by the producer whose swap succeeded.
//
// Waiting is a brief spin and then a futex (FUTEX_WAIT/FUTEX_WAKE without
// the private flag, so it works across processes) on a sequence word in the
// header: consumers sleep on the data word, blocked producers on the space
// word. A waker only makes the system call when the waiter count says
// someone sleeps, so a busy ring makes no system calls at all. Every sleep
// has a timeout, so a lost wake-up costs latency, never liveness.
//
// # Byte layout (version 1)
//
// All integers are little-endian; offsets are in bytes. The segment is a
// 4096-byte header followed by Capacity slots of SlotStride bytes each.
//
//	header
//	  0  [8]  magic "QRUNRING" (written last by the creator: until it reads
//	          correctly the segment is still being initialised)
//	  8  u32  layout version (1)
//	 12  u32  mode: 0 blocking, 1 cyclic
//	 16  u32  slot size: the largest record, in bytes
//	 20  u32  capacity: number of slots, a power of two
//	 24  u32  slot stride: 32 + slot size rounded up to a multiple of 64
//	 28  u32  header size (4096)
//	 32  u64  nonce: random, chosen at creation (IDs use it)
//	 40  i64  creation time, Unix nanoseconds
//	 64  u64  tail: the next position a producer claims
//	128  u64  head: the next position a consumer claims
//	192  u32  data futex word: incremented after every publish
//	196  u32  number of consumers sleeping on the data word
//	256  u32  space futex word: incremented after every release
//	260  u32  number of producers sleeping on the space word
//	320  u64  records published since creation
//	328  u64  records overwritten (cyclic mode)
//	336  u64  claimed writes skipped by the stall rule
//	344  u64  claimed reads abandoned by the stall rule
//
//	slot i, at 4096 + i*stride
//	  0  u64  sequence: 2*p while the slot is free for position p,
//	          2*p+1 once the record for position p is published
//	  8  u32  record length in bytes (at most the slot size)
//	 12  u32  flags (bit 0: the record is a qrun envelope; see package shm)
//	 16  i64  enqueue time, Unix nanoseconds (0: unknown)
//	 24  i64  not visible before, Unix nanoseconds (0: at once)
//	 32  ...  record bytes
//
// Positions start at 0 and only grow; position p lives in slot p mod
// Capacity. A fresh segment has every slot i free for position i.
//
// # Producing from another program
//
//  1. Load tail (p) and the sequence s of slot p mod Capacity.
//  2. If s == 2*p, compare-and-swap tail from p to p+1; if that fails, go to 1.
//     If s < 2*p the ring is full (wait, or overwrite in cyclic mode as
//     Push does); if s > 2*p another producer got there first: go to 1.
//  3. Write length, flags, times and record bytes.
//  4. Compare-and-swap the sequence from 2*p to 2*p+1. If it fails, the stall
//     rule skipped the slot: the record was not delivered; produce it again.
//  5. Atomically add the number published to the published counter (it
//     only feeds statistics), atomically increment the data futex word and,
//     if the sleeper count is not zero, FUTEX_WAKE it (not private), all.
//
// Consuming is the mirror image: the slot at head h is ready when its
// sequence is 2*h+1; claim by compare-and-swap of head from h to h+1, copy,
// then compare-and-swap the sequence from 2*h+1 to 2*(h+Capacity), and
// discard the copy if that fails. Increment the space word and wake sleepers.
//
// # Stall rule (recovery from dead processes)
//
// A process killed between claiming a position and publishing (or releasing)
// it leaves that slot half-done, and FIFO order would wedge everyone behind
// it. So when the slot at the head has been claimed but unpublished for
// longer than the stall timeout (one second by default; a live producer
// needs microseconds), a consumer skips it: it claims the head and moves the
// sequence straight to the next lap. Symmetrically, a blocking producer
// facing a slot whose read was claimed but not released for that long
// releases it itself. Each is counted in the header. A producer that was
// merely stopped (SIGSTOP, a debugger) that long finds its publish refused
// and produces the record again; only if it was stopped in the middle of
// copying its bytes can its late writes land in the slot's next record.
package ring

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Layout constants (see the package doc).
const (
	// Magic is the first 8 bytes of a ring segment.
	Magic = "QRUNRING"
	// Version is the layout version this package reads and writes.
	Version = 1
	// HeaderSize is the size of the segment header.
	HeaderSize = 4096
	// SlotHeaderSize is the size of a slot's header, before its record.
	SlotHeaderSize = 32
	// FlagEnvelope marks a record holding a qrun envelope rather than a bare body.
	FlagEnvelope = 1
)

// Limits on geometry, so a typo cannot ask for a terabyte.
const (
	MaxSlotSize = 64 << 20
	MaxCapacity = 1 << 24
	// MaxSegment bounds the whole mapping.
	MaxSegment = 16 << 30
	// NameMax is the longest segment file name (NAME_MAX).
	NameMax = 255
)

// DefaultDir is where Linux keeps POSIX shared memory (what shm_open uses).
const DefaultDir = "/dev/shm"

// Mode says what a producer does when the ring is full.
type Mode uint32

// Modes.
const (
	// Blocking makes a producer wait, up to its deadline, for space.
	Blocking Mode = 0
	// Cyclic makes a producer overwrite the oldest record, counting it.
	Cyclic Mode = 1
)

// String names the mode as the configuration spells it.
func (m Mode) String() string {
	switch m {
	case Blocking:
		return "blocking"
	case Cyclic:
		return "cyclic"
	}
	return fmt.Sprintf("mode(%d)", uint32(m))
}

// ParseMode reads a mode as the configuration spells it.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "blocking":
		return Blocking, nil
	case "cyclic":
		return Cyclic, nil
	}
	return 0, fmt.Errorf("ring: mode %q: want \"blocking\" or \"cyclic\": %w", s, ErrGeometry)
}

// Geometry is a ring's fixed shape, chosen at creation.
type Geometry struct {
	// SlotSize is the largest record a slot holds, in bytes.
	SlotSize int
	// Capacity is the number of slots, a power of two.
	Capacity int
	// Mode is what producers do when the ring is full.
	Mode Mode
}

// Stride is the distance between slots.
func (g Geometry) Stride() int { return (SlotHeaderSize + g.SlotSize + 63) &^ 63 }

// Size is the size of the whole segment.
func (g Geometry) Size() int64 { return HeaderSize + int64(g.Capacity)*int64(g.Stride()) }

// Validate checks the geometry against the limits.
func (g Geometry) Validate() error {
	switch {
	case g.SlotSize < 1 || g.SlotSize > MaxSlotSize:
		return fmt.Errorf("ring: slot size %d: want 1 to %d bytes: %w", g.SlotSize, MaxSlotSize, ErrGeometry)
	case g.Capacity < 2 || g.Capacity > MaxCapacity || bits.OnesCount(uint(g.Capacity)) != 1:
		return fmt.Errorf("ring: capacity %d: want a power of two from 2 to %d: %w", g.Capacity, MaxCapacity, ErrGeometry)
	case g.Mode != Blocking && g.Mode != Cyclic:
		return fmt.Errorf("ring: %v: %w", g.Mode, ErrGeometry)
	case g.Size() > MaxSegment:
		return fmt.Errorf("ring: %d slots of %d bytes need %d bytes, over the %d limit: %w", g.Capacity, g.SlotSize, g.Size(), int64(MaxSegment), ErrGeometry)
	}
	return nil
}

// Errors. Callers tell them apart with errors.Is.
var (
	// ErrGeometry reports an invalid geometry, or one that differs from the
	// segment's.
	ErrGeometry = errors.New("ring: bad geometry")
	// ErrName reports a segment name that cannot be stored exactly.
	ErrName = errors.New("ring: bad segment name")
	// ErrCorrupt reports a segment whose header is not a valid ring.
	ErrCorrupt = errors.New("ring: not a valid ring segment")
	// ErrFull reports a blocking ring that stayed full until the deadline.
	ErrFull = errors.New("ring: full")
	// ErrTooLarge reports a record larger than the slot size.
	ErrTooLarge = errors.New("ring: record larger than slot")
	// ErrClosed reports use of a closed Ring.
	ErrClosed = errors.New("ring: closed")
)

// ValidateName checks that name can be a segment file name as it is: not
// empty, no slash or NUL, not "." or "..", at most NameMax bytes. It never
// shortens or rewrites a name.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("ring: empty segment name: %w", ErrName)
	case len(name) > NameMax:
		return fmt.Errorf("ring: segment name %.40q... is %d bytes, the limit is %d: %w", name, len(name), NameMax, ErrName)
	case name == "." || name == "..":
		return fmt.Errorf("ring: segment name %q: %w", name, ErrName)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("ring: segment name %q contains '/' or NUL: %w", name, ErrName)
	}
	return nil
}

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
