package disk

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/kvmem"
)

// Key-value stores, transactional settles and per-message state.
//
// A store is a bucket kv/NAME in the engine's bbolt file: its entries in
// the sub-bucket "e" (value: version, expiry, bytes) and, under the key
// "v", the highest version it handed out, so that a version is never
// reused after a restart even for a deleted key. The whole store is also
// held in memory (kvmem), loaded at open, so reads never touch the file.
//
// Writes are ops of the group committer like every other change: KV.Apply
// and SettleTx change the in-memory index and append their ops to the
// pending batch in one call, so they land in one bbolt transaction with
// the ack and the publishes of the same delivery, and share its fsync
// with every other delivery of the batch. SettleTx holds txMu, then the
// stores' locks (by name), then the source queue's lock, then the target
// queues' locks (by name); it checks everything before it changes
// anything. Nothing else holds two of these locks at once, so nothing can
// deadlock.
//
// Per-message state lives in the queue's sub-bucket "u" by sequence: the
// op that deletes a message (ack, dead letter, TTL, purge) deletes it in
// the same transaction. SetState always waits for its commit, whatever
// the sync mode: it must survive a crash once it returned.
//
// Expired keys are absent at once for every read and removed from the
// file by a sweep: every kvmem.sweepEvery commits of a store (through its
// expiry heap, so a sweep costs the expired keys, not the live ones), at open, and
// once a minute (sweepLoop).

var (
	bucketKV   = []byte("kv")
	subEntries = []byte("e")
	keyLastVer = []byte("v")
)

// sweepInterval is how often sweepLoop removes expired keys.
const sweepInterval = time.Minute

var (
	_ engines.KVEngine     = (*Engine)(nil)
	_ engines.TxSettler    = (*queue)(nil)
	_ engines.StateSettler = (*queue)(nil)
)

// encodeKV is an opKVPut's val: key length, key, version, expiry, value.
func encodeKV(key string, e kvmem.Entry) []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(key)+16+len(e.Value))
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	return append(encodeEntry(b, e), e.Value...)
}

func encodeEntry(b []byte, e kvmem.Entry) []byte {
	b = binary.BigEndian.AppendUint64(b, e.Version)
	return binary.BigEndian.AppendUint64(b, uint64(e.Expires))
}

func decodeEntry(v []byte) (kvmem.Entry, error) {
	if len(v) < 16 {
		return kvmem.Entry{}, fmt.Errorf("entry of %d bytes: %w", len(v), errCorrupt)
	}
	return kvmem.Entry{Version: binary.BigEndian.Uint64(v), Expires: int64(binary.BigEndian.Uint64(v[8:])), Value: bytes.Clone(v[16:])}, nil
}

// storeBucket returns kv/NAME/e and kv/NAME, creating them.
func storeBucket(tx *bolt.Tx, name string) (entries, root *bolt.Bucket, err error) {
	kv, err := tx.CreateBucketIfNotExists(bucketKV)
	if err != nil {
		return nil, nil, err
	}
	root, err = kv.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, nil, err
	}
	entries, err = root.CreateBucketIfNotExists(subEntries)
	return entries, root, err
}

// kvBuckets are the buckets of the stores one commit writes, found once
// per commit rather than once per op (three bucket lookups each), and the
// highest version each store handed out: every transaction that writes a
// store carries an opKVLast, and only the last of them in a commit needs
// writing (versions only grow), so a commit puts the counter once a store.
type kvBuckets []kvStore

type kvStore struct {
	name          string
	entries, root *bolt.Bucket
	last          uint64
	setLast       bool
}

// store returns name's buckets, creating them.
func (kv *kvBuckets) store(tx *bolt.Tx, name string) (*kvStore, error) {
	for i := range *kv {
		if (*kv)[i].name == name { // a commit writes few stores: a scan beats a map
			return &(*kv)[i], nil
		}
	}
	entries, root, err := storeBucket(tx, name)
	if err != nil {
		return nil, err
	}
	*kv = append(*kv, kvStore{name: name, entries: entries, root: root})
	return &(*kv)[len(*kv)-1], nil
}

