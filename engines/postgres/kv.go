package postgres

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/kvmem"
)

// Key-value stores, transactional settles and per-message state, kept in
// the tables of migrations 0004 and 0005 (kv_stores, kv, kv_version,
// message_state).
//
// A batch of key-value ops runs in a transaction that first takes an
// advisory lock on every key the batch names (keyLocks: one id per store
// and key, all ids in ascending order, so two transactions cannot
// deadlock), then draws the versions it may hand out from the kv_version
// sequence, reads the keys, runs the batch with the same code as the
// memory and disk engines (kvmem, on the database's clock) and writes what
// changed. Transactions on disjoint keys of one store therefore run and
// commit in parallel, while two that name one key run one after the
// other, the second reading what the first committed. SettleTx does that
// for every store of a group of deliveries (txbatch.go), in one
// transaction with the acks' DELETE and the publishes' INSERTs: it commits
// all of them or none.

var (
	_ engines.KVEngine     = (*Engine)(nil)
	_ engines.TxSettler    = (*Engine)(nil)
	_ engines.StateSettler = (*Engine)(nil)
)

// kvState is the engine's local memory of stores and target queues.
type kvState struct {
	mu       sync.Mutex
	maxValue map[string]int     // per store, from the latest OpenKV
	handles  map[string]*handle // queues SettleTx publishes to
	txb      txBatcher
	// txRetries counts SettleTx groups rolled back because a lease was
	// lost and run again locking first (runTxBatch), for the tests.
	txRetries atomic.Int64
}

func (k *kvState) limit(store string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if n := k.maxValue[store]; n > 0 {
		return n
	}
	return engines.DefaultMaxValueSize
}

// kvSQL are the statements of this file, with the schema filled in.
type kvSQL struct {
	createStore, ensureStores, lockKeys, versions, read string
	get, list, upsert, insert, del, sweep               string
	state, setState, lockLeases, ackLocked, countAcked  string
	ackHeld                                             string
}

