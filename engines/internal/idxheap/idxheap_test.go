package idxheap

import (
	"math/rand/v2"
	"slices"
	"testing"
)

type item struct {
	key int
	idx int32
}

func push(h *Heap[*item], x *item) { h.Push(x, &x.idx, Key{Major: int64(x.key)}) }

// check asserts every element knows its position and the heap property holds.
func check(t *testing.T, h *Heap[*item]) {
	t.Helper()
	for i := range h.Len() {
		x := h.At(i)
		if int(x.idx) != i {
			t.Fatalf("element at %d records index %d", i, x.idx)
		}
		if i > 0 && x.key < h.At((i-1)/2).key {
			t.Fatalf("element at %d (key %d) is less than its parent", i, x.key)
		}
	}
}

func TestHeap(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 2, 7, 100, 5000} {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		var h Heap[*item]
		for range n {
			push(&h, &item{key: rng.IntN(50)})
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
			x := h.At(rng.IntN(h.Len()))
			x.key = rng.IntN(50)
			h.Fix(int(x.idx), Key{Major: int64(x.key)})
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

func TestKeyOrder(t *testing.T) {
	t.Parallel()
	var h Heap[*item]
	// Minor breaks ties in Major: FIFO within a priority, as the engines use it.
	for i, k := range []Key{{Major: 2, Minor: 1}, {Major: 1, Minor: 9}, {Major: 1, Minor: 3}, {Major: -5, Minor: 0}} {
		x := &item{key: i}
		h.Push(x, &x.idx, k)
	}
	var got []int
	for h.Len() > 0 {
		got = append(got, h.Pop().key)
	}
	if want := []int{3, 2, 1, 0}; !slices.Equal(got, want) {
		t.Fatalf("pop order %v, want %v", got, want)
	}
}

func TestDrainAndAll(t *testing.T) {
	t.Parallel()
	var h Heap[*item]
	xs := []*item{{key: 3}, {key: 1}, {key: 2}}
	for _, x := range xs {
		push(&h, x)
	}
	n := 0
	for range h.All() {
		n++
	}
	if n != 3 {
		t.Fatalf("All yielded %d elements, want 3", n)
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

// BenchmarkPushRemoveMin is the lease heap's pattern: a batch of leases
// taken, then settled oldest first.
func BenchmarkPushRemoveMin(b *testing.B) {
	xs := make([]item, 100)
	var h Heap[*item]
	for b.Loop() {
		for i := range xs {
			push(&h, &xs[i])
		}
		for h.Len() > 0 {
			h.Remove(0)
		}
	}
}
