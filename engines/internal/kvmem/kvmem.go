// Package kvmem is the in-memory index of a key-value store that the memory
// and disk engines share: versions, TTLs, the checks of a transaction and the
// ordered listing. The memory engine keeps nothing else; the disk engine
// writes every Change it commits to bbolt in the same transaction as the
// ack that carries it, and loads the index back at open.
//
// A batch is applied in two steps under the store's lock, Prepare and
// Commit, so that a transaction spanning several stores and a queue can
// check everything before it changes anything.
package kvmem

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Entry is one live key's value in the index.
type Entry struct {
	Value   []byte
	Version uint64
	// Expires is a wall-clock deadline in Unix nanoseconds; 0 never.
	Expires int64
}

// Change is what a committed batch did to one key: its new entry, or its
// removal (Deleted). A batch that writes a key twice yields one Change.
type Change struct {
	Key     string
	Entry   Entry
	Deleted bool
}

// Store is one key-value store's index. Its methods that end in Locked
// need Lock held; the others take it themselves.
type Store struct {
	name     string
	maxValue int
	now      func() time.Time

	mu sync.Mutex
	m  map[string]Entry
	// last is the highest version handed out. Versions come from this one
	// counter for the whole store, so a key deleted and written again gets
	// a version it never had.
	last uint64
	// writes counts commits since the last sweep: every sweepEvery of them
	// the expired keys are swept, found through deadlines (expiry.go).
	writes int
	// deadlines is the expiry heap; timed counts the keys of m that have
	// a deadline (expiry.go).
	deadlines []deadline
	timed     int
}

// sweepEvery is how many committed batches pass between two sweeps of
// expired keys in Commit.
const sweepEvery = 1024

// New returns an empty store. maxValue <= 0 means
// engines.DefaultMaxValueSize; now is the clock TTLs are measured with.
func New(name string, maxValue int, now func() time.Time) *Store {
	if maxValue <= 0 {
		maxValue = engines.DefaultMaxValueSize
	}
	return &Store{name: name, maxValue: maxValue, now: now, m: make(map[string]Entry)}
}

// Name is the store's name.
func (s *Store) Name() string { return s.name }

// SetMaxValue changes the value limit (a later open's spec wins).
func (s *Store) SetMaxValue(n int) {
	if n <= 0 {
		n = engines.DefaultMaxValueSize
	}
	s.mu.Lock()
	s.maxValue = n
	s.mu.Unlock()
}

// Lock takes the store's lock, for a transaction over several stores.
// Callers lock stores in name order so two transactions cannot deadlock.
func (s *Store) Lock() { s.mu.Lock() }

// Unlock releases it.
func (s *Store) Unlock() { s.mu.Unlock() }

// Load puts an entry read back from storage into the index, at open.
func (s *Store) Load(key string, e Entry) {
	s.mu.Lock()
	s.setLocked(key, e)
	s.last = max(s.last, e.Version)
	s.mu.Unlock()
}

// LoadVersion raises the version counter to at least v, at open.
func (s *Store) LoadVersion(v uint64) {
	s.mu.Lock()
	s.last = max(s.last, v)
	s.mu.Unlock()
}

// LastVersionLocked is the highest version handed out, which a durable
// engine stores with every commit so that versions are never reused after
// a restart. Needs Lock held.
func (s *Store) LastVersionLocked() uint64 { return s.last }

// EntryLocked returns key's entry as held, expired or not. Needs Lock
// held.
func (s *Store) EntryLocked(key string) (Entry, bool) {
	e, ok := s.m[key]
	return e, ok
}

// Get returns key's live entry, or engines.ErrNotFound.
func (s *Store) Get(key []byte) (engines.KVEntry, error) {
	if err := s.checkKey(key); err != nil {
		return engines.KVEntry{}, err
	}
	ent, ok := s.lookup(key)
	if !ok {
		return engines.KVEntry{}, &notFound{store: s.name, key: string(key)}
	}
	return ent, nil
}

