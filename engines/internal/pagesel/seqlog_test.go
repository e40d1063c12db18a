package pagesel

import (
	"slices"
	"testing"
)

type rec struct {
	seq  uint64
	gone bool
}

func live(x Entry[*rec]) bool { return x.R.seq == x.Seq && !x.R.gone }

func seqs(es []Entry[*rec]) []uint64 {
	var out []uint64
	for _, x := range es {
		out = append(out, x.Seq)
	}
	return out
}

// TestLogAddOutOfOrder: a number that arrives behind higher ones is moved
// into place, so After still finds pages by binary search.
func TestLogAddOutOfOrder(t *testing.T) {
	t.Parallel()
	var l Log[*rec]
	for _, s := range []uint64{1, 2, 5, 3, 6, 4, 7} {
		l.Add(s, &rec{seq: s})
	}
	if got := seqs(l.After(0)); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("order %v", got)
	}
	if got := seqs(l.After(4)); !slices.Equal(got, []uint64{5, 6, 7}) {
		t.Fatalf("after 4: %v", got)
	}
	if got := l.After(7); len(got) != 0 {
		t.Fatalf("after the last: %v", seqs(got))
	}
}

// TestLogTrim: stale entries (gone, or recycled under a new number) stay
// until they are half the list, then go, the live ones keeping their
// order; a drained burst gives its memory back.
func TestLogTrim(t *testing.T) {
	t.Parallel()
	var l Log[*rec]
	rs := make([]*rec, 1000)
	for i := range rs {
		rs[i] = &rec{seq: uint64(i + 1)}
		l.Add(rs[i].seq, rs[i])
	}
	for i := range 900 {
		if i%2 == 0 {
			rs[i].gone = true
		} else {
			rs[i].seq += 10000 // recycled: the entry under the old number is stale
		}
	}
	l.Trim(1000, live) // under half stale by the queue's count: kept
	if l.Len() != 1000 {
		t.Fatalf("trimmed early: %d entries", l.Len())
	}
	l.Trim(100, live)
	if l.Len() != 100 {
		t.Fatalf("%d entries after the trim, want the 100 live", l.Len())
	}
	for i, x := range l.After(0) {
		if !live(x) || x.Seq != uint64(901+i) {
			t.Fatalf("entry %d: seq %d live %v", i, x.Seq, live(x))
		}
	}
	if cap(l.e) > 4*100 {
		t.Fatalf("capacity %d kept after the burst drained", cap(l.e))
	}
}
