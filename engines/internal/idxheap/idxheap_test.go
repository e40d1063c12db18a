package idxheap

import (
	"math/rand/v2"
	"slices"
	"testing"
)

type item struct {
	key, idx int
}

func newHeap() Heap[*item] {
	return New(func(a, b *item) bool { return a.key < b.key }, func(x *item, i int) { x.idx = i })
}

// check asserts every element knows its position and the heap property holds.
func check(t *testing.T, h *Heap[*item]) {
	t.Helper()
	for i, x := range h.Items() {
		if x.idx != i {
			t.Fatalf("element at %d records index %d", i, x.idx)
		}
		if i > 0 && x.key < h.Items()[(i-1)/2].key {
			t.Fatalf("element at %d (key %d) is less than its parent", i, x.key)
		}
	}
}

func TestHeap(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 2, 7, 100, 5000} {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		h := newHeap()
		for range n {
			h.Push(&item{key: rng.IntN(50)})
		}
		check(t, &h)
		// Remove a third at random positions, re-key another third.
		var removed []*item
		for i := 0; i < n/3; i++ {
			x := h.Remove(rng.IntN(h.Len()))
			if x.idx != -1 {
				t.Fatalf("removed element keeps index %d", x.idx)
			}
			removed = append(removed, x)
		}
		check(t, &h)
		for i := 0; i < n/3 && h.Len() > 0; i++ {
			x := h.Items()[rng.IntN(h.Len())]
			x.key = rng.IntN(50)
			h.Fix(x.idx)
		}
		check(t, &h)
		var keys []int
		for h.Len() > 0 {
			keys = append(keys, h.Pop().key)
		}
		if !slices.IsSorted(keys) {
			t.Fatalf("n=%d: pop order %v is not sorted", n, keys)
		}
		if len(keys)+len(removed) != n {
			t.Fatalf("n=%d: popped %d and removed %d", n, len(keys), len(removed))
		}
		if h.Peek() != nil {
			t.Fatal("Peek on an empty heap reported an element")
		}
	}
}

func TestDrain(t *testing.T) {
	t.Parallel()
	h := newHeap()
	xs := []*item{{key: 3}, {key: 1}, {key: 2}}
	for _, x := range xs {
		h.Push(x)
	}
	got := h.Drain()
	if len(got) != 3 || h.Len() != 0 {
		t.Fatalf("Drain returned %d, left %d", len(got), h.Len())
	}
	for _, x := range xs {
		if x.idx != -1 {
			t.Fatalf("drained element keeps index %d", x.idx)
		}
	}
}