// lookup returns key's live entry, if it has one.
func (s *Store) lookup(key []byte) (engines.KVEntry, bool) {
	now := s.now().UnixNano()
	s.mu.Lock()
	e, ok := s.m[string(key)]
	s.mu.Unlock()
	if !ok || expired(e, now) {
		return engines.KVEntry{}, false
	}
	return s.entry(string(key), e), true
}

// notFound is Get's engines.ErrNotFound, formatted only if someone reads
// its text (see prefixed).
// engine, when set, prefixes it as Handle.wrap would.
type notFound struct{ engine, store, key string }

func (e *notFound) Error() string {
	msg := "kv " + strconv.Quote(e.store) + ": key " + strconv.Quote(e.key) + ": " + engines.ErrNotFound.Error()
	if e.engine != "" {
		msg = e.engine + ": " + msg
	}
	return msg
}
func (e *notFound) Unwrap() error { return engines.ErrNotFound }

func expired(e Entry, now int64) bool { return e.Expires != 0 && now >= e.Expires }

func (s *Store) entry(key string, e Entry) engines.KVEntry {
	out := engines.KVEntry{Key: []byte(key), Value: bytes.Clone(e.Value), Version: e.Version}
	if e.Expires != 0 {
		out.Expires = time.Unix(0, e.Expires)
	}
	return out
}

func (s *Store) checkKey(key []byte) error {
	if len(key) == 0 || len(key) > engines.MaxKeySize {
		return fmt.Errorf("kv %q: key of %d bytes, want 1..%d: %w", s.name, len(key), engines.MaxKeySize, engines.ErrInvalid)
	}
	return nil
}

// Validate checks ops against the store's limits without looking at its
// contents, so a caller can reject a malformed batch before taking locks.
func (s *Store) Validate(ops []engines.KVOp) error {
	s.mu.Lock()
	limit := s.maxValue
	s.mu.Unlock()
	return ValidateOps(s.name, limit, ops)
}

// ValidateOps checks ops against the limits of a store named name whose
// values may be up to maxValue bytes: key length, value size, TTL sign and
// op kind. Every engine uses it, so the limits are the same everywhere.
func ValidateOps(name string, maxValue int, ops []engines.KVOp) error {
	if maxValue <= 0 {
		maxValue = engines.DefaultMaxValueSize
	}
	for i := range ops {
		op := &ops[i]
		if len(op.Key) == 0 || len(op.Key) > engines.MaxKeySize {
			return fmt.Errorf("kv %q: op %d: key of %d bytes, want 1..%d: %w", name, i, len(op.Key), engines.MaxKeySize, engines.ErrInvalid)
		}
		if op.TTL < 0 {
			return fmt.Errorf("kv %q: op %d: negative TTL %v: %w", name, i, op.TTL, engines.ErrInvalid)
		}
		switch op.Kind {
		case engines.KVSet:
			if len(op.Value) > maxValue {
				return fmt.Errorf("kv %q: op %d: value of %d bytes, limit %d: %w", name, i, len(op.Value), maxValue, engines.ErrTooLarge)
			}
		case engines.KVDelete, engines.KVIncr, engines.KVCheck:
		default:
			return fmt.Errorf("kv %q: op %d: unknown kind %d: %w", name, i, op.Kind, engines.ErrInvalid)
		}
	}
	return nil
}

// Incr adds delta to a stored decimal value (nil: absent, 0) and returns the
// sum as decimal text; ErrInvalid when the value is not a decimal int64 or
// the sum overflows. Shared so every engine agrees on the format.
func Incr(name string, key, cur []byte, delta int64) ([]byte, error) {
	var n int64
	if cur != nil {
		v, err := strconv.ParseInt(string(cur), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("kv %q: incr %q: stored value is not a decimal integer: %w", name, key, engines.ErrInvalid)
		}
		n = v
	}
	sum := n + delta
	if (delta > 0 && sum < n) || (delta < 0 && sum > n) {
		return nil, fmt.Errorf("kv %q: incr %q by %d: overflows: %w", name, key, delta, engines.ErrInvalid)
	}
	return strconv.AppendInt(nil, sum, 10), nil
}

