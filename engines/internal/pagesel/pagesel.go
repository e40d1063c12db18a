// Package pagesel serves engines.Peeker.PeekPage for engines that scan
// records held in memory in the order of a per-record sequence number:
// cursors are that number. Log keeps the records in that order, so a page
// costs its own records (memory, disk); Smallest picks a page's records
// out of an unordered walk in O(n log k) time and O(k) memory, for an
// engine whose records have no such list (shm's ring).
package pagesel

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/idxheap"
)

// Smallest keeps the k values with the smallest keys among those added.
type Smallest[T any] struct {
	k   int
	key func(T) uint64
	h   idxheap.Heap[T] // a max-heap by key: its top is the largest kept
	// pos receives the heap's position bookkeeping, which Smallest never
	// reads: it removes nothing but the top.
	pos int32
}

// New returns a Smallest keeping k values ordered by key.
func New[T any](k int, key func(T) uint64) *Smallest[T] {
	return &Smallest[T]{k: k, key: key}
}

// Add offers x.
func (s *Smallest[T]) Add(x T) {
	kx := s.key(x)
	if s.h.Len() < s.k {
		s.push(x, kx)
		return
	}
	if s.k == 0 || kx >= s.key(s.h.Peek()) {
		return
	}
	s.h.Pop()
	s.push(x, kx)
}

// push adds x under key k; ^k makes the min-heap a max-heap by k.
func (s *Smallest[T]) push(x T, k uint64) { s.h.Push(x, &s.pos, idxheap.Key{Minor: ^k}) }

// Sorted returns the kept values in ascending key order.
func (s *Smallest[T]) Sorted() []T {
	out := slices.Collect(s.h.All())
	slices.SortFunc(out, func(a, b T) int { return cmp.Compare(s.key(a), s.key(b)) })
	return out
}

// ParseCursor reads a cursor made by FormatCursor; "" is 0, the start of
// the scan. Anything else is engines.ErrInvalid naming the engine and queue.
func ParseCursor(engine, queue, after string) (uint64, error) {
	if after == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(after, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: peek at %q: cursor %q is not one this engine made: %w", engine, queue, after, engines.ErrInvalid)
	}
	return n, nil
}

// Start checks a PeekPage request (a positive Max, a cursor this engine
// made) and returns the sequence number the scan continues after. Errors
// wrap engines.ErrInvalid and name the engine and queue.
func Start(engine, queue string, opts engines.PeekOptions) (uint64, error) {
	if opts.Max < 1 {
		return 0, fmt.Errorf("%s: peek at %q: max %d < 1: %w", engine, queue, opts.Max, engines.ErrInvalid)
	}
	return ParseCursor(engine, queue, opts.After)
}

// FormatCursor is the cursor that continues a scan after sequence seq.
func FormatCursor(seq uint64) string { return strconv.FormatUint(seq, 10) }
