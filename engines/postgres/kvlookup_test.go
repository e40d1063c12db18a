package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// kvLooker is runtime/plugin's optional interface of a store that reports
// an absent key without an error, spelt out here: a postgres store must
// keep offering it, or every transactional read of a new key builds an
// ErrNotFound again.
type kvLooker interface {
	Lookup(ctx context.Context, key []byte) (engines.KVEntry, bool, error)
}

// TestKVLookup: Lookup answers as Get does, an absent or expired key (by
// the database's clock) as found false with no error, a found key with
// its value, version and expiry; it refuses a bad key and a closed engine.
func TestKVLookup(t *testing.T) {
	t.Parallel()
	schema := pgtest.Need(t, srv).Schema(t)
	e := newEngine(t, schema, postgres.Options{Logger: zap.NewNop()})
	ctx := ctxT(t, 30*time.Second)
	kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	l, ok := kv.(kvLooker)
	if !ok {
		t.Fatal("postgres kv handle has no Lookup")
	}
	set, err := kv.Apply(ctx,
		engines.KVOp{Kind: engines.KVSet, Key: []byte("a"), Value: []byte("1")},
		engines.KVOp{Kind: engines.KVSet, Key: []byte("ttl"), Value: []byte("2"), TTL: time.Hour},
		engines.KVOp{Kind: engines.KVSet, Key: []byte("gone"), Value: []byte("3"), TTL: time.Hour},
	)
	if err != nil {
		t.Fatal(err)
	}
	// "gone" expires by the database's clock: no sleep, its expiry moved
	// into the past.
	if _, err := e.Pool().Exec(ctx, `UPDATE `+pgx.Identifier{schema}.Sanitize()+`.kv
		SET expires_at = now() - interval '1 second' WHERE key = 'gone'`); err != nil {
		t.Fatal(err)
	}

	for i, k := range []string{"a", "ttl"} {
		key := []byte(k)
		ent, found, err := l.Lookup(ctx, key)
		if err != nil || !found {
			t.Fatalf("Lookup(%q) = %v, %v; want found", k, found, err)
		}
		want := set[i]
		if string(ent.Value) != string(want.Value) || ent.Version != want.Version || !ent.Expires.Equal(want.Expires) {
			t.Fatalf("Lookup(%q) = %+v, want %+v", k, ent, want)
		}
		if &ent.Key[0] != &key[0] {
			t.Fatalf("Lookup(%q): the entry's Key is a copy, want the key given", k)
		}
		got, err := kv.Get(ctx, key)
		if err != nil || string(got.Value) != string(ent.Value) || got.Version != ent.Version || !got.Expires.Equal(ent.Expires) {
			t.Fatalf("Get(%q) = %+v, %v; Lookup gave %+v", k, got, err, ent)
		}
		if &got.Key[0] == &key[0] {
			t.Fatalf("Get(%q): the entry's Key is the caller's slice, want a copy", k)
		}
	}
	if !set[1].Expires.After(time.Now()) {
		t.Fatalf("key ttl expires %v, want a time to come", set[1].Expires)
	}
	for _, k := range []string{"absent", "gone"} {
		if ent, found, err := l.Lookup(ctx, []byte(k)); err != nil || found {
			t.Fatalf("Lookup(%q) = %+v, %v, %v; want not found, no error", k, ent, found, err)
		}
		if _, err := kv.Get(ctx, []byte(k)); !errors.Is(err, engines.ErrNotFound) {
			t.Fatalf("Get(%q) = %v, want ErrNotFound", k, err)
		}
	}
	for _, k := range [][]byte{nil, make([]byte, engines.MaxKeySize+1)} {
		if _, _, err := l.Lookup(ctx, k); !errors.Is(err, engines.ErrInvalid) {
			t.Fatalf("Lookup of a %d-byte key = %v, want ErrInvalid", len(k), err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := l.Lookup(cctx, []byte("a")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lookup with a cancelled context = %v, want context.Canceled", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Lookup(ctx, []byte("a")); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("Lookup after Close = %v, want ErrClosed", err)
	}
}
