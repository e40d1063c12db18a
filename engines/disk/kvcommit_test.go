package disk

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

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
