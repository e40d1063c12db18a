package disk

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/kvmem"
)

// TestCommitWritesEachStoreOnce: the key-value ops of one commit, over
// two stores, land in their stores, and each store's version counter is
// written once, at the highest version any op of the commit carried (the
// commit notes opKVLast ops rather than writing each).
func TestCommitWritesEachStoreOnce(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "kv.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ops := []op{
		{kind: opKVPut, key: "a", val: encodeKV("k1", kvmem.Entry{Value: []byte("1"), Version: 1})},
		{kind: opKVLast, key: "a", seq: 1},
		{kind: opKVPut, key: "b", val: encodeKV("k", kvmem.Entry{Value: []byte("x"), Version: 4})},
		{kind: opKVLast, key: "b", seq: 4},
		{kind: opKVPut, key: "a", val: encodeKV("k2", kvmem.Entry{Value: []byte("2"), Version: 2})},
		{kind: opKVDel, key: "a", val: []byte("k1")},
		{kind: opKVLast, key: "a", seq: 3},
	}
	err = db.Update(func(tx *bolt.Tx) error {
		var kv kvBuckets
		for i := range ops {
			if err := kv.apply(tx, &ops[i]); err != nil {
				return err
			}
		}
		if len(kv) != 2 {
			t.Errorf("%d stores looked up, want 2", len(kv))
		}
		return kv.flush()
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for store, want := range map[string]struct {
			last uint64
			keys []string
		}{"a": {3, []string{"k2"}}, "b": {4, []string{"k"}}} {
			root := tx.Bucket(bucketKV).Bucket([]byte(store))
			if v := root.Get(keyLastVer); v == nil || binary.BigEndian.Uint64(v) != want.last {
				t.Errorf("store %s: version counter %x, want %d", store, v, want.last)
			}
			var keys []string
			_ = root.Bucket(subEntries).ForEach(func(k, _ []byte) error { keys = append(keys, string(k)); return nil })
			if len(keys) != len(want.keys) || keys[0] != want.keys[0] {
				t.Errorf("store %s: keys %q, want %q", store, keys, want.keys)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCommittedOpsAreRecycledCleared: once two commits are done, the
// pending batch fills the op slice of an earlier one, cleared so that it
// keeps no message or value alive.
func TestCommittedOpsAreRecycledCleared(t *testing.T) {
	ctx := t.Context()
	e, err := Open(ctx, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	h, err := e.Open(ctx, engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // each Enqueue waits for its commit
		if err := h.Enqueue(ctx, engines.Message{Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	e.cmu.Lock()
	defer e.cmu.Unlock()
	ops := e.cur.ops[:cap(e.cur.ops)]
	if cap(ops) == 0 {
		t.Fatal("the pending batch has no op slice")
	}
	for i := len(e.cur.ops); i < len(ops); i++ {
		if o := ops[i]; o.q != nil || o.val != nil || o.rec != nil || o.dst != nil {
			t.Fatalf("recycled op %d still holds %+v", i, o)
		}
	}
}

// TestMessagePagesPackedFull: messages, keyed by a growing sequence, are
// appended to pages packed 90 % full (msgsFill), not bbolt's default half.
func TestMessagePagesPackedFull(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	e, err := Open(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.Open(ctx, engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]engines.Message, 100)
	for i := range msgs {
		msgs[i].Body = make([]byte, 100)
	}
	for range 20 {
		if err := h.Enqueue(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketQueues).Bucket([]byte("q")).Bucket(subMsgs).Stats()
		fill := float64(st.LeafInuse) / float64(st.LeafPageN*db.Info().PageSize)
		if st.LeafPageN < 10 || fill < 0.8 {
			t.Errorf("%d leaf pages %.0f %% full, want them at least 80 %% full", st.LeafPageN, 100*fill)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
