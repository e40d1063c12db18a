package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"slices"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
)

// Damaged files. bbolt trusts its file: a page of garbage makes it panic,
// and a file cut short makes it fault reading past the end of its mapping.
// The engine therefore checks the header pages itself before handing the
// file to bbolt (checkMeta), and runs bbolt's open and its own full scan of
// the tree with faults turned into panics and panics into errors
// (guarded), so a damaged file is an error naming it, never a crash.

// bbolt's meta page layout (go.etcd.io/bbolt/internal/common): a 16-byte
// page header, then magic, version, page size, flags (uint32 each), the
// root bucket (root page, sequence), freelist page, high-water page id,
// transaction id and an FNV-64a checksum of the fields before it.
const (
	boltMagic     = 0xED0CDAED
	boltVersion   = 2
	metaOffset    = 16
	metaSumLen    = 56 // bytes covered by the checksum
	metaPageBytes = metaOffset + metaSumLen + 8
)

type metaInfo struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

func parseMeta(b []byte) (metaInfo, bool) {
	if len(b) < metaPageBytes {
		return metaInfo{}, false
	}
	m := b[metaOffset:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion {
		return metaInfo{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:metaSumLen])
	if h.Sum64() != le.Uint64(m[metaSumLen:]) {
		return metaInfo{}, false
	}
	return metaInfo{pageSize: le.Uint32(m[8:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
}

// checkMeta reads the two meta pages of an existing file and checks that
// the file holds every page the newer valid one refers to.
func checkMeta(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("disk: %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("disk: %s: %w", path, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("disk: %s is a directory, not a data file: %w", path, engines.ErrInvalid)
	}
	if fi.Size() == 0 {
		return nil // bbolt initialises an empty file
	}
	buf := make([]byte, metaPageBytes)
	read := func(off int64) (metaInfo, bool) {
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return metaInfo{}, false
		}
		return parseMeta(buf[:n])
	}
	m0, ok0 := read(0)
	pageSize := int64(os.Getpagesize())
	if ok0 {
		pageSize = int64(m0.pageSize)
	}
	m1, ok1 := read(pageSize)
	if !ok0 && !ok1 {
		return fmt.Errorf("disk: %s is not a qrun data file, or its header is damaged (no valid meta page)", path)
	}
	m := m0
	if !ok0 || (ok1 && m1.txid > m0.txid) {
		m = m1
	}
	if need := int64(m.pgid) * int64(m.pageSize); fi.Size() < need {
		return fmt.Errorf("disk: %s is truncated: %d bytes, its tree needs %d", path, fi.Size(), need)
	}
	return nil
}

// guarded runs fn with memory faults turned into panics and any panic
// turned into an error, for code that walks a possibly damaged file.
func guarded(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the file is damaged: %v", r)
		}
	}()
	return fn()
}

// openBolt opens the file under guard.
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	err = guarded(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	return db, err
}

// exhausted is a record whose lease was outstanding at the stop and which
// has now failed its queue's MaxAttempts times.
type exhausted struct {
	q      *queue
	r      *record
	reason string
}

// recover rebuilds the in-memory index from the file in one scan, checking
// every value on the way; it runs before the committer starts.
//
// Leases outstanding when the process stopped are expired here, and the
// expiry is written in the same transaction as the scan: the message's
// state loses its lease and gains the failure (and the retry delay), the
// queue's counters gain the expired lease, and a message that has used up
// its attempts is moved to the dead-letter queue. So each such lease is
// counted exactly once, however many times the engine is opened after, and
// a stop during the open itself leaves either the old state (counted at the
// next open) or the new one (not counted again), never half of each.
//
// Every queue it loads stays locked until the scan is over: a message
// recovered with a retry delay arms the queue's timer, whose callback
// (onTimer, on a goroutine of its own, taking the queue's lock) would
// otherwise move records between the queue's heaps while the scan is still
// pushing into them. That race corrupted the heaps: a nil dereference
// failing the open ("the file is damaged: ... nil pointer dereference"),
// or records dropped from the index, messages never delivered until the
// next restart.
func (e *Engine) recover() error {
	var nQueues, nMsgs, nLeased int
	var loading []*queue
	defer func() {
		for _, q := range loading {
			q.mu.Unlock()
		}
	}()
	load := func(name string) *queue {
		q := newQueue(e, name)
		q.mu.Lock()
		loading = append(loading, q)
		return q
	}
	err := guarded(func() error {
		return e.db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			if v := meta.Get(keyVersion); v == nil {
				if err := meta.Put(keyVersion, seqBytes(storeVersion)); err != nil {
					return err
				}
			} else if len(v) != 8 || binary.BigEndian.Uint64(v) != storeVersion {
				return fmt.Errorf("unsupported layout version %x (this qrun reads version %d)", v, storeVersion)
			}
			var maxSeq uint64
			if v := meta.Get(keySeq); v != nil {
				if len(v) != 8 {
					return fmt.Errorf("sequence: %w", errCorrupt)
				}
				maxSeq = binary.BigEndian.Uint64(v)
			}
			qs, err := tx.CreateBucketIfNotExists(bucketQueues)
			if err != nil {
				return err
			}
			now := e.now()
			var names []string
			if err := qs.ForEach(func(k, v []byte) error {
				if v != nil {
					return fmt.Errorf("stray key %q among the queues: %w", k, errCorrupt)
				}
				names = append(names, string(k))
				return nil
			}); err != nil {
				return err
			}
			var dead []exhausted
			touched := map[*queue]bool{}
			for _, name := range names {
				q, leased, n, d, top, err := e.recoverQueue(tx, load(name), now)
				if err != nil {
					return fmt.Errorf("queue %q: %w", name, err)
				}
				maxSeq = max(maxSeq, top)
				dead = append(dead, d...)
				nQueues++
				nMsgs += n
				nLeased += leased
				e.queues[name] = q
				if leased > 0 {
					touched[q] = true
				}
			}
			if err := e.recoverKV(tx); err != nil {
				return fmt.Errorf("key-value stores: %w", err)
			}
			e.seq.Store(maxSeq)
			if err := e.deadLetterAtOpen(tx, dead, touched, load, now); err != nil {
				return err
			}
			for q := range touched {
				x, err := queueBuckets(tx, q.name, true)
				if err != nil {
					return err
				}
				if err := x.root.Put(keyStats, encodeStats(&q.st)); err != nil {
					return err
				}
			}
			return meta.Put(keySeq, seqBytes(e.seq.Load()))
		})
	})
	if err != nil {
		return err
	}
	e.log.Info("disk engine opened", zap.String("file", e.path), zap.Int("queues", nQueues),
		zap.Int("messages", nMsgs), zap.Int("leases_expired_by_restart", nLeased), zap.Stringer("sync", e.opts.Sync))
	return nil
}