// apply performs one key-value op inside the commit's transaction; an
// opKVLast is only noted, for flush.
func (kv *kvBuckets) apply(tx *bolt.Tx, o *op) error {
	st, err := kv.store(tx, o.key)
	if err != nil {
		return err
	}
	switch o.kind {
	case opKVPut:
		n, k := binary.Uvarint(o.val)
		if k <= 0 || uint64(len(o.val)-k) < n {
			return fmt.Errorf("malformed put: %w", errCorrupt)
		}
		return st.entries.Put(o.val[k:k+int(n)], o.val[k+int(n):])
	case opKVDel:
		return st.entries.Delete(o.val)
	case opKVLast:
		st.last, st.setLast = max(st.last, o.seq), true
		return nil
	}
	return fmt.Errorf("unknown op %d", o.kind)
}

// flush writes the version counters the commit's opKVLast ops noted.
func (kv kvBuckets) flush() error {
	for i := range kv {
		if st := &kv[i]; st.setLast {
			if err := st.root.Put(keyLastVer, seqBytes(st.last)); err != nil {
				return fmt.Errorf("kv %q: %w", st.name, err)
			}
		}
	}
	return nil
}

// recoverKV loads every store into memory and deletes the keys that
// expired while the engine was stopped.
func (e *Engine) recoverKV(tx *bolt.Tx) error {
	kv := tx.Bucket(bucketKV)
	if kv == nil {
		return nil
	}
	e.stores = make(map[string]*kvmem.Store)
	now := time.Now().UnixNano()
	return kv.ForEach(func(name, v []byte) error {
		if v != nil {
			return fmt.Errorf("stray key %q among the stores: %w", name, errCorrupt)
		}
		root := kv.Bucket(name)
		s := kvmem.New(string(name), 0, time.Now)
		if lv := root.Get(keyLastVer); lv != nil {
			if len(lv) != 8 {
				return fmt.Errorf("store %q: version counter: %w", name, errCorrupt)
			}
			s.LoadVersion(binary.BigEndian.Uint64(lv))
		}
		entries := root.Bucket(subEntries)
		if entries == nil {
			return fmt.Errorf("store %q: entries missing: %w", name, errCorrupt)
		}
		var expired [][]byte
		if err := entries.ForEach(func(k, v []byte) error {
			ent, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("store %q, key %q: %w", name, k, err)
			}
			if ent.Expires != 0 && now >= ent.Expires {
				expired = append(expired, bytes.Clone(k))
				return nil
			}
			s.Load(string(k), ent)
			return nil
		}); err != nil {
			return err
		}
		for _, k := range expired {
			if err := entries.Delete(k); err != nil {
				return err
			}
		}
		e.stores[string(name)] = s
		return nil
	})
}

// sweepLoop removes expired keys from every store once a sweepInterval
// until done is closed.
func (e *Engine) sweepLoop(done <-chan struct{}) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), sweepInterval)
			_, err := e.SweepKV(ctx)
			cancel()
			if err != nil && !errors.Is(err, engines.ErrClosed) {
				e.log.Warn("key-value sweep failed", zap.String("file", e.path), zap.Error(err))
			}
		}
	}
}

// SweepKV removes the expired keys of every store from memory and from the
// file now, and returns how many it removed. The engine sweeps on its own
// (at open, once a minute, and every few thousand writes of a store); an
// expired key is absent for every read whether or not it was swept.
func (e *Engine) SweepKV(ctx context.Context) (int, error) {
	e.mu.Lock()
	stores := make([]*kvmem.Store, 0, len(e.stores))
	for _, s := range e.stores {
		stores = append(stores, s)
	}
	e.mu.Unlock()
	n := 0
	var last *batch
	for _, s := range stores {
		s.Lock()
		gone := s.SweepLocked()
		if len(gone) > 0 {
			b, err := e.add(kvDelOps(nil, s.Name(), gone)...)
			if err != nil {
				s.Unlock()
				return n, err
			}
			last = b
		}
		s.Unlock()
		n += len(gone)
	}
	if last != nil {
		if err := last.Wait(ctx); err != nil {
			return n, err
		}
	}
	return n, nil
}

