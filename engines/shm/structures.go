//go:build linux

package shm

import (
	"github.com/qrun-dev/qrun/engines/internal/idxheap"
	"github.com/qrun-dev/qrun/engines/internal/lease"
)

// Record states: a record is in exactly one place, and the state says
// which, so a stale ticket or a double settle is recognised at once.
const (
	stateFree    uint8 = iota
	stateReady         // in the local ready FIFO
	stateDelayed       // in the delayed heap
	stateLeased        // in the lease heap
	stateMoving        // being moved to the dead-letter queue, outside the lock
)

// What a delayed record does when it comes due.
const (
	dueRedeliver  uint8 = iota // to the local ready FIFO (nack/requeue delay, delayed foreign record)
	dueEnqueue                 // into the ring (an enqueue with Delay)
	dueDeadLetter              // retry a dead-letter move that failed
)

// record is this process's copy of a message it holds outside the ring:
// leased, waiting to be redelivered, or delayed.
type record struct {
	// raw is the message as the ring holds it (a bare body, or an
	// envelope when flags says so), aliasing the received batch's buffer.
	// Keeping these bytes rather than a decoded Message keeps the record to
	// two pointers, which matters: every pointer written costs a GC write
	// barrier while the collector runs, and there are several per message.
	raw     []byte
	id      string
	flags   uint32
	enq     int64  // first enqueue, Unix nanoseconds
	reason  string // dead-letter reason, while a move is pending
	due     int64  // engine clock: visible time (delayed) or lease deadline (leased)
	expires int64  // engine clock TTL deadline while never delivered; 0: none
	lease.Lease
	lseq  uint64 // lease-set entry generation (see leaseSet)
	key   uint64 // PeekPage scan order: ring position + 1, or localKeys + n for one never in the ring
	idx   int32  // position in its heap
	state uint8
	kind  uint8 // due action while delayed
}

// fifo is a queue of records with a power-of-two buffer, kept across
// drains so a steady flow allocates nothing.
type fifo struct {
	buf  []*record
	head int
	n    int
}

func (f *fifo) push(r *record) {
	if f.n == len(f.buf) {
		size := max(16, 2*len(f.buf))
		nb := make([]*record, size)
		for i := 0; i < f.n; i++ {
			nb[i] = f.buf[(f.head+i)&(len(f.buf)-1)]
		}
		f.buf, f.head = nb, 0
	}
	f.buf[(f.head+f.n)&(len(f.buf)-1)] = r
	f.n++
}

func (f *fifo) pop() *record {
	r := f.buf[f.head]
	f.buf[f.head] = nil
	f.head = (f.head + 1) & (len(f.buf) - 1)
	f.n--
	return r
}

// dueHeap is an indexed heap of records by due time (see idxheap), so
// removing or re-keying one record (an ack, an extend) is O(log n).
type dueHeap = idxheap.Heap[*record]

// dueKey is r's place in a dueHeap.
func (r *record) dueKey() idxheap.Key { return idxheap.Key{Major: r.due} }

// leaseSet holds the leased records. Leases are taken with deadlines that
// almost always grow (now plus a fixed visibility timeout) and are mostly
// settled in the order they were taken, so they go in a FIFO where adding
// and settling the oldest is O(1); the rest (an Extend, a lease shorter
// than the one before it) go in a heap. A settled record leaves a stale
// FIFO entry, recognised by its lease sequence, which is dropped when it
// reaches the head, or by a compaction once stale entries are the majority.
type leaseSet struct {
	fifo []leaseEntry // ring buffer, power-of-two length
	head int
	n    int
	heap dueHeap
	live int // leased records, in either part
}

type leaseEntry struct {
	r   *record
	seq uint64 // r.lseq when the entry was made
	due int64
}

func (e leaseEntry) valid() bool {
	return e.r.state == stateLeased && e.r.lseq == e.seq && e.r.idx < 0
}

func (s *leaseSet) len() int { return s.live }

func (s *leaseSet) add(r *record) {
	r.lseq++
	s.live++
	if s.n > 0 && s.at(s.n-1).due > r.due {
		s.heap.Push(r, &r.idx, r.dueKey())
		return
	}
	r.idx = -1
	if s.n == len(s.fifo) {
		s.grow()
	}
	s.fifo[(s.head+s.n)&(len(s.fifo)-1)] = leaseEntry{r: r, seq: r.lseq, due: r.due}
	s.n++
}

// each calls f with every leased record.
func (s *leaseSet) each(f func(*record)) {
	for i := 0; i < s.n; i++ {
		if e := s.at(i); e.valid() {
			f(e.r)
		}
	}
	for r := range s.heap.All() {
		f(r)
	}
}

func (s *leaseSet) at(i int) *leaseEntry { return &s.fifo[(s.head+i)&(len(s.fifo)-1)] }

// grow doubles the FIFO, or compacts it instead when most entries are stale.
func (s *leaseSet) grow() {
	valid := 0
	for i := 0; i < s.n; i++ {
		if s.at(i).valid() {
			valid++
		}
	}
	size := len(s.fifo)
	if size == 0 {
		size = 64
	} else if valid > size/2 {
		size *= 2
	}
	nf := make([]leaseEntry, size)
	j := 0
	for i := 0; i < s.n; i++ {
		if e := *s.at(i); e.valid() {
			nf[j] = e
			j++
		}
	}
	s.fifo, s.head, s.n = nf, 0, j
}

// remove takes a leased record out (it must be leased).
func (s *leaseSet) remove(r *record) {
	s.live--
	if r.idx >= 0 {
		s.heap.Remove(int(r.idx))
		return
	}
	r.lseq++ // its FIFO entry is stale from now on
	s.trim()
}

// trim drops stale entries at the head of the FIFO.
func (s *leaseSet) trim() {
	for s.n > 0 && !s.fifo[s.head].valid() {
		s.fifo[s.head] = leaseEntry{}
		s.head = (s.head + 1) & (len(s.fifo) - 1)
		s.n--
	}
}

// setDue moves a leased record's deadline.
func (s *leaseSet) setDue(r *record, due int64) {
	if r.idx >= 0 {
		r.due = due
		s.heap.Fix(int(r.idx), r.dueKey())
		return
	}
	r.lseq++
	s.trim()
	r.due = due
	s.heap.Push(r, &r.idx, r.dueKey())
}

// next is the earliest deadline, if any.
func (s *leaseSet) next() (int64, bool) {
	s.trim()
	at, ok := int64(0), false
	if s.n > 0 {
		at, ok = s.fifo[s.head].due, true
	}
	if top := s.heap.Peek(); top != nil && (!ok || top.due < at) {
		at, ok = top.due, true
	}
	return at, ok
}

// popExpired removes and returns one record whose deadline is not after now.
func (s *leaseSet) popExpired(now int64) *record {
	s.trim()
	top := s.heap.Peek()
	if s.n > 0 && s.fifo[s.head].due <= now && (top == nil || s.fifo[s.head].due <= top.due) {
		r := s.fifo[s.head].r
		s.remove(r)
		return r
	}
	if top != nil && top.due <= now {
		s.remove(top)
		return top
	}
	return nil
}