// kvStatements fills the quoted schema into the statements.
func kvStatements(schema string) kvSQL {
	seq := "'" + strings.ReplaceAll(schema+".kv_version", "'", "''") + "'"
	s := strings.NewReplacer("__QSEQ__", seq, "__Q__", schema).Replace
	return kvSQL{
		createStore: s(`INSERT INTO __Q__.kv_stores (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`),
		// The stores a transaction names, created if missing (a settle
		// may name a store this process has not opened); an existing row
		// is neither written nor locked.
		ensureStores: s(`INSERT INTO __Q__.kv_stores (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING`),
		// Locks the keys' ids for the transaction, in the order given
		// (ascending: see keyLocks).
		lockKeys: s(`SELECT count(pg_advisory_xact_lock(u.id)) FROM unnest($1::bigint[]) AS u(id)`),
		// Draws $1 versions (taken once the keys are locked, so a key's
		// next version is above every one it had) and the transaction's
		// clock, which expiry is measured against.
		versions: s(`SELECT now(), coalesce((SELECT array_agg(nextval(__QSEQ__)) FROM generate_series(1, $1::bigint)), '{}')`),
		// One primary-key probe per key named (the LIMIT keeps the
		// subquery from being flattened into a plan that, on stale
		// statistics, scans every key of the store): O(keys named), not
		// O(store).
		read: s(`SELECT r.key, r.value, r.version, r.expires_at FROM unnest($2::bytea[]) AS u(k)
			CROSS JOIN LATERAL (SELECT key, value, version, expires_at FROM __Q__.kv
				WHERE store = $1 AND key = u.k LIMIT 1) r`),
		get: s(`SELECT value, version, expires_at FROM __Q__.kv
			WHERE store = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())`),
		list: s(`SELECT key, value, version, expires_at FROM __Q__.kv
			WHERE store = $1 AND substr(key, 1, length($2::bytea)) = $2::bytea
			  AND ($3::bytea IS NULL OR key > $3::bytea) AND (expires_at IS NULL OR expires_at > now())
			ORDER BY key LIMIT $4`),
		upsert: s(`INSERT INTO __Q__.kv (store, key, value, version, expires_at)
			SELECT $1, k, v, n, x FROM unnest($2::bytea[], $3::bytea[], $4::bigint[], $5::timestamptz[]) AS u(k, v, n, x)
			ON CONFLICT (store, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at`),
		// The keys a transaction read under their locks and found absent:
		// every writer holds a key's lock until it commits, so nobody can
		// insert one of them first, and a plain insert (a heap and an index
		// tuple, no speculative insertion and its confirmation record) does
		// what the upsert would. A unique violation here would mean a writer
		// that skipped the locks: the transaction fails, nothing is
		// overwritten.
		insert: s(`INSERT INTO __Q__.kv (store, key, value, version, expires_at)
			SELECT $1, k, v, n, x FROM unnest($2::bytea[], $3::bytea[], $4::bigint[], $5::timestamptz[]) AS u(k, v, n, x)`),
		del:   s(`DELETE FROM __Q__.kv WHERE store = $1 AND key = ANY($2::bytea[])`),
		sweep: s(`DELETE FROM __Q__.kv WHERE expires_at <= now()`),
		// The leases of a SettleTx batch still held, locked until commit,
		// with where each row is (ackLocked deletes it there) and its
		// queue. One primary-key probe per element, in the order given
		// (ascending seq, so two batches lock rows in one order): the
		// FOR UPDATE keeps the subquery from being flattened into a join
		// the planner may run as a hash join over a scan of every message,
		// O(messages) per batch.
		lockLeases: s(`SELECT l.seq, l.ctid, l.queue_id FROM unnest($1::bigint[], $2::bigint[]) AS a(seq, token)
			CROSS JOIN LATERAL (SELECT m.seq, m.ctid, m.queue_id FROM __Q__.messages m
				WHERE m.seq = a.seq AND m.lease_token = a.token AND m.state + 0 = 2 AND m.visible_at > now()
				FOR UPDATE) l`),
		// The acks of a SettleTx batch: rows lockLeases locked, so still
		// where it found them, deleted by their ctid (a TID scan whatever
		// the table's size); and the queues' acked counters.
		ackLocked: s(`DELETE FROM __Q__.messages WHERE ctid = ANY($1::tid[])`),
		// The acks of an optimistic SettleTx group (runTxBatch): the rows
		// whose lease is still held, by primary key ("state + 0" keeps
		// messages_due out of a generic plan, as in the engine's ack), each
		// reporting its queue; one missing is a lease lost.
		ackHeld: s(`DELETE FROM __Q__.messages m USING unnest($1::bigint[], $2::bigint[]) AS a(seq, token)
			WHERE m.seq = a.seq AND m.lease_token = a.token AND m.state + 0 = 2 AND m.visible_at > now()
			RETURNING m.queue_id`),
		countAcked: s(`INSERT INTO __Q__.counters AS c (queue_id, shard, acked)
			SELECT q, pg_backend_pid() % 16, n FROM unnest($1::int[], $2::bigint[]) AS u(q, n)
			ON CONFLICT (queue_id, shard) DO UPDATE SET acked = c.acked + EXCLUDED.acked`),
		state: s(`SELECT (SELECT value FROM __Q__.message_state WHERE seq = $1),
			EXISTS (SELECT 1 FROM __Q__.messages WHERE seq = $1 AND lease_token = $2 AND state = 2 AND visible_at > now())`),
		setState: s(`INSERT INTO __Q__.message_state (seq, value)
			SELECT seq, $3 FROM __Q__.messages WHERE seq = $1 AND lease_token = $2 AND state = 2 AND visible_at > now()
			ON CONFLICT (seq) DO UPDATE SET value = EXCLUDED.value`),
	}
}

