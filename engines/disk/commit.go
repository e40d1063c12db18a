package disk

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// Group commit. Every change to the store is an op appended, in order, to
// the engine's pending batch; one committer goroutine takes the whole batch,
// applies it in one bbolt transaction (one write of the dirty pages, two
// fdatasyncs) and then wakes everyone who waits on it. While a commit runs
// the next batch fills, so the number of fsyncs follows the disk's speed,
// not the number of callers: a lone producer gets one commit per call, and
// a hundred concurrent ones share each commit. There is no timer and no
// batch-size threshold to tune, unlike bbolt's DB.Batch (which waits up to
// MaxBatchDelay for company and runs each caller's function separately,
// retrying on failure): BenchmarkBoltBatch against BenchmarkEnqueue compares
// the two.
//
// Ops are appended under the lock of the queue they change, so the order
// on disk is the order in which the in-memory index changed.

type opKind uint8

const (
	opPutMsg     opKind = iota + 1 // store a new message; then index rec
	opDelMsg                       // remove a message and its state
	opPutState                     // store a message's mutable state
	opDeadLetter                   // move a message to dst, adding the dead-letter attributes, keeping its history (val: deadLetterHistory); then index rec in dst
	opRedrive                      // move a message to dst, removing them; then index rec in dst
	opPutDedup                     // remember a dedup ID
	opDelDedup                     // forget one
	opPutSpec                      // store a queue's settings (creating its buckets)
	opPutTick                      // record a schedule's last tick (key: schedule, val: tick); ticks.go
	opPutUser                      // store a message's per-message state (val), unless it is gone
	// Key-value ops name their store in key and have no queue (q nil).
	opKVPut  // val: encodeKV of one entry
	opKVDel  // val: the key
	opKVLast // seq: the store's highest version handed out
)

type op struct {
	kind opKind
	q    *queue
	seq  uint64
	val  []byte
	key  string // dedup ID; dead-letter reason
	rec  *record
	dst  *queue
}

// batch is one group commit: its ops, and done, closed once they are on
// disk (or failed, with err set).
type batch struct {
	ops  []op
	done chan struct{}
	err  error
}

// maxPending bounds the ops waiting for the next commit. Callers that do
// not wait for durability (sync = "batch" settles) wait once a batch is
// this full, so a flood of settles cannot grow memory without bound.
const maxPending = 1 << 16

