package disk

import (
	"github.com/qrun-dev/qrun/engines/internal/idxheap"
	"github.com/qrun-dev/qrun/engines/internal/lease"
)

// Record states. A record is in exactly one place at a time, and the state
// says which, so a stale ticket or a double settle is recognised without
// searching.
const (
	stateGone    uint8 = iota // settled, expired or moved: no longer in the queue
	stateParked               // waiting behind its ordering key's active message
	stateReady                // in the ready heap
	stateDelayed              // in the delayed heap
	stateLeased               // in the lease heap
)

// record is the in-memory index entry of one stored message: what
// scheduling needs, never the body (which stays on disk and is read when
// the message is leased), so a deep backlog costs tens of bytes a message.
type record struct {
	seq uint64 // bbolt key; also the FIFO tie-break
	lease.Lease
	due    int64 // visible time (delayed, parked) or lease deadline (leased)
	expire int64 // TTL deadline while never delivered; 0 = none
	enq    int64
	idx    int32 // position in whichever heap holds it
	prio   uint8
	state  uint8
	id     string    // message ID, for Redrive by ID
	okey   string    // ordering key
	source string    // dead-letter source queue, for Redrive
	ks     *keyState // ordering key this record holds or waits for
}

// heap is an indexed heap of records (see idxheap): each record keeps its
// position, so a settle or an extend is O(log n) without a search.
type heap = idxheap.Heap[*record]

// readyKey orders ready records by priority, highest first, then in
// enqueue order.
func (r *record) readyKey() idxheap.Key { return idxheap.Key{Major: -int64(r.prio), Minor: r.seq} }

// dueKey orders records by due time (visible time or lease deadline), then
// in enqueue order.
func (r *record) dueKey() idxheap.Key { return idxheap.Key{Major: r.due, Minor: r.seq} }

// keyState serialises one ordering key of an ordered queue: active is the
// single message of the key that may be ready, delayed or leased; the rest
// wait in parked, in enqueue order.
type keyState struct {
	key    string
	active *record
	parked []*record
}

// dedupEntry remembers a DedupID until its window closes, with the ID of the
// message it admitted so a duplicate's caller learns that ID.
type dedupEntry struct {
	id     string
	expire int64
}

// dedupMark queues a DedupID for pruning; marks are appended in expiry
// order (the window is fixed), so pruning looks only at the front.
type dedupMark struct {
	key    string
	expire int64
}
