package postgres_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// holdKeyLock takes the advisory lock a kv transaction takes for key of
// store, on a connection of its own, and returns what releases it: a
// stand-in for another transaction that holds the key.
func holdKeyLock(t *testing.T, ctx context.Context, schema, store, key string) (release func()) {
	t.Helper()
	conn, err := pgx.Connect(ctx, srv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", postgres.KeyLockID(schema, store, []byte(key))); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", postgres.KeyLockID(schema, store, []byte(key))); err != nil {
			t.Error(err)
		}
	}
}

// waitBlockedOnKey waits until n transactions wait for the lock of key.
func waitBlockedOnKey(t *testing.T, ctx context.Context, schema, store, key string, n int) {
	t.Helper()
	conn, err := pgx.Connect(ctx, srv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	id := uint64(postgres.KeyLockID(schema, store, []byte(key)))
	waitFor(t, ctx, strconv.Itoa(n)+" transactions waiting for key "+key, func() bool {
		var waiting int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND classid = $1 AND objid = $2 AND objsubid = 1`, int64(id>>32), int64(id&0xffffffff)).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		return waiting >= n
	})
}

// txFixture is an engine with a source queue of leased deliveries and a
// store, for the group tests.
type txFixture struct {
	e      *postgres.Engine
	schema string
	q      engines.Queue
	kv     engines.KV
	ds     []engines.Delivery
}

func newTxFixture(t *testing.T, ctx context.Context, n int) *txFixture {
	t.Helper()
	s := pgtest.Need(t, srv)
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{Logger: zap.NewNop(), MaxConns: 6})
	if g := postgres.MaxGroups(e); g < 2 {
		t.Fatalf("MaxGroups = %d with 6 connections, want 2 or more", g)
	}
	q := open(t, e, engines.QueueSpec{Name: "src", VisibilityTimeout: time.Minute})
	kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, make([]engines.Message, n)...); err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, q, n)
	if err != nil || len(ds) != n {
		t.Fatalf("Receive = %d, %v", len(ds), err)
	}
	return &txFixture{e: e, schema: schema, q: q, kv: kv, ds: ds}
}

// start starts delivery i's settle with ops on the store and waits for
// it on a goroutine of its own (which runs its group), returning where
// its outcome arrives.
func (f *txFixture) start(t *testing.T, ctx context.Context, i int, ops ...engines.KVOp) <-chan error {
	t.Helper()
	p, err := f.q.(groupTxSettler).StartSettleTx(ctx, &f.ds[i], &engines.Effects{KV: []engines.KVBatch{{Store: f.kv.Name(), Ops: ops}}})
	if err != nil {
		t.Fatalf("StartSettleTx %d: %v", i, err)
	}
	out := make(chan error, 1)
	go func() { out <- p.Wait(ctx) }()
	return out
}

// TestSettleTxGroupsRunInParallel: a group waiting for a key (held here
// by another transaction) does not hold up a group of the same process
// on other keys of the same store, which commits meanwhile; the first
// commits once the key is free. With one group at a time, or the store's
// row as the lock, the second would wait for the first.
func TestSettleTxGroupsRunInParallel(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t, time.Minute)
	f := newTxFixture(t, ctx, 2)
	release := holdKeyLock(t, ctx, f.schema, "s", "a")
	a := f.start(t, ctx, 0, engines.KVOp{Kind: engines.KVIncr, Key: []byte("a"), Delta: 1})
	waitBlockedOnKey(t, ctx, f.schema, "s", "a", 1)
	b := f.start(t, ctx, 1, engines.KVOp{Kind: engines.KVIncr, Key: []byte("b"), Delta: 1})
	select {
	case err := <-b:
		if err != nil {
			t.Fatalf("group on key b: %v", err)
		}
	case err := <-a:
		t.Fatalf("group on key a ended (%v) while its key was held", err)
	case <-ctx.Done():
		t.Fatal("group on key b waited for the group on key a")
	}
	if ent, err := f.kv.Get(ctx, []byte("b")); err != nil || string(ent.Value) != "1" {
		t.Fatalf("b = %q, %v; want 1, committed", ent.Value, err)
	}
	if _, err := f.kv.Get(ctx, []byte("a")); !errors.Is(err, engines.ErrNotFound) {
		t.Fatalf("a before its group could commit: %v, want not found", err)
	}
	release()
	if err := <-a; err != nil {
		t.Fatalf("group on key a once free: %v", err)
	}
	if ent, err := f.kv.Get(ctx, []byte("a")); err != nil || string(ent.Value) != "1" {
		t.Fatalf("a = %q, %v; want 1", ent.Value, err)
	}
}

// TestSettleTxGroupsSameKey: two groups in flight at once, each with a
// delivery that read key n at the same version and writes it: the key's
// lock makes one run after the other, the second finds n changed, its
// delivery conflicts (lease kept, nothing of it applied) and a retry that
// reads again commits. No update is lost.
func TestSettleTxGroupsSameKey(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t, time.Minute)
	f := newTxFixture(t, ctx, 2)
	ent, err := f.kv.Apply(ctx, engines.KVOp{Kind: engines.KVSet, Key: []byte("n"), Value: []byte("10")})
	if err != nil {
		t.Fatal(err)
	}
	read := ent[0].Version
	write := func(v int) []engines.KVOp {
		return []engines.KVOp{
			{Kind: engines.KVCheck, Key: []byte("n"), IfVersion: read, HasVersion: true},
			{Kind: engines.KVSet, Key: []byte("n"), Value: []byte(strconv.Itoa(v))},
		}
	}
	release := holdKeyLock(t, ctx, f.schema, "s", "n")
	a := f.start(t, ctx, 0, write(11)...)
	waitBlockedOnKey(t, ctx, f.schema, "s", "n", 1)
	b := f.start(t, ctx, 1, write(11)...)
	waitBlockedOnKey(t, ctx, f.schema, "s", "n", 2) // two groups in flight
	release()
	errA, errB := <-a, <-b
	var lost int
	switch {
	case errA == nil && errors.Is(errB, engines.ErrConflict):
		lost = 1
	case errB == nil && errors.Is(errA, engines.ErrConflict):
		lost = 0
	default:
		t.Fatalf("outcomes %v and %v; want one commit and one ErrConflict", errA, errB)
	}
	if got, err := f.kv.Get(ctx, []byte("n")); err != nil || string(got.Value) != "11" || got.Version <= read {
		t.Fatalf("n = %q at version %d, %v; want 11 above version %d", got.Value, got.Version, err, read)
	}
	// The loser still holds its lease: it reads again and commits.
	cur, err := f.kv.Get(ctx, []byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	read = cur.Version
	if err := <-f.start(t, ctx, lost, write(12)...); err != nil {
		t.Fatalf("retry after the conflict: %v", err)
	}
	if got, err := f.kv.Get(ctx, []byte("n")); err != nil || string(got.Value) != "12" {
		t.Fatalf("n = %q, %v; want 12: both updates applied", got.Value, err)
	}
	if st, err := f.q.Stats(ctx); err != nil || st.AckedTotal != 2 || st.Depth() != 0 {
		t.Fatalf("source %+v, %v; want both acked", st, err)
	}
}

// TestSettleTxTwoEngines: two engines on one schema (two qrun processes)
// run deliveries that read a counter and write it plus one, each engine
// from several goroutines, so groups of both are in flight at once; a
// conflict requeues. At the end the counter is exactly the number of
// messages: no update is lost across processes, and none deadlocks.
func TestSettleTxTwoEngines(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	ctx := ctxT(t, 2*time.Minute)
	schema := s.Schema(t)
	const n, perEngine = 80, 3
	var (
		es     [2]*postgres.Engine
		qs     [2]engines.Queue
		stores [2]engines.KV
	)
	for i := range es {
		es[i] = newEngine(t, schema, postgres.Options{Logger: zap.NewNop(), MaxConns: 8})
		qs[i] = open(t, es[i], engines.QueueSpec{Name: "src", VisibilityTimeout: time.Minute})
		kv, err := es[i].OpenKV(ctx, engines.KVSpec{Name: "s"})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = kv
	}
	if err := qs[0].Enqueue(ctx, make([]engines.Message, n)...); err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		done      int
		conflicts int
		wg        sync.WaitGroup
		errs      = make(chan error, 2*perEngine)
	)
	finished := func() bool { mu.Lock(); defer mu.Unlock(); return done == n }
	for i := range es {
		for range perEngine {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q, kv := qs[i], stores[i]
				for !finished() {
					rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
					ds, err := engines.ReceiveN(rctx, q, 1)
					cancel()
					if err != nil {
						if ctx.Err() != nil {
							errs <- ctx.Err()
							return
						}
						continue // the others hold the rest
					}
					committed, err := enginetest.IncrementTx(ctx, kv, "n", &ds[0])
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if committed {
						done++
					} else {
						conflicts++
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if ent, err := stores[1].Get(ctx, []byte("n")); err != nil || string(ent.Value) != strconv.Itoa(n) {
		t.Fatalf("counter = %q, %v; want %d", ent.Value, err, n)
	}
	t.Logf("%d conflicts requeued", conflicts)
}

// TestKVVersionsAfterKeyLocksMigration: a schema at version 4 (versions
// from each store's row) migrated to 5 (versions from one sequence) goes
// on handing out versions above every one handed out before, so a key
// that an older qrun wrote, or wrote and deleted, never gets a version it
// had; and the old counter is gone, so an older qrun still running
// cannot hand out versions of its own.
func TestKVVersionsAfterKeyLocksMigration(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	ctx := ctxT(t, time.Minute)
	schema := s.Schema(t)
	conn, qs := migratedTo(ctx, t, s, schema, 4)
	// As version 4 left them: store s handed out versions up to 1000 (the
	// highest, 1000, to a key since deleted), store t up to 70.
	if _, err := conn.Exec(ctx, `INSERT INTO `+qs+`.kv_stores (name, last_version) VALUES ('s', 1000), ('t', 70);
		INSERT INTO `+qs+`.kv (store, key, value, version) VALUES ('s', 'k', '1', 999), ('t', 'k', '2', 70)`); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.MigrateTo(ctx, conn, schema, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE `+qs+`.kv_stores SET last_version = last_version + 1 WHERE name = 's'`); err == nil {
		t.Fatal("kv_stores.last_version still writable after migration 5")
	}
	e := newEngine(t, schema, postgres.Options{Logger: zap.NewNop()})
	for _, store := range []string{"s", "t"} {
		kv, err := e.OpenKV(ctx, engines.KVSpec{Name: store})
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"k", "new"} {
			ent, err := kv.Apply(ctx, engines.KVOp{Kind: engines.KVIncr, Key: []byte(key), Delta: 1})
			if err != nil {
				t.Fatal(err)
			}
			if ent[0].Version <= 1000 {
				t.Fatalf("%s/%s written at version %d after the migration, want above 1000", store, key, ent[0].Version)
			}
		}
	}
}

// TestSettleTxGroupsFor: up to 4 groups at once, at most half the pool
// (docs/postgres.md), and always one.
func TestSettleTxGroupsFor(t *testing.T) {
	for conns, want := range map[int32]int{2: 1, 3: 1, 4: 2, 6: 3, 8: 4, 10: 4, 100: 4} {
		if got := postgres.GroupsFor(conns); got != want {
			t.Errorf("GroupsFor(%d) = %d, want %d", conns, got, want)
		}
	}
}

// TestSettleTxProbesByKey: a group's lease locks and key reads are
// primary-key probes whatever the planner's statistics say, never a scan
// of every message or every key of the store (which made a 256-delivery
// group cost O(messages in the table)). The tables are filled without
// ANALYZE, as a busy queue's are between autovacuum runs.
func TestSettleTxProbesByKey(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	ctx := ctxT(t, time.Minute)
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{Logger: zap.NewNop()})
	open(t, e, engines.QueueSpec{Name: "src"})
	if _, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"}); err != nil {
		t.Fatal(err)
	}
	conn, qs := schemaConn(ctx, t, s, schema)
	if _, err := conn.Exec(ctx, `INSERT INTO `+qs+`.messages (queue_id, state, visible_at, lease_token)
			SELECT (SELECT id FROM `+qs+`.queues WHERE name = 'src'), 2, now() + interval '1 hour', g FROM generate_series(1, 20000) g;
		INSERT INTO `+qs+`.kv (store, key, value, version)
			SELECT 's', convert_to('k' || g, 'UTF8'), '1', g FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	seqs, tokens, keys := make([]int64, 256), make([]int64, 256), make([][]byte, 256)
	for i := range seqs {
		seqs[i], tokens[i], keys[i] = int64(i+1), int64(i+1), []byte("k"+strconv.Itoa(i*70))
	}
	lockLeases, read := postgres.TxStatements(e)
	for _, c := range []struct {
		name string
		sql  string
		args []any
	}{
		{"lockLeases", lockLeases, []any{seqs, tokens}},
		{"read", read, []any{"s", keys}},
	} {
		// Both the plan for these arrays and the generic plan a prepared
		// statement switches to, which estimates an array at 10 elements.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
			if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+mode); err != nil {
				t.Fatal(err)
			}
			rows, err := tx.Query(ctx, "EXPLAIN "+c.sql, c.args...)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			rows.Close()
			joined := strings.Join(plan, "\n")
			if strings.Contains(joined, "Seq Scan") || !strings.Contains(joined, "Index Scan using") {
				t.Errorf("%s (%s) does not probe by key:\n%s", c.name, mode, joined)
			}
		}
		_ = tx.Rollback(ctx)
	}
}

// schemaConn connects to s for a test's own SQL on schema, returning the
// connection (closed with the test) and the schema's quoted name.
func schemaConn(ctx context.Context, t *testing.T, s *pgtest.Server, schema string) (*pgx.Conn, string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn, pgx.Identifier{schema}.Sanitize()
}

// migratedTo is schemaConn with schema migrated to version v first.
func migratedTo(ctx context.Context, t *testing.T, s *pgtest.Server, schema string, v int) (*pgx.Conn, string) {
	t.Helper()
	conn, qs := schemaConn(ctx, t, s, schema)
	if _, err := postgres.MigrateTo(ctx, conn, schema, v); err != nil {
		t.Fatal(err)
	}
	return conn, qs
}