// OpenKV implements engines.KVEngine: the store is a row of kv_stores,
// shared by every process on the schema.
func (e *Engine) OpenKV(ctx context.Context, spec engines.KVSpec) (engines.KV, error) {
	if err := checkName(spec.Name); err != nil {
		return nil, fmt.Errorf("postgres: open kv: %w", err)
	}
	if spec.MaxValueSize < 0 {
		return nil, fmt.Errorf("postgres: open kv %q: negative max value size %d: %w", spec.Name, spec.MaxValueSize, engines.ErrInvalid)
	}
	if e.closed.Load() {
		return nil, e.errClosed("open kv", spec.Name)
	}
	if err := retrySafe(func() error {
		_, err := e.pool.Exec(ctx, e.sqlKV.createStore, spec.Name)
		return err
	}); err != nil {
		return nil, e.opErr("open kv", spec.Name, err)
	}
	e.kv.mu.Lock()
	if e.kv.maxValue == nil {
		e.kv.maxValue = make(map[string]int)
	}
	if spec.MaxValueSize > 0 || e.kv.maxValue[spec.Name] == 0 {
		e.kv.maxValue[spec.Name] = spec.MaxValueSize
	}
	e.kv.mu.Unlock()
	return &kvHandle{e: e, name: spec.Name, arg: spec.Name}, nil
}

// SweepKV deletes every expired key of every store and returns how many.
// Expired keys are absent for every read whether or not they were swept;
// a write that finds one deletes it too.
func (e *Engine) SweepKV(ctx context.Context) (int64, error) {
	tag, err := e.pool.Exec(ctx, e.sqlKV.sweep)
	if err != nil {
		return 0, e.opErr("sweep kv", "*", err)
	}
	return tag.RowsAffected(), nil
}

type kvHandle struct {
	e    *Engine
	name string
	arg  any // name as a query argument, boxed once rather than per read
}

// Name implements engines.KV.
func (h *kvHandle) Name() string { return h.name }

// Close implements engines.KV.
func (h *kvHandle) Close() error { return nil }

func entryOf(key, value []byte, version int64, expires *time.Time) engines.KVEntry {
	out := engines.KVEntry{Key: key, Value: value, Version: uint64(version)}
	if out.Value == nil {
		out.Value = []byte{}
	}
	if expires != nil {
		out.Expires = *expires
	}
	return out
}

// Get implements engines.KV.
func (h *kvHandle) Get(ctx context.Context, key []byte) (engines.KVEntry, error) {
	ent, found, err := h.Lookup(ctx, key)
	if err == nil && !found {
		err = fmt.Errorf("postgres: kv %q: key %q: %w", h.name, key, engines.ErrNotFound)
	}
	if err != nil {
		return engines.KVEntry{}, err
	}
	ent.Key = bytes.Clone(key)
	return ent, nil
}

// Lookup is Get that reports an absent or expired key as found false, not
// as engines.ErrNotFound, and returns key itself as the entry's Key, not a
// copy. A transactional delivery reads every key it increments, most of
// them new, so runtime/plugin uses Lookup when a store offers it: the
// error Get builds for a missing key (the key quoted into it) would be
// thrown away.
//
// Each lookup is its own point query on a pool connection, sent at once.
// Coalescing the lookups of concurrent deliveries into one round trip was
// measured and is slower: a lookup then waits for the round trip in
// flight before its own goes, and with a few workers the round trips it
// saves do not pay for that wait (docs/state.md, Performance).
func (h *kvHandle) Lookup(ctx context.Context, key []byte) (engines.KVEntry, bool, error) {
	if len(key) == 0 || len(key) > engines.MaxKeySize {
		return engines.KVEntry{}, false, fmt.Errorf("postgres: kv %q: key of %d bytes, want 1..%d: %w", h.name, len(key), engines.MaxKeySize, engines.ErrInvalid)
	}
	if h.e.closed.Load() {
		return engines.KVEntry{}, false, h.e.errClosed("kv get on", h.name)
	}
	var r kvRow
	err := h.read(ctx, key, &r)
	if err != nil && pgconn.SafeToRetry(err) {
		err = h.read(ctx, key, &r)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return engines.KVEntry{}, false, nil
	}
	if err != nil {
		return engines.KVEntry{}, false, h.e.opErr("kv get on", h.name, err)
	}
	return entryOf(key, r.val, r.ver, r.expires), true, nil
}

