package kvmem

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/qrun-dev/qrun/engines"
)

func TestGroupByStoreMergesInLockOrder(t *testing.T) {
	var stores map[string]*Store
	lookup := func(name string) (*Store, error) { return Open(&stores, name), nil }
	eff := &engines.Effects{KV: []engines.KVBatch{
		{Store: "b", Ops: []engines.KVOp{{Kind: engines.KVDelete, Key: []byte("1")}}},
		{Store: "a", Ops: []engines.KVOp{{Kind: engines.KVDelete, Key: []byte("2")}}},
		{Store: "b", Ops: []engines.KVOp{{Kind: engines.KVDelete, Key: []byte("3")}}},
	}}
	got, err := GroupByStore(eff, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Store.Name() != "a" || got[1].Store.Name() != "b" {
		t.Fatalf("groups not one per store in name order: %+v", got)
	}
	if k := got[1].Ops; len(k) != 2 || string(k[0].Key) != "1" || string(k[1].Key) != "3" {
		t.Fatalf("store b's ops not merged in order: %+v", k)
	}
	if got[1].Store != stores["b"] {
		t.Fatal("group does not hold the looked-up store")
	}
	boom := errors.New("boom")
	if _, err := GroupByStore(eff, func(string) (*Store, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("lookup error not returned: %v", err)
	}
}

func TestHandleClosed(t *testing.T) {
	engineClosed := false
	h := NewHandle("eng", Open(new(map[string]*Store), "s"), func() bool { return engineClosed })
	ctx := context.Background()
	if _, err := h.Get(ctx, []byte("k")); !errors.Is(err, engines.ErrNotFound) || !strings.HasPrefix(err.Error(), "eng: ") {
		t.Fatalf("get of a missing key: %v", err)
	}
	engineClosed = true
	if _, err := h.List(ctx, nil, nil, 10); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("list after the engine closed: %v", err)
	}
	engineClosed = false
	_ = h.Close()
	if _, err := h.Get(ctx, []byte("k")); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("get after Close: %v", err)
	}
}

func TestOpenHandleChecksSpec(t *testing.T) {
	var stores map[string]*Store
	lookup := func(name string) (*Store, error) { return Open(&stores, name), nil }
	open := func() bool { return false }
	for _, spec := range []engines.KVSpec{{}, {Name: "toolong"}, {Name: "s", MaxValueSize: -1}} {
		if _, err := OpenHandle("eng", spec, 4, lookup, open); !errors.Is(err, engines.ErrInvalid) || !strings.HasPrefix(err.Error(), "eng: ") {
			t.Errorf("OpenHandle(%+v) = %v, want eng: ... ErrInvalid", spec, err)
		}
	}
	h, err := OpenHandle("eng", engines.KVSpec{Name: "s", MaxValueSize: 3}, 0, lookup, open)
	if err != nil {
		t.Fatal(err)
	}
	if h.Name() != "s" || h.Store != stores["s"] {
		t.Fatal("handle not on the looked-up store")
	}
	if err := h.Store.Validate([]engines.KVOp{{Kind: engines.KVSet, Key: []byte("k"), Value: []byte("four")}}); !errors.Is(err, engines.ErrTooLarge) {
		t.Fatalf("spec's MaxValueSize not applied: %v", err)
	}
}

func TestLookupOpensOnceAndFailsClosed(t *testing.T) {
	var (
		mu     sync.Mutex
		closed bool
		stores map[string]*Store
	)
	a, err := Lookup("eng", &mu, &closed, &stores, "s")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := Lookup("eng", &mu, &closed, &stores, "s"); err != nil || b != a {
		t.Fatalf("second lookup: %p, %v; want %p", b, err, a)
	}
	closed = true
	if _, err := Lookup("eng", &mu, &closed, &stores, "s"); !errors.Is(err, engines.ErrClosed) || !strings.HasPrefix(err.Error(), "eng: ") {
		t.Fatalf("lookup after close: %v", err)
	}
}
