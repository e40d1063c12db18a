package shm

import (
	"time"

	"github.com/qrun-dev/qrun/engines"
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
	msg      engines.Message
	enq      time.Time // first enqueue
	reason   string    // dead-letter reason, while a move is pending
	due      int64     // engine clock: visible time (delayed) or lease deadline (leased)
	expires  int64     // engine clock TTL deadline while never delivered; 0: none
	token    uint64    // lease generation, never reset
	idx      int32     // position in its heap
	attempt  int32
	failures int32
	state    uint8
	kind     uint8 // due action while delayed
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

// dueHeap is an indexed min-heap of records by due time, so removing or
// re-keying one record (an ack, an extend) is O(log n).
type dueHeap []*record

func (h *dueHeap) push(r *record) {
	r.idx = int32(len(*h))
	*h = append(*h, r)
	h.up(int(r.idx))
}

func (h dueHeap) top() *record { return h[0] }

func (h *dueHeap) remove(i int) *record {
	s := *h
	n := len(s) - 1
	r := s[i]
	if i != n {
		s[i] = s[n]
		s[i].idx = int32(i)
	}
	s[n] = nil
	*h = s[:n]
	if i != n {
		h.fix(i)
	}
	r.idx = -1
	return r
}

func (h dueHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h dueHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].due <= h[i].due {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h dueHeap) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		c := l
		if r := l + 1; r < len(h) && h[r].due < h[l].due {
			c = r
		}
		if h[i].due <= h[c].due {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}

func (h dueHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = int32(i)
	h[j].idx = int32(j)
}