func kvDelOps(ops []op, store string, keys []string) []op {
	for _, k := range keys {
		ops = append(ops, op{kind: opKVDel, key: store, val: []byte(k)})
	}
	return ops
}

// kvOps appends the ops that store a committed kvmem batch.
func kvOps(ops []op, store string, p *kvmem.Prepared, swept []string) []op {
	for _, c := range p.Changes() {
		if c.Deleted {
			ops = append(ops, op{kind: opKVDel, key: store, val: []byte(c.Key)})
		} else {
			ops = append(ops, op{kind: opKVPut, key: store, val: encodeKV(c.Key, c.Entry)})
		}
	}
	ops = kvDelOps(ops, store, swept)
	return append(ops, op{kind: opKVLast, key: store, seq: p.LastVersion()})
}

// OpenKV implements engines.KVEngine. The store's bucket is created with
// its first write.
func (e *Engine) OpenKV(ctx context.Context, spec engines.KVSpec) (engines.KV, error) {
	h, err := kvmem.OpenHandle("disk", spec, maxNameLen, e.store, e.isClosed)
	if err != nil {
		return nil, err
	}
	return &kvHandle{Handle: h, e: e}, nil
}

func (e *Engine) store(name string) (*kvmem.Store, error) {
	return kvmem.Lookup("disk", &e.mu, &e.closed, &e.stores, name)
}

func (e *Engine) isClosed() bool { return e.closedFlag.Load() }

// wait waits for b when the engine's sync mode (or a full batch) says a
// settle must.
func (e *Engine) waitSettle(ctx context.Context, b *batch) error {
	if b != nil && (e.opts.Sync == SyncAlways || e.full(b)) {
		return b.Wait(ctx)
	}
	return nil
}

// kvHandle is one OpenKV's view of a store: kvmem.Handle reads, Apply
// writes as this engine does.
type kvHandle struct {
	*kvmem.Handle
	e *Engine
}

// Apply implements engines.KV: durable when it returns (sync = "always"),
// like an Enqueue.
func (h *kvHandle) Apply(ctx context.Context, ops ...engines.KVOp) ([]engines.KVEntry, error) {
	if err := h.Check("apply"); err != nil {
		return nil, err
	}
	h.Store.Lock()
	p, err := h.Store.PrepareLocked(ops)
	if err != nil {
		h.Store.Unlock()
		return nil, fmt.Errorf("disk: %w", err)
	}
	var b *batch
	if len(p.Changes()) > 0 {
		swept := h.Store.CommitLocked(p)
		b, err = h.e.add(kvOps(nil, h.Store.Name(), p, swept)...)
	}
	h.Store.Unlock()
	if err != nil {
		return nil, fmt.Errorf("disk: kv apply on %q: %w", h.Store.Name(), err)
	}
	if b != nil {
		if err := b.Wait(ctx); err != nil {
			return nil, fmt.Errorf("disk: kv apply on %q: %w", h.Store.Name(), err)
		}
	}
	return p.Results(), nil
}

// txStores groups eff's KV batches per store in lock order
// (kvmem.GroupByStore) and checks their ops' limits.
func (e *Engine) txStores(eff *engines.Effects) ([]*kvmem.StoreOps, error) {
	stores, err := kvmem.GroupByStore(eff, e.store)
	if err != nil {
		return nil, err
	}
	if err := kvmem.ValidateGroups(stores); err != nil {
		return nil, err
	}
	return stores, nil
}

// txPublish is one target queue's share of a transaction's publishes.
type txPublish struct {
	q        *queue
	msgs     []engines.Message
	payloads [][]byte
	seqs     []uint64
	idx      []int // positions in eff.Publish, to write the IDs back
	// Storage for the slices when the target gets one message, as a
	// delivery's usually does: one allocation rather than five.
	msg1 [1]engines.Message
	pay1 [1][]byte
	seq1 [1]uint64
	idx1 [1]int
	out1 [1]*txPublish
}

