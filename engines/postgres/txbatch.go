package postgres

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/kvmem"
)

// Group commit of SettleTx. A transaction per delivery would cost a commit
// (an fsync) and half a dozen round trips per delivery. So concurrent
// SettleTx calls share one transaction of a fixed number of round trips
// however many deliveries it carries:
//
//  1. one pipeline locks the deliveries' message rows whose lease is still
//     held (FOR UPDATE, one primary-key probe each, in seq order; not in
//     the optimistic first run of runTxBatch, which acks in step 3), then
//     every key they name (advisory locks in ascending id: keyLocks),
//     draws the versions the group may hand out and reads the keys;
//  2. in Go, each delivery in turn (a lost lease: out) runs its ops on the
//     stores as the earlier deliveries of the group left them (kvmem, on
//     the database's clock): a failed check puts it out with ErrConflict,
//     and the next ones never see its writes;
//  3. in the optimistic run, one statement deletes their messages (the
//     ack, by seq and token: every one found, or the run is rolled back
//     and repeated locking); then the publishes of the deliveries still
//     in, one INSERT per target queue, in queue order;
//  4. one pipeline deletes their messages (in the locking run: the ack, by
//     the ctid found in step 1), counts them, writes the final value of
//     every key they changed and sends the NOTIFY; then COMMIT.
//
// The message rows locked in step 1 (or deleted in step 3) are what make
// the ack certain at the COMMIT: nobody else can settle, reap or re-lease
// them meanwhile. The key
// locks are what make the checks of step 2 certain: nobody else writes
// those keys until this transaction has committed or rolled back.
//
// Up to maxGroups groups of one process are in flight at once, each on a
// connection of its own, as are those of other processes: one group's
// commit (its fsync) no longer holds up the next. Two groups lock
// disjoint message rows (a lease has one holder), then keys in ascending
// id, so they cannot deadlock; two that name a common key run one after
// the other from that key on, the second reading what the first
// committed, so a delivery that read the key before the first committed
// conflicts and is requeued: no update is lost.
//
// There is no background goroutine: a caller that waits for its request
// while it is still queued and fewer than maxGroups groups are running
// runs the next group itself (up to maxTxBatch requests in the order
// started, its own among them), answers everyone in it, and waits again
// if its own was not taken; the others wait for a group to end. The
// settles a dispatcher starts for a whole batch before it waits
// (StartSettleTx) therefore join one group, and the batches of several
// workers run as several groups at once.

// maxTxBatch bounds the deliveries of one transaction, so one group holds
// its keys' locks for a bounded time.
const maxTxBatch = 256

// maxGroups is how many groups of SettleTx one engine runs at once: each
// holds a pooled connection for its transaction, so at most half the pool
// (receives, acks and reads need the rest), and at most 4.
func (e *Engine) maxGroups() int { return groupsFor(e.opts.MaxConns) }

func groupsFor(maxConns int32) int { return max(1, min(4, int(maxConns)/2)) }

// txReq is one SettleTx waiting for its transaction; it is the
// engines.Pending of StartSettleTx.
type txReq struct {
	e      *Engine
	l      *lease
	token  int64
	stores []*txStore
	pubs   []*txPublish
	eff    *engines.Effects
	woke   []wakeups

	queued bool          // in txBatcher.pending; guarded by txBatcher.mu
	done   chan struct{} // closed once err is final
	err    error         // set by the leader, then by finish
}

// txBatcher collects SettleTx requests.
type txBatcher struct {
	mu      sync.Mutex
	pending []*txReq
	running int           // groups in flight
	changed chan struct{} // closed and replaced when a group ends
}

// start queues r for the next group.
func (b *txBatcher) start(r *txReq) {
	b.mu.Lock()
	r.queued = true
	b.pending = append(b.pending, r)
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	b.mu.Unlock()
}