// recoverQueue loads one queue. Leases outstanding at the stop count as
// expired: one failure each, and the message is visible again after the
// queue's retry delay for its failures (or dead-lettered, by the caller,
// once they reach MaxAttempts). The new state is written at once.
// q is new and locked by the caller (see recover).
func (e *Engine) recoverQueue(tx *bolt.Tx, q *queue, now int64) (_ *queue, leased, n int, dead []exhausted, top uint64, err error) {
	name := q.name
	x, err := queueBuckets(tx, name, true)
	if err != nil {
		return nil, 0, 0, nil, 0, err
	}
	if v := x.root.Get(keySpec); v != nil {
		s, err := decodeSpec(v)
		if err != nil {
			return nil, 0, 0, nil, 0, fmt.Errorf("settings: %w", err)
		}
		q.policy = lease.Policy{VT: s.vt, MaxAttempts: s.maxAttempts, DeadLetter: s.deadLetter, Retry: s.retry}
		q.ordered = s.ordered
	}
	if v := x.root.Get(keyStats); v != nil {
		if err := decodeStats(v, &q.st); err != nil {
			return nil, 0, 0, nil, 0, fmt.Errorf("counters: %w", err)
		}
	}
	type stateWrite struct {
		seq uint64
		val []byte
	}
	var expired []stateWrite // written after the scan: a cursor does not survive writes
	var h header
	c := x.msgs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 || v == nil {
			return nil, 0, 0, nil, 0, fmt.Errorf("message key %x: %w", k, errCorrupt)
		}
		seq := binary.BigEndian.Uint64(k)
		top = max(top, seq)
		if err := decodePayload(v, &h, nil, false); err != nil {
			return nil, 0, 0, nil, 0, fmt.Errorf("message %d: %w", seq, err)
		}
		r := &record{seq: seq, id: h.id, prio: h.prio, enq: h.enq, expire: h.expire, okey: h.okey, source: h.deadLetterQ, idx: -1}
		due := h.due
		if sv := x.state.Get(k); sv != nil {
			s, err := decodeState(sv)
			if err != nil {
				return nil, 0, 0, nil, 0, fmt.Errorf("message %d state: %w", seq, err)
			}
			r.Attempt, r.Failures, r.expire, due = s.attempt, s.failures, s.expire, s.due
			if s.leased {
				leased++
				out := q.policy.ExpireAtOpen(&r.Lease, &q.st)
				if out.Action == lease.Dead {
					dead = append(dead, exhausted{q, r, out.Reason})
					continue
				}
				due = lease.After(now, out.Delay)
				expired = append(expired, stateWrite{seq, encodeState(state{attempt: r.Attempt, failures: r.Failures, due: due, expire: r.expire})})
			}
		}
		n++
		r.due = due
		q.admit(r, now)
		q.bySeq.Add(r.seq, r) // in key order: appended
	}
	var key [8]byte
	for _, w := range expired {
		if err := x.state.Put(seqKey(&key, w.seq), w.val); err != nil {
			return nil, 0, 0, nil, 0, err
		}
	}
	// State entries whose message is gone are leftovers of no consequence;
	// dedup entries whose window closed are pruned.
	var stale [][]byte
	c = x.state.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if x.msgs.Get(k) == nil {
			stale = append(stale, slices.Clone(k))
		}
	}
	for _, k := range stale {
		if err := x.state.Delete(k); err != nil {
			return nil, 0, 0, nil, 0, err
		}
	}
	stale = stale[:0]
	c = x.dedup.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		id, exp, err := decodeDedup(v)
		if err != nil {
			return nil, 0, 0, nil, 0, fmt.Errorf("dedup entry %q: %w", k, err)
		}
		if exp <= now {
			stale = append(stale, slices.Clone(k))
			continue
		}
		if q.dedup == nil {
			q.dedup = make(map[string]dedupEntry)
		}
		q.dedup[string(k)] = dedupEntry{id: id, expire: exp}
		q.dedupMarks = append(q.dedupMarks, dedupMark{key: string(k), expire: exp})
	}
	for _, k := range stale {
		if err := x.dedup.Delete(k); err != nil {
			return nil, 0, 0, nil, 0, err
		}
	}
	slices.SortFunc(q.dedupMarks, func(a, b dedupMark) int {
		switch {
		case a.expire < b.expire:
			return -1
		case a.expire > b.expire:
			return 1
		}
		return 0
	})
	return q, leased, n, dead, top, nil
}

