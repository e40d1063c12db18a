//go:build linux

package posixmq

import (
	"strconv"
	"unsafe"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/idxheap"
	"github.com/qrun-dev/qrun/engines/internal/lease"
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

	seq uint64 // per-queue order: FIFO tie-break
	lease.Lease
	enq    int64  // first enqueue, Unix nanoseconds (it crosses processes in the frame)
	expire int64  // TTL deadline, Unix nanoseconds; 0 = none
	due    int64  // heap key on the engine clock: visible time (delayed) or lease deadline (leased)
	idx    int32  // position in the heap that holds the record
	kprio  uint32 // kernel priority, 0..mq.PrioMax-1
	state  uint8
	// outbound marks a delayed record that is a new message for the kernel
	// queue (an enqueue with a delay), as opposed to a redelivery, which
	// stays in this process.
	outbound bool
	// framed forces the envelope even on a raw-format engine (dead letters
	// carry their reason and source); raw is a message that arrived without
	// one and goes back without one on a raw-format engine.
	framed, raw bool
}

// heap is an indexed heap of records (see idxheap): each record keeps its
// position, so a settle or an extend is O(log n) without a search.
type heap = idxheap.Heap[*record]

// prioKey orders by kernel priority, highest first, then FIFO.
func (r *record) prioKey() idxheap.Key { return idxheap.Key{Major: -int64(r.kprio), Minor: r.seq} }

// dueKey orders by due time (visible time or lease deadline), then FIFO.
func (r *record) dueKey() idxheap.Key { return idxheap.Key{Major: r.due, Minor: r.seq} }

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
