package kvmem

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// fakeClock is a store's clock that a test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func commit(t testing.TB, s *Store, ops ...engines.KVOp) []string {
	t.Helper()
	s.Lock()
	defer s.Unlock()
	p, err := s.PrepareLocked(ops)
	if err != nil {
		t.Fatal(err)
	}
	return s.CommitLocked(p)
}

func sweep(s *Store) []string {
	s.Lock()
	defer s.Unlock()
	gone := s.SweepLocked()
	slices.Sort(gone)
	return gone
}

func set(key string, ttl time.Duration) engines.KVOp {
	return engines.KVOp{Kind: engines.KVSet, Key: []byte(key), Value: []byte("v"), TTL: ttl}
}

// TestSweepFollowsDeadlines: the sweep removes exactly the keys whose
// current deadline passed, whatever deadlines they had before: a key
// written again with a later deadline, or without one, or deleted, is not
// swept by its old one; an increment keeps the deadline it found.
func TestSweepFollowsDeadlines(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	s := New("s", 0, c.now)
	commit(t, s, set("a", time.Second), set("b", time.Second), set("c", time.Second),
		set("d", time.Second), set("plain", 0),
		engines.KVOp{Kind: engines.KVIncr, Key: []byte("e"), Delta: 1, TTL: 3 * time.Second})
	commit(t, s, set("b", 5*time.Second), set("c", 0), engines.KVOp{Kind: engines.KVDelete, Key: []byte("d")},
		engines.KVOp{Kind: engines.KVIncr, Key: []byte("e"), Delta: 1})
	c.t = c.t.Add(2 * time.Second)
	if got := sweep(s); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("swept %q at 2s, want [a]", got)
	}
	c.t = c.t.Add(2 * time.Second)
	if got := sweep(s); !slices.Equal(got, []string{"e"}) {
		t.Fatalf("swept %q at 4s, want [e] (its increment kept the 3s deadline)", got)
	}
	c.t = c.t.Add(2 * time.Second)
	if got := sweep(s); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("swept %q at 6s, want [b]", got)
	}
	if got := sweep(s); len(got) != 0 {
		t.Fatalf("second sweep removed %q again", got)
	}
	if _, ok := s.EntryLocked("c"); !ok {
		t.Fatal("c, written again without a TTL, was swept")
	}
	if s.Len() != 2 { // c and plain
		t.Fatalf("%d keys left, want 2", s.Len())
	}
}

// TestLoadedDeadlinesAreSwept: entries loaded at open take part in sweeps.
func TestLoadedDeadlinesAreSwept(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	s := New("s", 0, c.now)
	s.Load("old", Entry{Value: []byte("v"), Version: 1, Expires: c.t.Add(time.Second).UnixNano()})
	s.Load("kept", Entry{Value: []byte("v"), Version: 2})
	c.t = c.t.Add(time.Minute)
	if got := sweep(s); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("swept %q, want [old]", got)
	}
}

// TestDeadlineHeapStaysBounded: a key written with a new TTL over and over
// leaves stale elements behind, which compaction keeps to a bounded number.
func TestDeadlineHeapStaysBounded(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	s := New("s", 0, c.now)
	for i := range 10000 {
		c.t = c.t.Add(time.Millisecond)
		commit(t, s, set("k", time.Hour), set(fmt.Sprint("n", i%10), 0))
	}
	if n := len(s.deadlines); n > 2*s.timed+compactSlack+1 {
		t.Fatalf("%d heap elements for %d keys with a deadline", n, s.timed)
	}
	c.t = c.t.Add(2 * time.Hour)
	if got := sweep(s); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("swept %q, want [k] once", got)
	}
}

// BenchmarkCommitManyKeys is a store of many keys without a TTL taking one
// increment of a new key per commit, the kv benchmark's handler: the sweep
// that runs every sweepEvery commits must not scan them all.
func BenchmarkCommitManyKeys(b *testing.B) {
	s := New("s", 0, time.Now)
	for i := range 200000 {
		s.Load(fmt.Sprint("pre:", i), Entry{Value: []byte("1"), Version: uint64(i + 1)})
	}
	keys := make([][]byte, b.N)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "id:%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		commit(b, s, engines.KVOp{Kind: engines.KVIncr, Key: keys[i], Delta: 1})
	}
}

