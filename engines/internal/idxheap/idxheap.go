// Package idxheap is an indexed binary min-heap for the engines' in-memory
// indexes (ready messages, delayed messages, leases). Every element keeps
// its own position, so a settle, an extend or a purge removes or re-orders an
// arbitrary element in O(log n) without searching for it. container/heap
// would do the same through an interface; this keeps the element type
// concrete and the position bookkeeping in one place.
package idxheap

// Heap is an indexed min-heap of T. The zero value is not usable: build one
// with New.
type Heap[T any] struct {
	items []T
	less  func(a, b T) bool
	// setIndex records an element's position (-1 once it left the heap).
	setIndex func(x T, i int)
}

// New returns an empty heap ordered by less, which tells each element its
// position through setIndex.
func New[T any](less func(a, b T) bool, setIndex func(x T, i int)) Heap[T] {
	return Heap[T]{less: less, setIndex: setIndex}
}

// shrinkAbove is the capacity a drained heap gives back, so that one burst
// does not pin its peak memory for the life of the queue.
const shrinkAbove = 4096

// Len is the number of elements.
func (h *Heap[T]) Len() int { return len(h.items) }

// Items returns the elements in heap order (not sorted); the slice is the
// heap's own and valid until the next change.
func (h *Heap[T]) Items() []T { return h.items }

// Peek returns the least element, or the zero T (nil for the pointer
// types the engines keep) when the heap is empty.
func (h *Heap[T]) Peek() (x T) {
	if len(h.items) == 0 {
		return x
	}
	return h.items[0]
}

// Push adds x.
func (h *Heap[T]) Push(x T) {
	i := len(h.items)
	h.items = append(h.items, x)
	h.setIndex(x, i)
	h.up(i)
}

// Pop removes and returns the least element; the heap must not be empty.
func (h *Heap[T]) Pop() T { return h.Remove(0) }

// Remove removes and returns the element at position i.
func (h *Heap[T]) Remove(i int) T {
	s := h.items
	n := len(s) - 1
	x := s[i]
	if i != n {
		s[i] = s[n]
		h.setIndex(s[i], i)
	}
	var zero T
	s[n] = zero
	h.items = s[:n]
	if i < n {
		h.Fix(i)
	}
	h.setIndex(x, -1)
	if n == 0 && cap(s) > shrinkAbove {
		h.items = nil
	}
	return x
}

// Fix restores the order after the element at position i changed its key.
func (h *Heap[T]) Fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

// Drain removes and returns every element, in no particular order.
func (h *Heap[T]) Drain() []T {
	s := h.items
	for _, x := range s {
		h.setIndex(x, -1)
	}
	h.items = nil
	return s
}

func (h *Heap[T]) swap(i, j int) {
	s := h.items
	s[i], s[j] = s[j], s[i]
	h.setIndex(s[i], i)
	h.setIndex(s[j], j)
}

func (h *Heap[T]) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(h.items[j], h.items[i]) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h *Heap[T]) down(i0 int) bool {
	i, n := i0, len(h.items)
	for {
		j := 2*i + 1
		if j >= n || j < 0 {
			break
		}
		if j2 := j + 1; j2 < n && h.less(h.items[j2], h.items[j]) {
			j = j2
		}
		if !h.less(h.items[j], h.items[i]) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}
