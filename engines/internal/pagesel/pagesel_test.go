package pagesel

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/qrun-dev/qrun/engines"
)

func TestSmallestKeepsTheKSmallestInOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, k := range []int{0, 1, 3, 10, 1000} {
		vals := r.Perm(500)
		s := New(k, func(v int) uint64 { return uint64(v) })
		for _, v := range vals {
			s.Add(v)
		}
		slices.Sort(vals)
		want := vals[:min(k, len(vals))]
		if got := s.Sorted(); !slices.Equal(got, want) {
			t.Fatalf("k=%d: Sorted() = %v, want %v", k, got, want)
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	for _, seq := range []uint64{0, 1, 1 << 63} {
		got, err := ParseCursor("e", "q", FormatCursor(seq))
		if err != nil || got != seq {
			t.Fatalf("ParseCursor(FormatCursor(%d)) = %d, %v", seq, got, err)
		}
	}
	if got, err := ParseCursor("e", "q", ""); err != nil || got != 0 {
		t.Fatalf(`ParseCursor("") = %d, %v; want 0, nil`, got, err)
	}
	if _, err := ParseCursor("e", "q", "x1"); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("ParseCursor(x1) error %v, want ErrInvalid", err)
	}
}