// TestPrepareSeesEarlierOpsOfItsBatch, for batches both below and above
// indexScan (scan and map lookups of the batch's own writes): each
// increment sees the batch's earlier ones, a delete then a check sees the
// key absent, and Results copies what each op left.
func TestPrepareSeesEarlierOpsOfItsBatch(t *testing.T) {
	for _, n := range []int{3, indexScan + 5} {
		s := New("s", 0, time.Now)
		var ops []engines.KVOp
		for i := range n {
			ops = append(ops, engines.KVOp{Kind: engines.KVIncr, Key: []byte("c"), Delta: 1},
				engines.KVOp{Kind: engines.KVSet, Key: fmt.Appendf(nil, "k%d", i%2), Value: []byte("v")})
		}
		ops = append(ops, engines.KVOp{Kind: engines.KVDelete, Key: []byte("k0")},
			engines.KVOp{Kind: engines.KVCheck, Key: []byte("k0")})
		s.Lock()
		p, err := s.PrepareLocked(ops)
		if err != nil {
			s.Unlock()
			t.Fatal(err)
		}
		s.CommitLocked(p)
		s.Unlock()
		res := p.Results()
		if got := string(res[2*n-2].Value); got != fmt.Sprint(n) {
			t.Errorf("%d ops: last increment left %q, want %d", len(ops), got, n)
		}
		if last := res[len(res)-1]; string(last.Key) != "k0" || last.Version != 0 || last.Value != nil {
			t.Errorf("%d ops: check after delete = %+v, want k0 absent", len(ops), last)
		}
		if len(p.Changes()) != 3 { // c, k0 (deleted), k1
			t.Errorf("%d ops: %d changes, want 3", len(ops), len(p.Changes()))
		}
		if _, ok := s.EntryLocked("k0"); ok {
			t.Errorf("%d ops: k0 still stored after the batch deleted it", len(ops))
		}
		res[2*n-2].Value[0] = 'x' // Results are copies
		if e, _ := s.EntryLocked("c"); string(e.Value) != fmt.Sprint(n) {
			t.Errorf("%d ops: changing a result changed the store: %q", len(ops), e.Value)
		}
	}
}

// TestNotFoundText: the not-found error of a read, built without fmt,
// reads as the fmt one did and wraps engines.ErrNotFound.
func TestNotFoundText(t *testing.T) {
	h := NewHandle("eng", New("s", 0, time.Now), func() bool { return false })
	_, err := h.Get(t.Context(), []byte("a\"b"))
	want := fmt.Sprintf("eng: kv %q: key %q: %v", "s", "a\"b", engines.ErrNotFound)
	if !errors.Is(err, engines.ErrNotFound) || err.Error() != want {
		t.Fatalf("Get of a missing key = %q, want %q wrapping ErrNotFound", err, want)
	}
}

// TestLookup: Lookup reports an absent or expired key as not found without
// an error, a live one with its entry, and fails as Get does on a bad key
// or a closed handle.
func TestLookup(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	s := New("s", 0, c.now)
	h := NewHandle("eng", s, func() bool { return false })
	commit(t, s, set("k", 0), set("short", time.Second))
	c.t = c.t.Add(time.Minute)
	ctx := t.Context()
	if e, ok, err := h.Lookup(ctx, []byte("k")); err != nil || !ok || string(e.Value) != "v" || string(e.Key) != "k" {
		t.Fatalf("Lookup(k) = %+v, %v, %v", e, ok, err)
	}
	for _, key := range []string{"absent", "short"} {
		if _, ok, err := h.Lookup(ctx, []byte(key)); ok || err != nil {
			t.Fatalf("Lookup(%s) = %v, %v; want not found, no error", key, ok, err)
		}
	}
	if _, _, err := h.Lookup(ctx, nil); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("Lookup of an empty key: %v", err)
	}
	_ = h.Close()
	if _, _, err := h.Lookup(ctx, []byte("k")); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("Lookup after Close: %v", err)
	}
}
