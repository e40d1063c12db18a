// Package idxheap is an indexed binary min-heap for the engines' in-memory
// indexes (ready messages, delayed messages, leases). Every element keeps
// its own position, so a settle, an extend or a purge removes or re-orders an
// arbitrary element in O(log n) without searching for it.
//
// The heap keeps each element's sort key and a pointer to its position
// field next to it, so sifting compares integers and stores positions
// without calling back into the engine: a heap of leases sits on every
// receive and ack, and comparison callbacks (container/heap's interface, or
// function values) cost several times the sift itself there.
package idxheap

import "iter"

// Key orders the heap: by Major, then by Minor, smallest first. Engines use
// a time or a negated priority as Major and an enqueue sequence as Minor.
type Key struct {
	Major int64
	Minor uint64
}

// Less reports whether a sorts before b.
func (a Key) Less(b Key) bool {
	return a.Major < b.Major || (a.Major == b.Major && a.Minor < b.Minor)
}

type slot[T any] struct {
	key Key
	pos *int32 // the element's position field: -1 once it left the heap
	x   T
}

// Heap is an indexed min-heap of T. The zero value is an empty heap.
type Heap[T any] struct {
	s []slot[T]
}

// shrinkAbove is the capacity a drained heap gives back, so that one burst
// does not pin its peak memory for the life of the queue.
const shrinkAbove = 4096

// Len is the number of elements.
func (h *Heap[T]) Len() int { return len(h.s) }

// At returns the element at position i (heap order, not sorted).
func (h *Heap[T]) At(i int) T { return h.s[i].x }

// All yields the elements in heap order (not sorted); the heap must not
// change while it runs.
func (h *Heap[T]) All() iter.Seq[T] {
	return func(yield func(T) bool) {
		for i := range h.s {
			if !yield(h.s[i].x) {
				return
			}
		}
	}
}

// Peek returns the least element, or the zero T (nil for the pointer
// types the engines keep) when the heap is empty.
func (h *Heap[T]) Peek() (x T) {
	if len(h.s) == 0 {
		return x
	}
	return h.s[0].x
}

// Push adds x with key k; pos is x's position field, which the heap keeps
// up to date while x is in it.
func (h *Heap[T]) Push(x T, pos *int32, k Key) {
	h.s = append(h.s, slot[T]{key: k, pos: pos, x: x})
	h.up(len(h.s) - 1)
}

// Pop removes and returns the least element; the heap must not be empty.
func (h *Heap[T]) Pop() T { return h.Remove(0) }

// Remove removes and returns the element at position i.
func (h *Heap[T]) Remove(i int) T {
	s := h.s
	n := len(s) - 1
	e := s[i]
	if i != n {
		s[i] = s[n]
	}
	s[n] = slot[T]{}
	h.s = s[:n]
	if i < n {
		h.fix(i)
	}
	*e.pos = -1
	if n == 0 && cap(s) > shrinkAbove {
		h.s = nil
	}
	return e.x
}

// Fix gives the element at position i the key k and restores the order.
func (h *Heap[T]) Fix(i int, k Key) {
	h.s[i].key = k
	h.fix(i)
}

func (h *Heap[T]) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

// Drain removes and returns every element, in no particular order.
func (h *Heap[T]) Drain() []T {
	out := make([]T, len(h.s))
	for i := range h.s {
		*h.s[i].pos = -1
		out[i] = h.s[i].x
	}
	h.s = nil
	return out
}

// up moves the element at j towards the root. Parents move down into the
// hole it leaves, so each level costs one slot copy and one position store.
func (h *Heap[T]) up(j int) {
	s := h.s
	e := s[j]
	for j > 0 {
		i := (j - 1) / 2
		if !e.key.Less(s[i].key) {
			break
		}
		s[j] = s[i]
		*s[j].pos = int32(j)
		j = i
	}
	s[j] = e
	*e.pos = int32(j)
}

// down moves the element at i0 towards the leaves and reports whether it
// moved.
func (h *Heap[T]) down(i0 int) bool {
	s := h.s
	n := len(s)
	e := s[i0]
	i := i0
	for {
		j := 2*i + 1
		if j >= n || j < 0 {
			break
		}
		if j2 := j + 1; j2 < n && s[j2].key.Less(s[j].key) {
			j = j2
		}
		if !s[j].key.Less(e.key) {
			break
		}
		s[i] = s[j]
		*s[i].pos = int32(i)
		i = j
	}
	s[i] = e
	*e.pos = int32(i)
	return i > i0
}