// kvRow is a key's row as Lookup reads it: one allocation for the three
// columns, where a closure over three variables (retrySafe's) made four.
type kvRow struct {
	val     []byte
	ver     int64
	expires *time.Time
}

// read is Lookup's point query, once.
func (h *kvHandle) read(ctx context.Context, key []byte, r *kvRow) error {
	return h.e.pool.QueryRow(ctx, h.e.sqlKV.get, h.arg, key).Scan(&r.val, &r.ver, &r.expires)
}

// List implements engines.KV.
func (h *kvHandle) List(ctx context.Context, prefix, after []byte, limit int) ([]engines.KVEntry, error) {
	if limit < 1 {
		return nil, fmt.Errorf("postgres: kv %q: list limit %d < 1: %w", h.name, limit, engines.ErrInvalid)
	}
	if h.e.closed.Load() {
		return nil, h.e.errClosed("kv list on", h.name)
	}
	if prefix == nil {
		prefix = []byte{}
	}
	var out []engines.KVEntry
	err := retrySafe(func() error {
		out = out[:0]
		rows, err := h.e.pool.Query(ctx, h.e.sqlKV.list, h.name, prefix, after, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k, v    []byte
				ver     int64
				expires *time.Time
			)
			if err := rows.Scan(&k, &v, &ver, &expires); err != nil {
				return err
			}
			out = append(out, entryOf(k, v, ver, expires))
		}
		return rows.Err()
	})
	if err != nil {
		return nil, h.e.opErr("kv list on", h.name, err)
	}
	return out, nil
}

// Apply implements engines.KV, in a transaction of its own.
func (h *kvHandle) Apply(ctx context.Context, ops ...engines.KVOp) ([]engines.KVEntry, error) {
	if err := kvmem.ValidateOps(h.name, h.e.kv.limit(h.name), ops); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if h.e.closed.Load() {
		return nil, h.e.errClosed("kv apply on", h.name)
	}
	var out []engines.KVEntry
	err := pgx.BeginFunc(ctx, h.e.pool, func(tx pgx.Tx) (err error) {
		out, err = h.e.applyIn(ctx, tx, h.name, ops)
		return err
	})
	if err != nil {
		if errors.Is(err, engines.ErrConflict) || errors.Is(err, engines.ErrInvalid) || errors.Is(err, engines.ErrTooLarge) {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		return nil, h.e.opErr("kv apply on", h.name, err)
	}
	return out, nil
}

// applyIn runs ops against store in tx (see the top of this file) and
// returns the entries they left: one round trip to lock the store and read
// its keys, then one to write what changed.
func (e *Engine) applyIn(ctx context.Context, tx pgx.Tx, store string, ops []engines.KVOp) ([]engines.KVEntry, error) {
	var b pgx.Batch
	sb := e.queueRead(&b, store, ops)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return nil, err
	}
	if err := sb.prepare(); err != nil {
		return nil, err
	}
	b = pgx.Batch{}
	sb.queueWrites(&b)
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return nil, err
		}
	}
	return sb.res, nil
}

// storeBatch is one store's ops in a transaction: queueRead queues the
// statements that lock the store and read its keys (their results fill
// it in as the batch is read), prepare runs the ops on what was read, and
// queueWrites queues the statements that store the outcome.
type storeBatch struct {
	storeLoad
	e       *Engine
	ops     []engines.KVOp
	expired [][]byte
	p       *kvmem.Prepared
	res     []engines.KVEntry // p's results, with the versions stored
}

