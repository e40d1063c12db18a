package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// TestKVAbsentKeyIsInsertedNotUpserted: a key a transaction read under its
// lock and found absent is written by a plain INSERT, not an upsert (the
// speculative insertion costs the database a third more per key). The
// key locks make that safe for every writer that takes them; a row that
// a writer skipping them committed meanwhile fails the transaction rather
// than being overwritten, which is what tells the two statements apart.
func TestKVAbsentKeyIsInsertedNotUpserted(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	ctx := ctxT(t, time.Minute)
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{Logger: zap.NewNop()})
	kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	qs := pgx.Identifier{schema}.Sanitize()

	// The intruder inserts k without the key's lock and holds its
	// transaction open.
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var xid string
	if err := tx.QueryRow(ctx, `INSERT INTO `+qs+`.kv (store, key, value, version) VALUES ('s', 'k', 'theirs', 1)
		RETURNING pg_current_xact_id()::text`).Scan(&xid); err != nil {
		t.Fatal(err)
	}

	// Apply reads k (absent: the intruder has not committed) and inserts
	// it, which waits on the intruder's uncommitted row.
	done := make(chan error, 1)
	go func() {
		_, err := kv.Apply(ctx, engines.KVOp{Kind: engines.KVSet, Key: []byte("k"), Value: []byte("ours")})
		done <- err
	}()
	watch, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	for waiting := false; !waiting; {
		select {
		case err := <-done:
			t.Fatalf("Apply returned %v before the intruder committed", err)
		default:
		}
		if err := watch.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'transactionid' AND transactionid::text = $1 AND NOT granted)`, xid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("Apply overwrote a key inserted without its lock; want the insert to fail")
	}
	got, err := kv.Get(ctx, []byte("k"))
	if err != nil || string(got.Value) != "theirs" {
		t.Fatalf("k = %q, %v; want the intruder's value kept", got.Value, err)
	}

	// Found by the read, the key is upserted.
	ents, err := kv.Apply(ctx, engines.KVOp{Kind: engines.KVSet, Key: []byte("k"), Value: []byte("ours")})
	if err != nil || string(ents[0].Value) != "ours" {
		t.Fatalf("Apply on a stored key: %+v, %v", ents, err)
	}
}

// TestKVStoreForeignKeyDroppedMigration: migration 6 drops the foreign
// key from kv to kv_stores (a trigger per key written) and keeps the keys
// written before it; stores still get their row when a write names them.
func TestKVStoreForeignKeyDroppedMigration(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	ctx := ctxT(t, time.Minute)
	schema := s.Schema(t)
	conn, qs := migratedTo(ctx, t, s, schema, 5)
	fkeys := func() int {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'f'`,
			qs+".kv").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := fkeys(); n != 1 {
		t.Fatalf("version 5: %d foreign keys on kv, want 1", n)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO `+qs+`.kv_stores (name) VALUES ('s');
		INSERT INTO `+qs+`.kv (store, key, value, version) VALUES ('s', 'k', '41', 7)`); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.MigrateTo(ctx, conn, schema, 6); err != nil {
		t.Fatal(err)
	}
	if n := fkeys(); n != 0 {
		t.Fatalf("version 6: %d foreign keys on kv, want 0", n)
	}
	e := newEngine(t, schema, postgres.Options{Logger: zap.NewNop()})
	kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	ents, err := kv.Apply(ctx, engines.KVOp{Kind: engines.KVIncr, Key: []byte("k"), Delta: 1})
	if err != nil || string(ents[0].Value) != "42" {
		t.Fatalf("increment of a key written before the migration: %+v, %v", ents, err)
	}
}
