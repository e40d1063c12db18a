package memory

import (
	"math/bits"
	"strconv"
	"unsafe"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/idxheap"
	"github.com/qrun-dev/qrun/engines/internal/lease"
)

// Record states. A record is in exactly one place at a time, and the state
// says which, so a stale ticket or a double settle is recognised without
// searching any structure.
const (
	stateFree    uint8 = iota // on the free list, or dropped
	stateParked               // waiting behind its ordering key's active message
	stateReady                // in a priority ring
	stateDelayed              // in the delayed heap
	stateLeased               // in the lease heap
)

// record is the engine's copy of one message plus its delivery bookkeeping.
// Records are recycled through a per-queue free list; token is never reset, so
// a ticket taken before recycling can never match a later lease.
type record struct {
	msg engines.Message
	ks  *keyState // ordering key this record holds or waits for; nil when unordered

	seq uint64 // per-queue enqueue order: FIFO tie-break in the heaps
	lease.Lease
	enq    int64 // engine clock at first enqueue
	due    int64 // heap key: visible time (delayed, parked) or lease deadline (leased)
	expire int64 // TTL deadline while never delivered; 0 = none
	idx    int32 // position in whichever heap holds the record
	state  uint8
	// mstate is the message's per-message state (StateSettler): nil
	// when it has none. It lives on the record, so it survives nacks and
	// goes when the record is released (ack, dead letter, TTL, purge).
	mstate []byte
}

// ring is a FIFO of records with a power-of-two buffer. It keeps its buffer
// when it drains so a steady flow of messages allocates nothing.
type ring struct {
	buf  []*record
	head int
	n    int
}

// shrinkAbove is the buffer size a drained ring gives back, so one burst does
// not pin its peak memory for the life of the queue.
const shrinkAbove = 1 << 12

func (r *ring) push(x *record) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = x
	r.n++
}

func (r *ring) grow() {
	size := 2 * len(r.buf)
	if size == 0 {
		size = 16
	}
	nb := make([]*record, size)
	mask := len(r.buf) - 1
	for i := 0; i < r.n; i++ {
		nb[i] = r.buf[(r.head+i)&mask]
	}
	r.buf, r.head = nb, 0
}

func (r *ring) pop() *record {
	x := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if r.n == 0 {
		r.head = 0
		if len(r.buf) > shrinkAbove {
			r.buf = nil
		}
	}
	return x
}

// readySet holds visible messages as one FIFO ring per priority level, with a
// bitmap of the non-empty levels. Push and pop are O(1) regardless of depth,
// which a heap over all messages would not be.
type readySet struct {
	levels [engines.MaxPriority + 1]ring
	mask   [4]uint64
}

func (s *readySet) push(r *record) {
	p := r.msg.Priority
	s.levels[p].push(r)
	s.mask[p>>6] |= 1 << (p & 63)
}

// pop returns the oldest record of the highest non-empty priority, or nil.
func (s *readySet) pop() *record {
	for i := len(s.mask) - 1; i >= 0; i-- {
		m := s.mask[i]
		if m == 0 {
			continue
		}
		bit := 63 - bits.LeadingZeros64(m)
		l := &s.levels[i<<6|bit]
		r := l.pop()
		if l.n == 0 {
			s.mask[i] &^= 1 << uint(bit)
		}
		return r
	}
	return nil
}

func (s *readySet) empty() bool {
	return s.mask[0]|s.mask[1]|s.mask[2]|s.mask[3] == 0
}

// dueHeap is an indexed heap of records by (due, seq) (see idxheap): each
// record keeps its position, so an ack or an extend is O(log n) without a
// search.
type dueHeap = idxheap.Heap[*record]

// dueKey is r's place in a dueHeap.
func (r *record) dueKey() idxheap.Key { return idxheap.Key{Major: r.due, Minor: r.seq} }

// idArena formats message IDs into a shared byte block so that assigning an
// ID costs no allocation of its own: one 4 KiB block serves hundreds of IDs.
// Base 32 because strconv formats power-of-two bases with shifts, not
// divisions, and the IDs stay short.
// The bytes behind a returned string are never written again, which is what
// makes unsafe.String sound here.
type idArena struct {
	buf []byte
}

const (
	idArenaBlock = 4096
	maxIDLen     = 13 // base-32 digits of the largest uint64
)

func (a *idArena) format(n uint64) string {
	if cap(a.buf)-len(a.buf) < maxIDLen {
		a.buf = make([]byte, 0, idArenaBlock)
	}
	start := len(a.buf)
	a.buf = strconv.AppendUint(a.buf, n, 32)
	b := a.buf[start:]
	return unsafe.String(&b[0], len(b))
}

// keyState serialises one ordering key of an ordered queue: active is the
// single message of the key that may be ready, delayed or leased; the rest
// wait in parked, in enqueue order.
type keyState struct {
	key    string
	active *record
	parked ring
}

// dedupEntry remembers a DedupID until its window closes, and the ID of the
// message it admitted so a duplicate's caller learns that ID.
type dedupEntry struct {
	id     string
	expire int64
}

// dedupMark queues a DedupID for pruning; marks are appended in expiry order
// because the window is fixed, so pruning only ever looks at the front.
type dedupMark struct {
	key    string
	expire int64
}

// deadMsg is a message on its way to a dead-letter queue. Moves are collected
// under the source queue's lock and performed after it is released, so two
// queues dead-lettering into each other can never deadlock.
type deadMsg struct {
	target string
	msg    engines.Message
	enq    int64
	seq    uint64 // order in the source queue (redrive keeps it)
	// attempt and failures are the dead letter's history in its source
	// queue, which it keeps; a redrive starts again from zero.
	attempt, failures int32
}