// storeLoad is one store read into a kvmem index inside a transaction:
// versions drawn for its writes and the keys named by the ops added
// loaded. A single Apply and a group of settles both use it.
type storeLoad struct {
	name   string
	keys   [][]byte
	seen   map[string]bool
	writes int64
	drawn  []int64 // the versions drawn, ascending
	clock  time.Time
	s      *kvmem.Store
	// stored are the keys the read found in the table, expired or not:
	// the others are absent until this transaction commits (queuePuts).
	stored map[string]bool
}

// placeholderBase is where the versions kvmem hands out in a transaction
// start: kvmem numbers them base+1, base+2, ... in the order it hands
// them out, and real maps each to the version drawn in the same place.
// Drawn versions stay below it (kv_version's MAXVALUE), so a placeholder
// never equals a version a delivery read from the store: a check against
// a key an earlier delivery of the group wrote fails, as it must.
const placeholderBase = 1 << 62

// real is the version to store for v, a version of l.s: a placeholder is
// replaced by the version drawn in its place, a version read is itself.
func (l *storeLoad) real(v uint64) int64 {
	if v > placeholderBase {
		return l.drawn[v-placeholderBase-1]
	}
	return int64(v)
}

// add counts ops' writes (the versions to draw) and notes their keys.
func (l *storeLoad) add(ops []engines.KVOp) {
	if l.seen == nil {
		l.seen = make(map[string]bool, len(ops))
	}
	for i := range ops {
		if ops[i].Kind == engines.KVSet || ops[i].Kind == engines.KVIncr {
			l.writes++
		}
		if k := string(ops[i].Key); !l.seen[k] {
			l.seen[k] = true
			l.keys = append(l.keys, ops[i].Key)
		}
	}
}

// keyLockID is the advisory lock id of a key of a store: a 64-bit hash of
// the schema (engines on other schemas share the database's lock space),
// the store and the key, each length-prefixed so no two tuples hash the
// same bytes. Two keys whose ids collide share a lock: their transactions
// wait for each other, which is slower, never wrong.
func keyLockID(schema, store string, key []byte) int64 {
	h := fnv.New64a()
	var n [8]byte
	for _, s := range [][]byte{[]byte("qrun.kv"), []byte(schema), []byte(store), key} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write(s)
	}
	return int64(h.Sum64())
}

// queueKeyLocks queues on b the statements that make sure the stores of
// loads exist and lock every key they name, for the transaction: one lock
// statement whose ids are in ascending order, so that two transactions,
// whatever keys of whatever stores they name, take their common locks in
// one order and cannot deadlock. It must come before their queue calls.
func queueKeyLocks(b *pgx.Batch, e *Engine, loads []*storeLoad) {
	var (
		names []string
		ids   []int64
	)
	for _, l := range loads {
		names = append(names, l.name)
		for _, k := range l.keys {
			ids = append(ids, keyLockID(e.opts.Schema, l.name, k))
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	b.Queue(e.sqlKV.ensureStores, names)
	b.Queue(e.sqlKV.lockKeys, ids)
}

// queue queues on b the statements that draw the store's versions and
// load its keys into a new index on the database's clock; expired gets
// each key read that has already expired by that clock. The keys must be
// locked already (queueKeyLocks).
func (l *storeLoad) queue(b *pgx.Batch, e *Engine, expired func(key []byte)) {
	b.Queue(e.sqlKV.versions, l.writes).QueryRow(func(r pgx.Row) error {
		if err := r.Scan(&l.clock, &l.drawn); err != nil {
			return err
		}
		if int64(len(l.drawn)) != l.writes {
			return fmt.Errorf("kv %q: %d versions drawn, %d asked for", l.name, len(l.drawn), l.writes)
		}
		slices.Sort(l.drawn)
		clock := l.clock
		l.s = kvmem.New(l.name, e.kv.limit(l.name), func() time.Time { return clock })
		l.s.LoadVersion(placeholderBase)
		return nil
	})
	b.Queue(e.sqlKV.read, l.name, l.keys).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				k, v    []byte
				ver     int64
				expires *time.Time
			)
			if err := rows.Scan(&k, &v, &ver, &expires); err != nil {
				return err
			}
			if l.stored == nil {
				l.stored = make(map[string]bool, len(l.keys))
			}
			l.stored[string(k)] = true
			ent := kvmem.Entry{Value: v, Version: uint64(ver)}
			if expires != nil {
				ent.Expires = expires.UnixNano()
				if !l.clock.Before(*expires) {
					expired(k)
				}
			}
			l.s.Load(string(k), ent)
		}
		return rows.Err()
	})
}

