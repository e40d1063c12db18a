package disk_test

import (
	"errors"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
)

// storedKeys lists the keys of store name as the file holds them, read
// with bbolt directly from a closed engine's data directory.
func storedKeys(t *testing.T, dir, name string) []string {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, disk.FileName), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var keys []string
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("kv")).Bucket([]byte(name)).Bucket([]byte("e"))
		return b.ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// waitExpired spins until key has expired for the store: the engine's
// clock is the wall clock, and a read is the only event of a TTL passing.
func waitExpired(t *testing.T, kv engines.KV, key string) {
	t.Helper()
	ctx := ctxT(t)
	for {
		_, err := kv.Get(ctx, []byte(key))
		if errors.Is(err, engines.ErrNotFound) {
			return
		}
		if err != nil || ctx.Err() != nil {
			t.Fatalf("waiting for %q to expire: %v, %v", key, err, ctx.Err())
		}
		runtime.Gosched()
	}
}

// TestKVSweepRemovesExpiredKeysFromTheFile: an expired key is absent at
// once, and a sweep (SweepKV, or the one at open) removes it from the file.
func TestKVSweepRemovesExpiredKeysFromTheFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := ctxT(t)
	e := openEngine(t, dir)
	kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	ttl := func(key string) engines.KVOp {
		return engines.KVOp{Kind: engines.KVSet, Key: []byte(key), Value: []byte("v"), TTL: time.Millisecond}
	}
	if _, err := kv.Apply(ctx, ttl("swept"), engines.KVOp{Kind: engines.KVSet, Key: []byte("kept"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	waitExpired(t, kv, "swept")
	if n, err := e.SweepKV(ctx); err != nil || n != 1 {
		t.Fatalf("SweepKV = %d, %v; want the one expired key", n, err)
	}
	if _, err := kv.Apply(ctx, ttl("at_open")); err != nil {
		t.Fatal(err)
	}
	closeEngine(t, e)
	if got := storedKeys(t, dir, "s"); !slices.Equal(got, []string{"at_open", "kept"}) {
		t.Fatalf("file holds %v after the sweep, want at_open and kept", got)
	}

	e = openEngine(t, dir)
	kv, err = e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	waitExpired(t, kv, "at_open")
	closeEngine(t, e)
	// The first open may have come before the TTL ran out; the next one
	// comes after it, and sweeps.
	e = openEngine(t, dir)
	closeEngine(t, e)
	if got := storedKeys(t, dir, "s"); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("file holds %v after a reopen, want only kept", got)
	}
}

// TestSettleTxPublishesToSeveralQueues: a transaction that publishes one
// message to one queue and two to another (the single-message and the
// general path of grouping publishes by target) stores all three, in
// order, with their IDs written back, and the increment with them.
func TestSettleTxPublishesToSeveralQueues(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	e := openEngine(t, t.TempDir())
	defer closeEngine(t, e)
	src := openQueue(t, e, engines.QueueSpec{Name: "src"})
	one := openQueue(t, e, engines.QueueSpec{Name: "one"})
	two := openQueue(t, e, engines.QueueSpec{Name: "two"})
	kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Enqueue(ctx, engines.Message{Body: []byte("in")}); err != nil {
		t.Fatal(err)
	}
	d := receive(t, src, 1)[0]
	eff := &engines.Effects{
		Publish: []engines.Publish{
			{Queue: "two", Message: engines.Message{Body: []byte("2a")}},
			{Queue: "one", Message: engines.Message{Body: []byte("1")}},
			{Queue: "two", Message: engines.Message{Body: []byte("2b")}},
		},
		KV: []engines.KVBatch{{Store: "s", Ops: []engines.KVOp{{Kind: engines.KVIncr, Key: []byte("n"), Delta: 1}}}},
	}
	if err := d.SettleTx(ctx, eff); err != nil {
		t.Fatal(err)
	}
	for i, p := range eff.Publish {
		if p.Message.ID == "" {
			t.Fatalf("publish %d got no ID", i)
		}
	}
	for q, want := range map[engines.Queue][]string{one: {"1"}, two: {"2a", "2b"}} {
		ds := receive(t, q, len(want))
		for i, d := range ds {
			if string(d.Message.Body) != want[i] {
				t.Errorf("%s: message %d is %q, want %q", q.Name(), i, d.Message.Body, want[i])
			}
		}
	}
	if ent, err := kv.Get(ctx, []byte("n")); err != nil || string(ent.Value) != "1" {
		t.Fatalf("n = %q, %v; want 1", ent.Value, err)
	}
}