// deadLetterAtOpen moves the messages whose outstanding lease at the stop
// was their last allowed attempt to their dead-letter queue (or deletes
// them, without one), inside the recovery transaction, and marks the
// queues whose counters that changes. A dead-letter queue not in the file
// yet is made by load (new and locked until the end of recover).
func (e *Engine) deadLetterAtOpen(tx *bolt.Tx, dead []exhausted, touched map[*queue]bool, load func(string) *queue, now int64) error {
	get := func(q *queue) (*buckets, error) { return queueBuckets(tx, q.name, true) }
	var key [8]byte
	for _, d := range dead {
		q, r := d.q, d.r
		q.st.DeadLetteredTotal++
		touched[q] = true
		o := op{kind: opDelMsg, q: q, seq: r.seq}
		if dl := q.policy.DeadLetter; dl != "" {
			dst := e.queues[dl]
			if dst == nil {
				dst = load(dl)
				e.queues[dl] = dst
			}
			touched[dst] = true
			o = op{kind: opDeadLetter, q: q, seq: r.seq, dst: dst, rec: &record{seq: e.seq.Add(1), idx: -1},
				key: d.reason, val: deadLetterHistory(r)}
		}
		x, err := get(q)
		if err != nil {
			return err
		}
		if err := e.apply(tx, &o, x, get, &key); err != nil {
			return fmt.Errorf("queue %q: %w", q.name, err)
		}
		if o.kind == opDeadLetter && o.rec != nil {
			o.dst.added(o.rec, now)
		}
	}
	return nil
}