// queueRead queues the statements of a single store's transaction (Apply)
// up to the read of its keys.
func (e *Engine) queueRead(b *pgx.Batch, store string, ops []engines.KVOp) *storeBatch {
	sb := &storeBatch{storeLoad: storeLoad{name: store}, e: e, ops: ops}
	sb.add(ops)
	queueKeyLocks(b, e, []*storeLoad{&sb.storeLoad})
	sb.queue(b, e, func(k []byte) {
		sb.expired = append(sb.expired, k) // deleted whatever the batch does
	})
	return sb
}

// prepare runs the ops on the keys read: ErrConflict, ErrInvalid or
// ErrTooLarge fail the batch.
func (sb *storeBatch) prepare() error {
	sb.s.Lock()
	p, err := sb.s.PrepareLocked(sb.ops)
	sb.s.Unlock()
	if err != nil {
		return err
	}
	if p.LastVersion()-placeholderBase > uint64(len(sb.drawn)) {
		return fmt.Errorf("kv %q: %d versions drawn, more needed", sb.name, len(sb.drawn))
	}
	sb.p = p
	// The entries Apply returns carry the versions stored, not kvmem's
	// placeholders.
	sb.res = p.Results()
	for i := range sb.res {
		sb.res[i].Version = uint64(sb.real(sb.res[i].Version))
	}
	return nil
}

func (sb *storeBatch) queueWrites(b *pgx.Batch) {
	var (
		pk, pv [][]byte
		pn     []int64
		px     []*time.Time
		dk     = sb.expired
	)
	for _, c := range sb.p.Changes() {
		if c.Deleted {
			dk = append(dk, []byte(c.Key))
			continue
		}
		pk = append(pk, []byte(c.Key))
		pv = append(pv, c.Entry.Value)
		pn = append(pn, sb.real(c.Entry.Version))
		var x *time.Time
		if c.Entry.Expires != 0 {
			t := time.Unix(0, c.Entry.Expires)
			x = &t
		}
		px = append(px, x)
	}
	if len(dk) > 0 {
		b.Queue(sb.e.sqlKV.del, sb.name, dk)
	}
	sb.queuePuts(b, sb.e, pk, pv, pn, px)
}

// queuePuts queues the statements that store the keys pk with their
// values pv, versions pn and expiries px: an upsert for the keys the read
// found (a sweep may have deleted an expired one since), a plain insert
// for the others, which the transaction's key locks keep absent.
func (l *storeLoad) queuePuts(b *pgx.Batch, e *Engine, pk, pv [][]byte, pn []int64, px []*time.Time) {
	var (
		ik, iv [][]byte
		in     []int64
		ix     []*time.Time
		j      int
	)
	for i := range pk {
		if l.stored[string(pk[i])] {
			pk[j], pv[j], pn[j], px[j] = pk[i], pv[i], pn[i], px[i]
			j++
			continue
		}
		ik, iv, in, ix = append(ik, pk[i]), append(iv, pv[i]), append(in, pn[i]), append(ix, px[i])
	}
	if j > 0 {
		b.Queue(e.sqlKV.upsert, l.name, pk[:j], pv[:j], pn[:j], px[:j])
	}
	if len(ik) > 0 {
		b.Queue(e.sqlKV.insert, l.name, ik, iv, in, ix)
	}
}

