package memory

import "sort"

// seqLog lists a queue's records in seq order, so that PeekPage finds where
// its cursor points by binary search and reads only its page: walking the
// whole queue for every page would make a scan quadratic in the queue's
// length. Entries are appended at enqueue (seq only grows, so the list stays
// sorted) and never removed one by one, which would cost the hot path a
// search: an entry whose record has left the queue (released, perhaps
// recycled under a new seq) is stale, skipped by readers and dropped when
// stale entries make up half the list. Appending and that amortised
// compaction cost O(1) a message and allocate nothing once the list has
// grown to the queue's size.
type seqLog struct {
	e []seqEntry
}

type seqEntry struct {
	seq uint64
	r   *record
}

// live reports whether the entry's record is still the one it was made
// for and still in the queue.
func (x seqEntry) live() bool { return x.r.seq == x.seq && x.r.state != stateFree }

// add appends r, which has just been given the highest seq.
func (l *seqLog) add(r *record) { l.e = append(l.e, seqEntry{seq: r.seq, r: r}) }

// minCompact is the list length below which trim never compacts: a short
// list costs little to skip through.
const minCompact = 64

// trim drops the stale entries once they are at least half the list,
// depth being the records in the queue; it keeps the order.
func (l *seqLog) trim(depth int) {
	if len(l.e) < minCompact || len(l.e) < 2*depth {
		return
	}
	n := 0
	for _, x := range l.e {
		if x.live() {
			l.e[n] = x
			n++
		}
	}
	clear(l.e[n:]) // drop the references to recycled records
	l.e = l.e[:n]
	if cap(l.e) > 4*minCompact && cap(l.e) > 4*n {
		// A burst drained: give the memory back as a drained ring does.
		l.e = append(make([]seqEntry, 0, 2*n), l.e...)
	}
}

// after returns the index of the first entry with a seq above seq.
func (l *seqLog) after(seq uint64) int {
	return sort.Search(len(l.e), func(i int) bool { return l.e[i].seq > seq })
}
