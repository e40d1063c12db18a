package disk

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
	seq      uint64 // bbolt key; also the FIFO tie-break
	token    uint64 // lease generation: a stale ticket no longer matches
	due      int64  // visible time (delayed, parked) or lease deadline (leased)
	expire   int64  // TTL deadline while never delivered; 0 = none
	enq      int64
	attempt  int32
	failures int32
	idx      int32 // position in whichever heap holds it
	prio     uint8
	state    uint8
	id       string    // message ID, for Redrive by ID
	okey     string    // ordering key
	source   string    // dead-letter source queue, for Redrive
	ks       *keyState // ordering key this record holds or waits for
}

// heap is an indexed binary min-heap of records. Each record keeps its
// index so a settle or an extend is O(log n) without a search. byPrio
// orders the ready heap (highest priority first, then enqueue order); the
// others order by due time.
type heap struct {
	items  []*record
	byPrio bool
}

func (h *heap) less(a, b *record) bool {
	if h.byPrio {
		if a.prio != b.prio {
			return a.prio > b.prio
		}
		return a.seq < b.seq
	}
	return a.due < b.due || (a.due == b.due && a.seq < b.seq)
}

func (h *heap) len() int { return len(h.items) }

func (h *heap) peek() *record {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

func (h *heap) push(r *record) {
	r.idx = int32(len(h.items))
	h.items = append(h.items, r)
	h.up(int(r.idx))
}

func (h *heap) pop() *record { return h.remove(0) }

func (h *heap) remove(i int) *record {
	s := h.items
	n := len(s) - 1
	r := s[i]
	if i != n {
		s[i] = s[n]
		s[i].idx = int32(i)
	}
	s[n] = nil
	h.items = s[:n]
	if i < n {
		h.fix(i)
	}
	r.idx = -1
	// Give back the backing array of a drained heap, so one burst does not
	// pin its peak memory.
	if n == 0 && cap(s) > 4096 {
		h.items = nil
	}
	return r
}

func (h *heap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *heap) up(j int) {
	s := h.items
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
	s := h.items
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