// txHandle returns a handle on the named queue for SettleTx's publishes.
func (e *Engine) txHandle(ctx context.Context, name string) (*handle, error) {
	e.kv.mu.Lock()
	h := e.kv.handles[name]
	e.kv.mu.Unlock()
	if h != nil {
		return h, nil
	}
	q, err := e.Open(ctx, engines.QueueSpec{Name: name})
	if err != nil {
		return nil, err
	}
	h = q.(*handle)
	e.kv.mu.Lock()
	if e.kv.handles == nil {
		e.kv.handles = make(map[string]*handle)
	}
	e.kv.handles[name] = h
	e.kv.mu.Unlock()
	return h, nil
}

// txStore is one store's share of a transaction, its batches merged.
type txStore struct {
	name string
	ops  []engines.KVOp
}

// txPublish is one queue's share of a transaction's publishes.
type txPublish struct {
	h    *handle
	msgs []engines.Message
	idx  []int
}

// SettleTx implements engines.TxSettler: the ack, the publishes and the
// store writes are committed in one PostgreSQL transaction, shared with
// the other deliveries settling at the same time (txbatch.go). A failed
// check returns ErrConflict with the lease still held.
func (e *Engine) SettleTx(ctx context.Context, t engines.Ticket, s engines.Settlement, eff *engines.Effects) error {
	r, err := e.startTx(ctx, t, s, eff)
	if err != nil {
		return err
	}
	return r.Wait(ctx)
}

