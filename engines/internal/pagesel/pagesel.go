// Package pagesel serves engines.Peeker.PeekPage for engines that scan
// records held in memory in the order of a per-record sequence number:
// cursors are that number, and Smallest picks a page's records out of an
// unordered walk in O(n log k) time and O(k) memory, however large the
// queue.
package pagesel

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/qrun-dev/qrun/engines"
)

// Smallest keeps the k values with the smallest keys among those added.
type Smallest[T any] struct {
	k   int
	key func(T) uint64
	h   []T // a max-heap by key: h[0] is the largest kept
}

// New returns a Smallest keeping k values ordered by key.
func New[T any](k int, key func(T) uint64) *Smallest[T] {
	return &Smallest[T]{k: k, key: key, h: make([]T, 0, min(k, 1024))}
}

// Add offers x.
func (s *Smallest[T]) Add(x T) {
	if len(s.h) < s.k {
		s.h = append(s.h, x)
		s.up(len(s.h) - 1)
		return
	}
	if s.k == 0 || s.key(x) >= s.key(s.h[0]) {
		return
	}
	s.h[0] = x
	s.down(0)
}

// Sorted returns the kept values in ascending key order.
func (s *Smallest[T]) Sorted() []T {
	out := slices.Clone(s.h)
	slices.SortFunc(out, func(a, b T) int {
		ka, kb := s.key(a), s.key(b)
		switch {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	return out
}

func (s *Smallest[T]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if s.key(s.h[p]) >= s.key(s.h[i]) {
			return
		}
		s.h[p], s.h[i] = s.h[i], s.h[p]
		i = p
	}
}

func (s *Smallest[T]) down(i int) {
	for {
		l, big := 2*i+1, i
		if l < len(s.h) && s.key(s.h[l]) > s.key(s.h[big]) {
			big = l
		}
		if r := l + 1; r < len(s.h) && s.key(s.h[r]) > s.key(s.h[big]) {
			big = r
		}
		if big == i {
			return
		}
		s.h[i], s.h[big] = s.h[big], s.h[i]
		i = big
	}
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

// FormatCursor is the cursor that continues a scan after sequence seq.
func FormatCursor(seq uint64) string { return strconv.FormatUint(seq, 10) }