// txTargets checks eff's publishes as Enqueue would, encodes them outside
// any lock and groups them by target queue, sorted by name (the lock
// order).
func (e *Engine) txTargets(eff *engines.Effects, now int64) ([]*txPublish, error) {
	if eff == nil || len(eff.Publish) == 0 {
		return nil, nil
	}
	var out []*txPublish
	for i := range eff.Publish {
		p := &eff.Publish[i]
		switch {
		case len(p.Message.Body) > e.opts.MaxMessageSize:
			return nil, fmt.Errorf("publish %d to %q: body is %d bytes, limit %d: %w", i, p.Queue, len(p.Message.Body), e.opts.MaxMessageSize, engines.ErrTooLarge)
		case p.Message.TTL < 0 || p.Message.Delay < 0 || p.Queue == "" || len(p.Queue) > maxNameLen:
			return nil, fmt.Errorf("publish %d to %q: bad queue name, negative delay or TTL: %w", i, p.Queue, engines.ErrInvalid)
		}
		var tp *txPublish
		for _, t := range out { // a delivery publishes to a queue or two: a scan beats a map
			if t.q.name == p.Queue {
				tp = t
				break
			}
		}
		if tp == nil {
			q, _, err := e.queue(p.Queue)
			if err != nil {
				return nil, err
			}
			tp = &txPublish{q: q}
			tp.msgs, tp.idx = tp.msg1[:0], tp.idx1[:0]
			if out == nil {
				out = tp.out1[:0] // the first target holds the list
			}
			out = append(out, tp)
		}
		tp.msgs = append(tp.msgs, p.Message)
		tp.idx = append(tp.idx, i)
	}
	for _, tp := range out {
		if len(tp.msgs) == 1 {
			tp.payloads, tp.seqs = e.encodeInto(tp.msgs, now, tp.pay1[:], tp.seq1[:])
		} else {
			tp.payloads, tp.seqs = e.encode(tp.msgs, now)
		}
		for j, i := range tp.idx {
			eff.Publish[i].Message.ID = tp.msgs[j].ID
		}
	}
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b *txPublish) int { return cmp.Compare(a.q.name, b.q.name) })
	}
	return out, nil
}

// SettleTx implements engines.TxSettler: the ack, the publishes and the
// store writes are ops of one group commit, hence of one bbolt
// transaction; on any error none of them is made.
func (q *queue) SettleTx(ctx context.Context, t engines.Ticket, s engines.Settlement, eff *engines.Effects) error {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return fmt.Errorf("disk: settle tx on %q: foreign ticket: %w", q.name, engines.ErrNotLeased)
	}
	if s.Verdict != engines.Ack {
		return fmt.Errorf("disk: settle tx on %q: verdict %s, want ack: %w", q.name, s.Verdict, engines.ErrInvalid)
	}
	e := q.e
	stores, err := e.txStores(eff)
	if err != nil {
		return fmt.Errorf("disk: settle tx on %q: %w", q.name, err)
	}
	now := e.now()
	targets, err := e.txTargets(eff, now)
	if err != nil {
		return fmt.Errorf("disk: settle tx on %q: %w", q.name, err)
	}
	b, err := q.settleTx(r, t.Token, s, stores, targets, now)
	if err != nil {
		return err
	}
	if err := e.waitSettle(ctx, b); err != nil {
		return fmt.Errorf("disk: settle tx on %q: %w", q.name, err)
	}
	return nil
}