// StartSettleTx is SettleTx without the wait (engines.GroupTxSettler):
// the delivery joins the next group, which the first Wait of any request
// runs, so the settles a dispatcher starts for a whole batch before
// waiting share one transaction.
func (h *handle) StartSettleTx(ctx context.Context, d *engines.Delivery, eff *engines.Effects) (engines.Pending, error) {
	r, err := h.e.startTx(ctx, d.Ticket(), engines.Settlement{Verdict: engines.Ack}, eff)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// startTx checks a SettleTx request and queues it for the next group.
func (e *Engine) startTx(ctx context.Context, t engines.Ticket, s engines.Settlement, eff *engines.Effects) (*txReq, error) {
	if s.Verdict != engines.Ack {
		return nil, fmt.Errorf("postgres: settle tx: verdict %s, want ack: %w", s.Verdict, engines.ErrInvalid)
	}
	l, err := e.leaseOf(t, "settle tx")
	if err != nil {
		return nil, err
	}
	var (
		stores []*txStore
		pubs   []*txPublish
	)
	if eff != nil {
		by := map[string]*txStore{}
		for _, b := range eff.KV {
			ts := by[b.Store]
			if ts == nil {
				if err := checkName(b.Store); err != nil {
					return nil, fmt.Errorf("postgres: settle tx: store: %w", err)
				}
				ts = &txStore{name: b.Store}
				by[b.Store] = ts
				stores = append(stores, ts)
			}
			ts.ops = append(ts.ops, b.Ops...)
		}
		for _, ts := range stores {
			if err := kvmem.ValidateOps(ts.name, e.kv.limit(ts.name), ts.ops); err != nil {
				return nil, fmt.Errorf("postgres: settle tx: %w", err)
			}
		}
		slices.SortFunc(stores, func(a, b *txStore) int { return cmp.Compare(a.name, b.name) })
		byQ := map[string]*txPublish{}
		for i := range eff.Publish {
			p := &eff.Publish[i]
			tp := byQ[p.Queue]
			if tp == nil {
				if err := checkName(p.Queue); err != nil {
					return nil, fmt.Errorf("postgres: settle tx: publish %d: %w", i, err)
				}
				h, err := e.txHandle(ctx, p.Queue)
				if err != nil {
					return nil, fmt.Errorf("postgres: settle tx: %w", err)
				}
				tp = &txPublish{h: h}
				byQ[p.Queue] = tp
				pubs = append(pubs, tp)
			}
			tp.msgs = append(tp.msgs, p.Message)
			tp.idx = append(tp.idx, i)
		}
		for _, tp := range pubs {
			if err := tp.h.validate(tp.msgs); err != nil {
				return nil, fmt.Errorf("postgres: settle tx: %w", err)
			}
		}
	}
	if !l.state.CompareAndSwap(leaseHeld, leaseBusy) {
		return nil, fmt.Errorf("postgres: settle tx message %d: %w", l.seq, engines.ErrLeaseLost)
	}
	if l.deadline.Load() <= e.now() {
		l.state.Store(leaseDone)
		return nil, fmt.Errorf("postgres: settle tx message %d: lease expired: %w", l.seq, engines.ErrLeaseLost)
	}
	r := &txReq{e: e, l: l, token: int64(t.Token), stores: stores, pubs: pubs, eff: eff, done: make(chan struct{})}
	e.kv.txb.start(r)
	return r, nil
}

// finish records r's outcome once its group is over: the lease's state,
// and for a commit the IDs of the publishes and the wake-ups.
func (r *txReq) finish() {
	e, l := r.e, r.l
	switch {
	case r.err == nil:
		l.state.Store(leaseDone)
	case isLeaseLost(r.err):
		l.state.Store(leaseDone)
		r.err = fmt.Errorf("postgres: settle tx message %d: %w", l.seq, engines.ErrLeaseLost)
		return
	default:
		l.state.Store(leaseHeld) // nothing changed: the lease is still held
		switch {
		case errors.Is(r.err, engines.ErrConflict) || errors.Is(r.err, engines.ErrInvalid) || errors.Is(r.err, engines.ErrTooLarge):
		case e.closed.Load():
			r.err = engines.ErrClosed
		}
		r.err = fmt.Errorf("postgres: settle tx: %w", r.err)
		return
	}
	if r.eff != nil {
		for _, tp := range r.pubs {
			for j, i := range tp.idx {
				r.eff.Publish[i].Message.ID = tp.msgs[j].ID
			}
		}
	}
	for _, w := range r.woke {
		w.send(e)
	}
	if l.ordered {
		e.wake(l.queue)
	}
}

// State implements engines.StateSettler.
func (e *Engine) State(ctx context.Context, t engines.Ticket) ([]byte, error) {
	l, err := e.leaseOf(t, "state")
	if err != nil {
		return nil, err
	}
	var (
		v    []byte
		held bool
	)
	err = retrySafe(func() error {
		return e.pool.QueryRow(ctx, e.sqlKV.state, l.seq, int64(t.Token)).Scan(&v, &held)
	})
	switch {
	case err != nil:
		return nil, e.opErr("state of message in", "", err)
	case !held:
		return nil, fmt.Errorf("postgres: state of message %d: %w", l.seq, engines.ErrLeaseLost)
	case v == nil:
		return nil, fmt.Errorf("postgres: state of message %d: %w", l.seq, engines.ErrNotFound)
	}
	return v, nil
}

// SetState implements engines.StateSettler: committed when it returns.
func (e *Engine) SetState(ctx context.Context, t engines.Ticket, value []byte) error {
	if len(value) > engines.MaxStateSize {
		return fmt.Errorf("postgres: set state: %d bytes, limit %d: %w", len(value), engines.MaxStateSize, engines.ErrTooLarge)
	}
	l, err := e.leaseOf(t, "set state")
	if err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	var tag pgconn.CommandTag
	err = retrySafe(func() (err error) {
		tag, err = e.pool.Exec(ctx, e.sqlKV.setState, l.seq, int64(t.Token), value)
		return err
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" { // the message was deleted meanwhile
		return fmt.Errorf("postgres: set state of message %d: %w", l.seq, engines.ErrLeaseLost)
	}
	if err != nil {
		return e.opErr("set state of message in", "", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: set state of message %d: %w", l.seq, engines.ErrLeaseLost)
	}
	return nil
}