// add appends ops to the pending batch and returns the batch to wait on.
// The caller holds the lock of the queue the ops belong to.
func (e *Engine) add(ops ...op) (*batch, error) {
	e.cmu.Lock()
	defer e.cmu.Unlock()
	if e.failed != nil {
		return nil, e.failed
	}
	if e.stopping {
		return nil, fmt.Errorf("disk: %s: %w", e.path, engines.ErrClosed)
	}
	b := e.cur
	wasEmpty := len(b.ops) == 0
	b.ops = append(b.ops, ops...)
	if wasEmpty {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
	return b, nil
}

// Wait blocks until b is on disk (it is the engines.Pending of StartSettle).
// A caller whose ctx ends stops waiting, but its ops are committed all the
// same: like a network timeout, the caller cannot tell whether its request
// took effect.
func (b *batch) Wait(ctx context.Context) error {
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// full reports whether b has reached maxPending ops.
func (e *Engine) full(b *batch) bool {
	e.cmu.Lock()
	defer e.cmu.Unlock()
	return len(b.ops) >= maxPending
}

// commitLoop is the committer goroutine.
func (e *Engine) commitLoop() {
	defer close(e.committerDone)
	prev := 0      // ops in the previous commit
	var spare []op // a committed batch's ops slice, for the next (recycle)
	for {
		e.cmu.Lock()
		// The waiters of the previous commit were just woken, and many
		// will be back with more within microseconds: let them run before
		// cutting the batch, or a commit would often take only the first
		// of them and the rest would wait a whole commit more. (Measured
		// with 8 single-message producers: 4 ops a commit without this,
		// 6-7 with it; a yield costs nanoseconds, a commit milliseconds.)
		for i := 0; i < 4 && len(e.cur.ops) < prev && !e.stopping; i++ {
			e.cmu.Unlock()
			runtime.Gosched()
			e.cmu.Lock()
		}
		for len(e.cur.ops) == 0 && !e.stopping {
			e.cmu.Unlock()
			<-e.kick
			e.cmu.Lock()
		}
		b := e.cur
		stop := e.stopping && len(b.ops) == 0
		if !stop {
			ops := spare
			if ops == nil {
				ops = make([]op, 0, min(cap(b.ops), 1024))
			}
			spare = nil
			e.cur = &batch{done: make(chan struct{}), ops: ops}
		}
		e.cmu.Unlock()
		if stop {
			return
		}
		prev = len(b.ops)
		e.commit(b)
		spare = e.recycle(b)
	}
}

// maxRecycled is the largest op slice (in ops) a commit hands on to the
// next batch; a larger one, left by a burst, goes to the collector
// rather than pinning its peak for the life of the engine.
const maxRecycled = 16 << 10

// recycle takes the op slice of committed batch b for a later batch, its
// ops cleared so that it holds no message or value alive: a transactional
// delivery appends four ops, and a fresh slice for every commit, grown by
// append, was a sixth of the bytes the engine allocated. Waiters keep b
// for done and err only; full (under cmu) then sees an empty batch, which
// is committed already.
func (e *Engine) recycle(b *batch) []op {
	e.cmu.Lock()
	ops := b.ops
	b.ops = nil
	e.cmu.Unlock()
	if cap(ops) > maxRecycled {
		return nil
	}
	clear(ops)
	return ops[:0]
}

// commit writes one batch and, once it is durable, indexes the messages it
// added before waking its waiters, so an Enqueue that returns has its
// messages visible to receivers.
func (e *Engine) commit(b *batch) {
	e.cmu.Lock()
	failed := e.failed
	e.cmu.Unlock()
	if failed != nil {
		// Nothing more is written after a failure (see fail).
		b.err = failed
		close(b.done)
		return
	}
	// The queues this batch touched get their counters rewritten with it.
	// A state written for a message that the same batch removes need not
	// be written at all: with sync = "batch" most leases are acked within
	// the commit that records them, and skipping their state saves a third
	// of the writes of a delivery.
	touched := make(map[*queue][]byte)
	var gone map[uint64]struct{}
	for i := range b.ops {
		o := &b.ops[i]
		if o.q == nil {
			continue // a key-value op
		}
		touched[o.q] = nil
		if o.dst != nil {
			touched[o.dst] = nil
		}
		switch o.kind {
		case opDelMsg, opDeadLetter, opRedrive:
			if gone == nil {
				gone = make(map[uint64]struct{})
			}
			gone[o.seq] = struct{}{}
		}
	}
	// Messages this batch adds are counted (EnqueuedTotal) only once they
	// are indexed, after the commit; the stored counters include them now,
	// or a queue that nothing touches afterwards would lose them.
	adds := make(map[*queue]int64)
	for i := range b.ops {
		switch o := &b.ops[i]; o.kind {
		case opPutMsg:
			adds[o.q]++
		case opDeadLetter, opRedrive:
			adds[o.dst]++
		}
	}
	for q := range touched {
		q.mu.Lock()
		st := q.st
		q.mu.Unlock()
		st.EnqueuedTotal += adds[q]
		touched[q] = encodeStats(&st)
	}
	err := e.db.Update(func(tx *bolt.Tx) error {
		bk := make(map[*queue]*buckets, len(touched))
		get := func(q *queue) (*buckets, error) {
			if x := bk[q]; x != nil {
				return x, nil
			}
			x, err := queueBuckets(tx, q.name, true)
			if err != nil {
				return nil, err
			}
			bk[q] = x
			return x, nil
		}
		var key [8]byte
		var kv kvBuckets
		for i := range b.ops {
			o := &b.ops[i]
			if o.kind == opPutState || o.kind == opPutUser {
				if _, ok := gone[o.seq]; ok {
					continue
				}
			}
			if o.q == nil {
				if err := kv.apply(tx, o); err != nil {
					return fmt.Errorf("kv %q: %w", o.key, err)
				}
				continue
			}
			x, err := get(o.q)
			if err != nil {
				return err
			}
			if err := e.apply(tx, o, x, get, &key); err != nil {
				return fmt.Errorf("queue %q: %w", o.q.name, err)
			}
		}
		for q, st := range touched {
			x, err := get(q)
			if err != nil {
				return err
			}
			if err := x.root.Put(keyStats, st); err != nil {
				return err
			}
		}
		if err := kv.flush(); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySeq, seqBytes(e.seq.Load()))
	})
	if err != nil {
		e.fail(err)
		b.err = e.failed
		close(b.done)
		return
	}
	// Index what was added, in commit order, one queue lock per run of ops.
	var locked *queue
	for i := range b.ops {
		o := &b.ops[i]
		var q *queue
		switch o.kind {
		case opPutMsg:
			q = o.q
		case opDeadLetter, opRedrive:
			if o.rec == nil {
				continue // the source was gone; nothing moved
			}
			q = o.dst
		default:
			continue
		}
		if q != locked {
			if locked != nil {
				locked.mu.Unlock()
			}
			q.mu.Lock()
			locked = q
		}
		q.added(o.rec, e.now())
	}
	if locked != nil {
		locked.mu.Unlock()
	}
	close(b.done)
}

// apply performs one op inside the commit's transaction.
func (e *Engine) apply(tx *bolt.Tx, o *op, x *buckets, get func(*queue) (*buckets, error), key *[8]byte) error {
	switch o.kind {
	case opPutMsg:
		return x.msgs.Put(seqKey(key, o.seq), o.val)
	case opDelMsg:
		k := seqKey(key, o.seq)
		if err := x.msgs.Delete(k); err != nil {
			return err
		}
		if err := x.delUser(k); err != nil {
			return err
		}
		return x.state.Delete(k)
	case opPutUser:
		k := seqKey(key, o.seq)
		if x.msgs.Get(k) == nil {
			return nil // settled in the meantime: its state went with it
		}
		u, err := x.root.CreateBucketIfNotExists(subUser)
		if err != nil {
			return err
		}
		x.user = u
		return u.Put(k, o.val)
	case opPutState:
		k := seqKey(key, o.seq)
		if x.msgs.Get(k) == nil {
			return nil // settled in the meantime: no state to keep
		}
		return x.state.Put(k, o.val)
	case opDeadLetter, opRedrive:
		k := seqKey(key, o.seq)
		v := x.msgs.Get(k)
		if v == nil {
			o.rec = nil
			return nil
		}
		reason := o.key
		var source string
		if o.kind == opDeadLetter {
			source = o.q.name
			if reason == "" {
				reason = "dead-lettered"
			}
		} else {
			reason = ""
		}
		now := e.now()
		nv, h, err := rewriteDeadLetter(v, source, reason, now)
		if err != nil {
			return fmt.Errorf("message %d: %w", o.seq, err)
		}
		if err := x.msgs.Delete(k); err != nil {
			return err
		}
		if err := x.state.Delete(k); err != nil {
			return err
		}
		if err := x.delUser(k); err != nil {
			return err
		}
		dx, err := get(o.dst)
		if err != nil {
			return err
		}
		r := o.rec
		r.id, r.prio, r.enq, r.due, r.expire, r.okey, r.source = h.id, h.prio, h.enq, now, 0, h.okey, h.deadLetterQ
		if err := dx.msgs.Put(seqKey(key, r.seq), nv); err != nil {
			return err
		}
		if o.kind == opRedrive || o.val == nil {
			return nil // a redrive starts afresh; a message never delivered has no history
		}
		r.Attempt, r.Failures = historyOf(o.val)
		return dx.state.Put(seqKey(key, r.seq), encodeState(state{attempt: r.Attempt, failures: r.Failures, due: now}))
	case opPutDedup:
		return x.dedup.Put([]byte(o.key), o.val)
	case opDelDedup:
		return x.dedup.Delete([]byte(o.key))
	case opPutSpec:
		return x.root.Put(keySpec, o.val)
	case opPutTick:
		return putTick(tx, o.key, o.val)
	}
	return fmt.Errorf("unknown op %d", o.kind)
}

// fail records the first commit error. From then on every operation
// returns it: after a failed write or fsync the kernel's page cache and the
// in-memory index can no longer be trusted to match the file (the lesson of
// PostgreSQL's "fsyncgate"), so the engine stops and a restart recovers
// from what is on disk.
func (e *Engine) fail(err error) {
	e.cmu.Lock()
	defer e.cmu.Unlock()
	if e.failed == nil {
		e.failed = fmt.Errorf("disk: commit to %s failed, the engine stopped (restart qrun to recover from the file): %w", e.path, err)
		e.log.Error("commit failed; the engine refuses further work until restarted", zap.String("file", e.path), zap.Error(err))
	}
}

// deadLetterHistory is an opDeadLetter's val: the attempts and failures the
// message reached in its source queue, which it keeps in the dead-letter
// queue (nil when it has none). Carried in val, which the op does not
// otherwise use, so that every other op stays as small as it was.
func deadLetterHistory(r *record) []byte {
	if r.Attempt == 0 && r.Failures == 0 {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint32(b[:], uint32(r.Attempt))
	binary.BigEndian.PutUint32(b[4:], uint32(r.Failures))
	return b[:]
}

func historyOf(v []byte) (attempt, failures int32) {
	return int32(binary.BigEndian.Uint32(v)), int32(binary.BigEndian.Uint32(v[4:]))
}
