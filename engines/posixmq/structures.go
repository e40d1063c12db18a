//go:build linux

package posixmq

import (
	"strconv"
	"unsafe"

	"github.com/qrun-dev/qrun/engines"
)

// Record states: a record is in exactly one place, and the state says
// which, so a stale ticket or a double settle is recognised without a search.
const (
	stateFree    uint8 = iota // recycled or dropped
	stateReady                // in ready: a redelivery waiting for a receiver of this process
	stateDelayed              // in delayed: not visible yet
	stateLeased               // in leases: held by a receiver
	stateOutbox               // in outbox: bound for the kernel queue, which was full
)

// record is one message the engine holds in process memory: leased,
// waiting for a redelivery, delayed, or waiting for room in the kernel.
// Messages in the kernel queue have no record; that is what makes them
// survive a crash of qrun.
type record struct {
	msg engines.Message

	seq      uint64 // per-queue order: FIFO tie-break
	token    uint64 // lease generation; never reset, so a recycled record rejects stale tickets
	enq      int64  // first enqueue, Unix nanoseconds (it crosses processes in the frame)
	expire   int64  // TTL deadline, Unix nanoseconds; 0 = none
	due      int64  // heap key on the engine clock: visible time (delayed) or lease deadline (leased)
	idx      int32  // position in the heap that holds the record
	attempt  uint32 // deliveries so far
	failures uint32
	kprio    uint32 // kernel priority, 0..mq.PrioMax-1
	state    uint8
	// outbound marks a delayed record that is a new message for the kernel
	// queue (an enqueue with a delay), as opposed to a redelivery, which
	// stays in this process.
	outbound bool
	// framed forces the envelope even on a raw-format engine (dead letters
	// carry their reason and source); raw is a message that arrived without
	// one and goes back without one on a raw-format engine.
	framed, raw bool
}

// heap is an indexed binary heap of records. Each record keeps its index,
// so a settle or extend touches O(log n) entries instead of searching. The
// ordering is a field rather than an interface so the comparisons inline.
type heap struct {
	s []*record
	// byPrio orders by kernel priority (highest first), then FIFO; otherwise
	// by due time, then FIFO.
	byPrio bool
}

func (h *heap) len() int { return len(h.s) }

func (h *heap) less(a, b *record) bool {
	if h.byPrio {
		return a.kprio > b.kprio || (a.kprio == b.kprio && a.seq < b.seq)
	}
	return a.due < b.due || (a.due == b.due && a.seq < b.seq)
}

func (h *heap) peek() *record {
	if len(h.s) == 0 {
		return nil
	}
	return h.s[0]
}

func (h *heap) push(r *record) {
	r.idx = int32(len(h.s))
	h.s = append(h.s, r)
	h.up(int(r.idx))
}

func (h *heap) pop() *record { return h.remove(0) }

func (h *heap) remove(i int) *record {
	n := len(h.s) - 1
	r := h.s[i]
	if i != n {
		h.s[i] = h.s[n]
		h.s[i].idx = int32(i)
	}
	h.s[n] = nil
	h.s = h.s[:n]
	if i < n {
		h.fix(i)
	}
	r.idx = -1
	return r
}

func (h *heap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *heap) up(j int) {
	s := h.s
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(s[j], s[i]) {
			break
		}
		s[i], s[j] = s[j], s[i]
		s[i].idx, s[j].idx = int32(i), int32(j)
		j = i
	}
}

func (h *heap) down(i0 int) bool {
	s := h.s
	i, n := i0, len(s)
	for {
		j := 2*i + 1
		if j >= n || j < 0 {
			break
		}
		if j2 := j + 1; j2 < n && h.less(s[j2], s[j]) {
			j = j2
		}
		if !h.less(s[j], s[i]) {
			break
		}
		s[i], s[j] = s[j], s[i]
		s[i].idx, s[j].idx = int32(i), int32(j)
		i = j
	}
	return i > i0
}

// drain removes and returns every record, in no particular order.
func (h *heap) drain() []*record {
	s := h.s
	h.s = nil
	return s
}

// idArena formats message IDs into a shared block so that an ID costs no
// allocation of its own. The bytes behind a returned string are never
// written again, which is what makes unsafe.String sound here.
type idArena struct {
	buf []byte
}

const idArenaBlock = 4096

// format returns prefix followed by n in base 32.
func (a *idArena) format(prefix string, n uint64) string {
	if cap(a.buf)-len(a.buf) < maxIDLen {
		a.buf = make([]byte, 0, idArenaBlock)
	}
	start := len(a.buf)
	a.buf = append(a.buf, prefix...)
	a.buf = strconv.AppendUint(a.buf, n, 32)
	b := a.buf[start:]
	return unsafe.String(&b[0], len(b))
}

// bodyArena hands out message buffers carved from shared slabs, so that
// receiving a batch costs an allocation per slab rather than per message.
// Receiving straight into the slab saves the copy too: the kernel insists on
// a buffer as long as the queue's message size, which the free tail of the
// slab provides. A slab lives as long as any body cut from it.
type bodyArena struct {
	buf []byte
}

// slabSize is the slab length; queues whose message size exceeds a quarter
// of it receive into a scratch buffer and copy out instead.
const slabSize = 64 << 10

// space returns at least n bytes of free slab.
func (a *bodyArena) space(n int) []byte {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, slabSize)
	}
	return a.buf[len(a.buf):cap(a.buf)]
}

// commit takes the first n bytes of the free space for good.
func (a *bodyArena) commit(n int) []byte {
	l := len(a.buf)
	a.buf = a.buf[:l+n]
	return a.buf[l : l+n : l+n]
}
