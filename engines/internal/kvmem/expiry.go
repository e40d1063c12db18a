package kvmem

// Expiry index. A sweep must find the expired keys without visiting the
// live ones: a store of a million keys, few or none with a TTL, would
// otherwise pay a scan of the whole map every sweepEvery commits, which is
// O(keys) a write, not O(1) (measured: a tenth of the CPU of a
// transactional delivery on disk once the store held 100,000 keys).
//
// deadlines is a binary min-heap of (deadline, key) with lazy deletion: a
// key that is deleted, or written again with another deadline, leaves its
// old element behind, and the sweep skips an element whose key no longer
// has that deadline. So that stale elements cannot pile up (a key written
// with a TTL a million times), the heap is compacted once it holds more
// than twice the live deadlines plus compactSlack: the compaction costs
// O(heap) and comes after at least as many writes, so each write pays
// O(log n) amortised.

// deadline is one element of the expiry heap.
type deadline struct {
	at  int64 // Entry.Expires
	key string
}

// compactSlack keeps a small store from compacting on every write.
const compactSlack = 64

// setLocked stores e under key, keeping the expiry index in step.
func (s *Store) setLocked(key string, e Entry) {
	if s.timed == 0 && e.Expires == 0 {
		s.m[key] = e // no key has a deadline: nothing to keep in step
		return
	}
	old, had := s.m[key]
	if had && old.Expires != 0 {
		s.timed--
	}
	s.m[key] = e
	if e.Expires == 0 {
		return
	}
	s.timed++
	if had && old.Expires == e.Expires {
		return // its element is in the heap already (an increment keeps the deadline)
	}
	s.pushDeadline(deadline{at: e.Expires, key: key})
}

// deleteLocked removes key, keeping the expiry index in step (its heap
// element, if any, goes stale).
func (s *Store) deleteLocked(key string) {
	if s.timed == 0 {
		delete(s.m, key)
		return
	}
	if old, had := s.m[key]; had {
		if old.Expires != 0 {
			s.timed--
		}
		delete(s.m, key)
	}
}

// live reports whether d is still key's deadline.
func (s *Store) live(d deadline) bool {
	e, ok := s.m[d.key]
	return ok && e.Expires == d.at
}

func (s *Store) pushDeadline(d deadline) {
	if len(s.deadlines) >= 2*s.timed+compactSlack {
		s.compactDeadlines()
	}
	s.deadlines = append(s.deadlines, d)
	h := s.deadlines
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			break
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

// popDeadline removes and returns the earliest element; the heap is not
// empty.
func (s *Store) popDeadline() deadline {
	h := s.deadlines
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = deadline{}
	s.deadlines = h[:n]
	s.down(0)
	return top
}

func (s *Store) down(i int) {
	h := s.deadlines
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].at < h[l].at {
			m = r
		}
		if h[i].at <= h[m].at {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// compactDeadlines drops the stale elements (and duplicates: a key given
// back a deadline it had before) and rebuilds the heap.
func (s *Store) compactDeadlines() {
	seen := make(map[string]struct{}, s.timed)
	kept := s.deadlines[:0]
	for _, d := range s.deadlines {
		if _, dup := seen[d.key]; dup || !s.live(d) {
			continue
		}
		seen[d.key] = struct{}{}
		kept = append(kept, d)
	}
	clear(s.deadlines[len(kept):])
	s.deadlines = kept
	for i := len(kept)/2 - 1; i >= 0; i-- {
		s.down(i)
	}
}