// Prepared is a batch checked against the store and ready to Commit.
type Prepared struct {
	s       *Store
	changes []Change
	results []result
	last    uint64
	// Storage for changes and results when the batch is small, as a
	// delivery's is (a read check and a write): one allocation, not three.
	chg [2]Change
	res [2]result
}

// result is one op's outcome as Prepare found it; Results turns it into
// an engines.KVEntry, copying key and value, only when a caller asks (a
// transactional settle never does). key is the op's own Key.
type result struct {
	key     []byte
	e       Entry
	present bool
}

// Results are the entries the ops left, one per op, as KV.Apply returns.
// It reads the keys of the ops given to PrepareLocked, which must not have
// changed since.
func (p *Prepared) Results() []engines.KVEntry {
	out := make([]engines.KVEntry, len(p.results))
	for i, r := range p.results {
		if r.present {
			out[i] = p.s.entry(string(r.key), r.e)
		} else {
			out[i] = engines.KVEntry{Key: bytes.Clone(r.key)}
		}
	}
	return out
}

// Changes are the keys the batch writes, in the order first written.
func (p *Prepared) Changes() []Change { return p.changes }

// LastVersion is the store's version counter once the batch is committed.
func (p *Prepared) LastVersion() uint64 { return p.last }

// indexScan is the batch size up to which Prepare finds a key among the
// batch's changes by scanning them rather than through a map: a delivery's
// batch is a read check and a write or two.
const indexScan = 8

// preparing is the state of one PrepareLocked.
type preparing struct {
	s       *Store
	p       *Prepared
	now     time.Time
	nowNs   int64
	pending map[string]int // key -> index in p.changes; nil below indexScan ops
}

func (x *preparing) find(key []byte) (int, bool) {
	if x.pending != nil {
		i, ok := x.pending[string(key)]
		return i, ok
	}
	for i := range x.p.changes {
		if x.p.changes[i].Key == string(key) {
			return i, true
		}
	}
	return 0, false
}

// lookup is key as the batch sees it: its own earlier write, else the
// store's live entry.
func (x *preparing) lookup(key []byte) (Entry, bool) {
	if i, ok := x.find(key); ok {
		c := x.p.changes[i]
		return c.Entry, !c.Deleted
	}
	e, ok := x.s.m[string(key)]
	if ok && expired(e, x.nowNs) {
		return Entry{}, false
	}
	return e, ok
}

// put records the batch's write of key; the key is copied into a string
// only the first time the batch writes it.
func (x *preparing) put(key []byte, e Entry, deleted bool) {
	if i, ok := x.find(key); ok {
		c := &x.p.changes[i]
		c.Entry, c.Deleted = e, deleted
		return
	}
	k := string(key)
	if x.pending != nil {
		x.pending[k] = len(x.p.changes)
	}
	x.p.changes = append(x.p.changes, Change{Key: k, Entry: e, Deleted: deleted})
}

func (x *preparing) deadline(ttl time.Duration) int64 {
	if ttl == 0 {
		return 0
	}
	return x.now.Add(ttl).UnixNano()
}