func (q *queue) settleTx(r *record, token uint64, s engines.Settlement, stores []*kvmem.StoreOps, targets []*txPublish, now int64) (*batch, error) {
	e := q.e
	e.txMu.Lock()
	defer e.txMu.Unlock()
	// One deferred unlock for all the locks taken below, rather than a
	// defer in each loop: those are allocated on the heap, one per lock.
	var targetsLocked int
	for _, so := range stores {
		so.Store.Lock()
	}
	q.mu.Lock()
	defer func() {
		for _, tp := range targets[:targetsLocked] {
			if tp.q != q {
				tp.q.mu.Unlock()
			}
		}
		q.mu.Unlock()
		for _, so := range stores {
			so.Store.Unlock()
		}
	}()
	if q.closed {
		return nil, q.errClosed("settle tx on")
	}
	if r.state != stateLeased || r.Token != token {
		return nil, fmt.Errorf("disk: settle tx on %q: %w", q.name, engines.ErrLeaseLost)
	}
	for _, so := range stores {
		p, err := so.Store.PrepareLocked(so.Ops)
		if err != nil {
			return nil, fmt.Errorf("disk: settle tx on %q: %w", q.name, err)
		}
		so.Prepared = p
	}
	for _, tp := range targets {
		targetsLocked++
		if tp.q == q {
			continue
		}
		tp.q.mu.Lock()
		if tp.q.closed {
			return nil, tp.q.errClosed("publish to")
		}
	}
	// Everything is checked: from here on nothing fails but the commit.
	out, err := q.policy.Settle(&r.Lease, s, &q.st)
	if err != nil {
		return nil, fmt.Errorf("disk: settle tx on %q: %w", q.name, err)
	}
	q.leases.Remove(int(r.idx))
	q.release(r, now)
	_ = out // an ack always drops
	ops := append(e.txOps[:0], op{kind: opDelMsg, q: q, seq: r.seq})
	for _, tp := range targets {
		ops = tp.q.enqueueOps(ops, tp.msgs, tp.payloads, tp.seqs, now)
	}
	for _, so := range stores {
		if len(so.Prepared.Changes()) == 0 {
			continue // checks only
		}
		swept := so.Store.CommitLocked(so.Prepared)
		ops = kvOps(ops, so.Store.Name(), so.Prepared, swept)
	}
	b, err := e.add(ops...)
	clear(ops) // hold nothing alive until the next settle
	e.txOps = ops[:0]
	return b, err
}

// leased returns r when t still holds its lease.
func (q *queue) leased(t engines.Ticket, op string) (*record, error) {
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return nil, fmt.Errorf("disk: %s on %q: foreign ticket: %w", op, q.name, engines.ErrNotLeased)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, q.errClosed(op + " on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		return nil, fmt.Errorf("disk: %s on %q: %w", op, q.name, engines.ErrLeaseLost)
	}
	return r, nil
}

// State implements engines.StateSettler, reading the committed state from
// the file (SetState waits for its commit, so it is there).
func (q *queue) State(ctx context.Context, t engines.Ticket) ([]byte, error) {
	r, err := q.leased(t, "state")
	if err != nil {
		return nil, err
	}
	var out []byte
	var key [8]byte
	err = q.e.db.View(func(tx *bolt.Tx) error {
		x, err := queueBuckets(tx, q.name, false)
		if err != nil || x == nil || x.user == nil {
			return err
		}
		if v := x.user.Get(seqKey(&key, r.seq)); v != nil {
			out = append(make([]byte, 0, len(v)), v...)
		}
		return nil
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return nil, q.errClosed("state")
	}
	if err != nil {
		return nil, fmt.Errorf("disk: state of %q in %q: reading %s: %w", r.id, q.name, q.e.path, err)
	}
	if out == nil {
		return nil, fmt.Errorf("disk: state of %q in %q: %w", r.id, q.name, engines.ErrNotFound)
	}
	return out, nil
}

// SetState implements engines.StateSettler: durable when it returns.
func (q *queue) SetState(ctx context.Context, t engines.Ticket, value []byte) error {
	if len(value) > engines.MaxStateSize {
		return fmt.Errorf("disk: set state on %q: %d bytes, limit %d: %w", q.name, len(value), engines.MaxStateSize, engines.ErrTooLarge)
	}
	r, ok := t.Ref.(*record)
	if !ok || r == nil {
		return fmt.Errorf("disk: set state on %q: foreign ticket: %w", q.name, engines.ErrNotLeased)
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return q.errClosed("set state on")
	}
	if r.state != stateLeased || r.Token != t.Token {
		q.mu.Unlock()
		return fmt.Errorf("disk: set state on %q: %w", q.name, engines.ErrLeaseLost)
	}
	// Appended under the queue's lock, so it is ordered before any later
	// settle of the message.
	b, err := q.e.add(op{kind: opPutUser, q: q, seq: r.seq, val: append(make([]byte, 0, len(value)), value...)})
	q.mu.Unlock()
	if err != nil {
		return fmt.Errorf("disk: set state on %q: %w", q.name, err)
	}
	if err := b.Wait(ctx); err != nil {
		return fmt.Errorf("disk: set state on %q: %w", q.name, err)
	}
	return nil
}