// Wait implements engines.Pending: it returns r's outcome, running the
// next group itself whenever r is still queued and a group may start. A
// caller whose ctx ends stops waiting; r stays queued, and a later group
// settles it (or finds its lease lost).
func (r *txReq) Wait(ctx context.Context) error {
	b := &r.e.kv.txb
	for {
		b.mu.Lock()
		select {
		case <-r.done:
			b.mu.Unlock()
			return r.err
		default:
		}
		if r.queued && b.running < r.e.maxGroups() {
			batch := b.take()
			b.running++
			b.mu.Unlock()
			b.lead(r.e, batch)
			continue
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-r.done:
			return r.err
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take removes the next group from pending: up to maxTxBatch requests, in
// the order started. b.mu is held.
func (b *txBatcher) take() []*txReq {
	n := min(len(b.pending), maxTxBatch)
	batch := slices.Clone(b.pending[:n])
	clear(b.pending[:n])
	b.pending = append(b.pending[:0], b.pending[n:]...)
	for _, r := range batch {
		r.queued = false
	}
	return batch
}

// lead runs one group and tells the waiters it is over.
func (b *txBatcher) lead(e *Engine, batch []*txReq) {
	e.runTxBatch(batch)
	for _, r := range batch {
		r.finish()
		close(r.done)
	}
	b.mu.Lock()
	b.running--
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// lockedRow is a message row a group locked: where it is, and its queue.
type lockedRow struct {
	tid   pgtype.TID
	queue int32
}

// batchStore is one store as a group sees it: the keys the group names
// locked and loaded, and the keys its deliveries changed.
type batchStore struct {
	storeLoad
	changed map[string]bool
}

// errLeasesMoved ends a group's optimistic transaction whose acks did not
// all find their lease: it is rolled back and run again, locking first.
var errLeasesMoved = errors.New("a lease of the group was lost")

// runTxBatch commits batch in one transaction and sets each request's err.
//
// A group whose deliveries are all of unordered queues first runs without
// locking its message rows in step 1: it assumes every lease is still
// held, and its step 3 starts by deleting the acked rows (the ack: by seq,
// token and an unexpired lease, the row locks taken then, before any
// counter row) and counting them. That saves the database a statement and
// a row lock (a WAL record) per delivery. Should a lease have been lost
// since the delivery was handled (expired and re-leased, reaped), fewer
// rows go than were acked: the transaction is rolled back, nothing of it
// having happened, and the group runs again as the top of this file
// describes, locking the leases still held first, which puts the lost one
// out. The row locks
// still come before any counter row, and after the key locks only rows a
// group holds the lease of, which no other group's statements match.
func (e *Engine) runTxBatch(batch []*txReq) {
	optimistic := true
	for _, r := range batch {
		optimistic = optimistic && !r.l.ordered
	}
	// The acks go before the publishes, so a retry finds their messages
	// as the deliveries left them: no ID assigned yet.
	if optimistic {
		if !errors.Is(e.runTxGroup(batch, false), errLeasesMoved) {
			return
		}
		e.kv.txRetries.Add(1)
	}
	_ = e.runTxGroup(batch, true)
}

// runTxGroup runs batch's transaction, locking the leases in step 1 when
// lock is set (see runTxBatch), sets each request's err and returns the
// transaction's error.
func (e *Engine) runTxGroup(batch []*txReq, lock bool) error {
	ctx := e.ctx
	for _, r := range batch {
		r.err, r.woke = nil, r.woke[:0]
	}
	// The stores of the whole batch, in name order, each with every key
	// any delivery names and the versions all of them could need.
	byName := map[string]*batchStore{}
	var stores []*batchStore
	for _, r := range batch {
		for _, ts := range r.stores {
			bs := byName[ts.name]
			if bs == nil {
				bs = &batchStore{storeLoad: storeLoad{name: ts.name}, changed: map[string]bool{}}
				byName[ts.name] = bs
				stores = append(stores, bs)
			}
			bs.add(ts.ops)
		}
	}
	slices.SortFunc(stores, func(a, b *batchStore) int {
		if a.name < b.name {
			return -1
		}
		if a.name > b.name {
			return 1
		}
		return 0
	})
	// The leases in ascending seq order: the order lockLeases locks them.
	bySeq := slices.Clone(batch)
	slices.SortFunc(bySeq, func(a, b *txReq) int { return cmp.Compare(a.l.seq, b.l.seq) })
	seqs := make([]int64, len(bySeq))
	tokens := make([]int64, len(bySeq))
	for i, r := range bySeq {
		seqs[i], tokens[i] = r.l.seq, r.token
	}

	err := e.inTx(ctx, func(tx *pgx.Conn) error {
		// 1. Lock the leases still held and the keys; read the keys.
		held := make(map[int64]lockedRow, len(batch))
		var b pgx.Batch
		b.Queue("BEGIN")
		if lock {
			b.Queue(e.sqlKV.lockLeases, seqs, tokens).Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var (
						seq int64
						row lockedRow
					)
					if err := rows.Scan(&seq, &row.tid, &row.queue); err != nil {
						return err
					}
					held[seq] = row
				}
				return rows.Err()
			})
		}
		if len(stores) > 0 {
			loads := make([]*storeLoad, len(stores))
			for i, bs := range stores {
				loads[i] = &bs.storeLoad
			}
			queueKeyLocks(&b, e, loads)
		}
		for _, bs := range stores {
			bs := bs
			bs.queue(&b, e, func(k []byte) {
				bs.changed[string(k)] = true // expired: deleted below unless rewritten
			})
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}

		// 2. Each delivery in turn, on the stores as the earlier ones left them.
		var in []*txReq
		for _, r := range batch {
			if _, ok := held[r.l.seq]; lock && !ok {
				r.err = engines.ErrLeaseLost
				continue
			}
			if err := e.runOps(r, byName); err != nil {
				r.err = err
				continue
			}
			in = append(in, r)
		}

		// 3. Optimistic: the acks first, every one of them or a retry.
		var acked map[int32]int64
		if !lock && len(in) > 0 {
			acked = map[int32]int64{}
			aseqs, atokens := make([]int64, 0, len(in)), make([]int64, 0, len(in))
			for _, r := range bySeq {
				if r.err == nil {
					aseqs, atokens = append(aseqs, r.l.seq), append(atokens, r.token)
				}
			}
			rows, err := tx.Query(ctx, e.sqlKV.ackHeld, aseqs, atokens)
			if err != nil {
				return err
			}
			var q int32
			tag, err := pgx.ForEachRow(rows, []any{&q}, func() error {
				acked[q]++
				return nil
			})
			if err != nil {
				return err
			}
			if tag.RowsAffected() != int64(len(aseqs)) {
				return errLeasesMoved
			}
		}

		// The publishes, one statement per target queue.
		type target struct {
			h    *handle
			msgs []engines.Message
			from []*txPublish
		}
		var targets []*target
		byQueue := map[*handle]*target{}
		for _, r := range in {
			for _, tp := range r.pubs {
				t := byQueue[tp.h]
				if t == nil {
					t = &target{h: tp.h}
					byQueue[tp.h] = t
					targets = append(targets, t)
				}
				t.msgs = append(t.msgs, tp.msgs...)
				t.from = append(t.from, tp)
			}
		}
		// In queue order, as every group takes the counters' rows.
		slices.SortFunc(targets, func(a, b *target) int { return cmp.Compare(a.h.id, b.h.id) })
		var queues []int32
		for _, t := range targets {
			dedup, lock := t.h.needs(t.msgs)
			w, err := t.h.enqueueIn(ctx, tx, t.msgs, dedup, lock)
			if err != nil {
				return err
			}
			queues = append(queues, w.queues...)
			// The IDs the engine assigned go back to each delivery's share.
			j := 0
			for _, tp := range t.from {
				j += copy(tp.msgs, t.msgs[j:j+len(tp.msgs)])
			}
			if len(in) > 0 {
				in[0].woke = append(in[0].woke, w) // woken once, after the commit
			}
		}

		// 4. The acks, the final values of the keys, the NOTIFY.
		b = pgx.Batch{}
		var (
			ordered [2][]int64
			tids    []pgtype.TID
		)
		if lock {
			acked = map[int32]int64{}
			for _, r := range in {
				if r.l.ordered {
					ordered[0], ordered[1] = append(ordered[0], r.l.seq), append(ordered[1], r.token)
				} else {
					row := held[r.l.seq]
					tids = append(tids, row.tid)
					acked[row.queue]++
				}
			}
		}
		if len(tids) > 0 {
			b.Queue(e.sqlKV.ackLocked, tids)
		}
		if len(acked) > 0 {
			// Counter rows in queue order, as any two batches lock them.
			qs := slices.Sorted(maps.Keys(acked))
			ns := make([]int64, len(qs))
			for i, q := range qs {
				ns[i] = acked[q]
			}
			b.Queue(e.sqlKV.countAcked, qs, ns)
		}
		if len(ordered[0]) > 0 {
			b.Queue(e.sql.ackOrdered, ordered[0], ordered[1])
		}
		for _, bs := range stores {
			queueFinal(&b, e, bs)
		}
		if len(queues) > 0 {
			// Rides in tx, like EnqueueTx's: other processes' receivers
			// learn of the publishes when they are committed.
			b.Queue(e.sql.notify, e.channel, queues)
		}
		// No check that every ack found its row before the COMMIT: the
		// rows were locked in step 1 with the same now(), so they are.
		b.Queue("COMMIT")
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		// Rolled back: nothing of the batch happened.
		for _, r := range batch {
			if r.err == nil || errors.Is(err, errLeasesMoved) {
				r.err = err
			}
		}
	}
	return err
}

// runOps runs r's ops on the batch's stores: all of its stores or none.
func (e *Engine) runOps(r *txReq, byName map[string]*batchStore) error {
	ps := make([]*kvmem.Prepared, len(r.stores))
	for i, ts := range r.stores {
		bs := byName[ts.name]
		bs.s.Lock()
		p, err := bs.s.PrepareLocked(ts.ops)
		bs.s.Unlock()
		if err != nil {
			return err
		}
		ps[i] = p
	}
	for i, ts := range r.stores {
		bs := byName[ts.name]
		bs.s.Lock()
		bs.s.CommitLocked(ps[i])
		bs.s.Unlock()
		for _, c := range ps[i].Changes() {
			bs.changed[c.Key] = true
		}
	}
	return nil
}

// queueFinal queues the statements that store the final value of every key
// of bs the batch changed (or found expired).
func queueFinal(b *pgx.Batch, e *Engine, bs *batchStore) {
	var (
		pk, pv [][]byte
		pn     []int64
		px     []*time.Time
		dk     [][]byte
	)
	bs.s.Lock()
	defer bs.s.Unlock()
	now := bs.clock.UnixNano()
	for k := range bs.changed {
		ent, ok := bs.s.EntryLocked(k)
		if !ok || (ent.Expires != 0 && now >= ent.Expires) {
			dk = append(dk, []byte(k))
			continue
		}
		pk = append(pk, []byte(k))
		pv = append(pv, ent.Value)
		pn = append(pn, bs.real(ent.Version))
		var x *time.Time
		if ent.Expires != 0 {
			t := time.Unix(0, ent.Expires)
			x = &t
		}
		px = append(px, x)
	}
	if len(dk) > 0 {
		b.Queue(e.sqlKV.del, bs.name, dk)
	}
	bs.queuePuts(b, e, pk, pv, pn, px)
}

// inTx runs f on a pooled connection on which f itself sends BEGIN and
// COMMIT inside its pipelines, saving the round trips of pgx's own
// Begin and Commit. On an error the transaction is rolled back (and a
// connection that cannot say so is closed by the pool, which never
// reuses one left inside a transaction).
func (e *Engine) inTx(ctx context.Context, f func(c *pgx.Conn) error) error {
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if err := f(conn.Conn()); err != nil {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK")
			cancel()
		}
		return err
	}
	return nil
}