// PrepareLocked runs ops against the store without changing it: checks,
// compare-and-sets and increments see the earlier ops of the batch. It
// fails with ErrConflict, ErrInvalid or ErrTooLarge, and then nothing
// may be committed.
func (s *Store) PrepareLocked(ops []engines.KVOp) (*Prepared, error) {
	if err := ValidateOps(s.name, s.maxValue, ops); err != nil {
		return nil, err
	}
	now := s.now()
	p := &Prepared{s: s, last: s.last}
	p.changes = p.chg[:0]
	if len(ops) <= len(p.res) {
		p.results = p.res[:len(ops)]
	} else {
		p.results = make([]result, len(ops))
	}
	x := preparing{s: s, p: p, now: now, nowNs: now.UnixNano()}
	if len(ops) > indexScan {
		x.pending = make(map[string]int, len(ops))
	}
	for i := range ops {
		op := &ops[i]
		cur, ok := x.lookup(op.Key)
		var curVer uint64
		if ok {
			curVer = cur.Version
		}
		switch op.Kind {
		case engines.KVCheck:
			if op.IfVersion != curVer {
				return nil, fmt.Errorf("kv %q: key %q is at version %d, read at %d: %w", s.name, op.Key, curVer, op.IfVersion, engines.ErrConflict)
			}
			p.results[i] = result{key: op.Key, e: cur, present: ok}
		case engines.KVSet:
			if op.HasVersion && op.IfVersion != curVer {
				return nil, fmt.Errorf("kv %q: set %q if version %d: it is at %d: %w", s.name, op.Key, op.IfVersion, curVer, engines.ErrConflict)
			}
			p.last++
			e := Entry{Value: bytes.Clone(op.Value), Version: p.last, Expires: x.deadline(op.TTL)}
			x.put(op.Key, e, false)
			p.results[i] = result{key: op.Key, e: e, present: true}
		case engines.KVDelete:
			if ok {
				x.put(op.Key, Entry{}, true)
			}
			p.results[i] = result{key: op.Key}
		case engines.KVIncr:
			var val []byte
			if ok {
				val = cur.Value
			}
			sum, err := Incr(s.name, op.Key, val, op.Delta)
			if err != nil {
				return nil, err
			}
			if len(sum) > s.maxValue {
				return nil, fmt.Errorf("kv %q: incr %q: %d bytes, limit %d: %w", s.name, op.Key, len(sum), s.maxValue, engines.ErrTooLarge)
			}
			exp := cur.Expires
			if !ok || op.TTL != 0 {
				exp = x.deadline(op.TTL)
			}
			p.last++
			e := Entry{Value: sum, Version: p.last, Expires: exp}
			x.put(op.Key, e, false)
			p.results[i] = result{key: op.Key, e: e, present: true}
		}
	}
	return p, nil
}

// CommitLocked applies a prepared batch, which must be the last one
// prepared under this hold of the lock. It returns the keys a sweep found
// expired and removed (a durable engine deletes them too).
func (s *Store) CommitLocked(p *Prepared) []string {
	for _, c := range p.changes {
		if c.Deleted {
			s.deleteLocked(c.Key)
		} else {
			s.setLocked(c.Key, c.Entry)
		}
	}
	s.last = p.last
	s.writes++
	if s.writes < sweepEvery {
		return nil
	}
	s.writes = 0
	return s.SweepLocked()
}

// SweepLocked removes every expired key and returns them, in O(log n)
// each through the expiry heap, without visiting the live keys.
func (s *Store) SweepLocked() []string {
	now := s.now().UnixNano()
	var gone []string
	for len(s.deadlines) > 0 && now >= s.deadlines[0].at {
		d := s.popDeadline()
		if !s.live(d) {
			continue // deleted, or written again with another deadline
		}
		s.deleteLocked(d.key)
		gone = append(gone, d.key)
	}
	return gone
}

// List returns up to limit live entries whose keys begin with prefix and
// come after after, in key order.
func (s *Store) List(prefix, after []byte, limit int) ([]engines.KVEntry, error) {
	if limit < 1 {
		return nil, fmt.Errorf("kv %q: list limit %d < 1: %w", s.name, limit, engines.ErrInvalid)
	}
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	// A sort per call: List serves operators, and a map keeps the
	// transactional path (Get, Prepare, Commit) O(1).
	var keys []string
	for k, e := range s.m {
		if expired(e, now) || !bytes.HasPrefix([]byte(k), prefix) {
			continue
		}
		if after != nil && k <= string(after) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]engines.KVEntry, len(keys))
	for i, k := range keys {
		out[i] = s.entry(k, s.m[k])
	}
	return out, nil
}

// Len is the number of keys held, expired ones not yet swept included.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
