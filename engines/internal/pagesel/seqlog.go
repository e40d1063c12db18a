package pagesel

import "sort"

// Log lists a queue's records in sequence order, so that PeekPage finds
// where its cursor points by binary search and reads only its page:
// walking the whole queue for every page makes a scan quadratic in the
// queue's length. Entries are added as records enter the queue and never
// removed one by one, which would cost the hot path a search: an entry
// whose record has left the queue (settled, moved, perhaps recycled under
// a new sequence number) is stale, skipped by readers and dropped by Trim
// once stale entries make up half the list. Adding and that amortised
// compaction cost O(1) a message and allocate nothing once the list has
// grown to the queue's size.
//
// A Log is not safe for concurrent use: the queue's lock guards it.
type Log[R any] struct {
	e []Entry[R]
}

// Entry is a record and the sequence number it was listed under: a
// record whose number has changed since (recycled) is stale.
type Entry[R any] struct {
	Seq uint64
	R   R
}

// Add lists r under seq. Numbers mostly arrive in increasing order; one
// that arrives behind a higher one (two commits completing out of the
// order their numbers were drawn in) is moved back into place, which
// costs the distance it moves.
func (l *Log[R]) Add(seq uint64, r R) {
	l.e = append(l.e, Entry[R]{Seq: seq, R: r})
	for i := len(l.e) - 1; i > 0 && l.e[i-1].Seq > seq; i-- {
		l.e[i-1], l.e[i] = l.e[i], l.e[i-1]
	}
}

// minCompact is the list length below which Trim never compacts: a short
// list costs little to skip through.
const minCompact = 64

// Trim drops the stale entries once they are at least half the list,
// live telling them apart and depth being how many records the queue
// holds; it keeps the order, and gives memory back after a burst drained.
func (l *Log[R]) Trim(depth int, live func(Entry[R]) bool) {
	if len(l.e) < minCompact || len(l.e) < 2*depth {
		return
	}
	n := 0
	for _, x := range l.e {
		if live(x) {
			l.e[n] = x
			n++
		}
	}
	clear(l.e[n:]) // drop the references to records that left
	l.e = l.e[:n]
	if cap(l.e) > 4*minCompact && cap(l.e) > 4*n {
		l.e = append(make([]Entry[R], 0, 2*n), l.e...)
	}
}

// After returns the entries with a sequence number above seq, in order,
// stale ones included: the caller skips those.
func (l *Log[R]) After(seq uint64) []Entry[R] {
	return l.e[sort.Search(len(l.e), func(i int) bool { return l.e[i].Seq > seq }):]
}

// Len is how many entries the list holds, stale ones included.
func (l *Log[R]) Len() int { return len(l.e) }
