package engines

import (
	"context"
	"errors"
	"time"
)

// Key-value stores, transactional effects and per-message state.
//
// An engine that holds key-value stores implements KVEngine; one whose
// settlers can apply a delivery's effects atomically with its ack declares
// Capabilities.Transactions and implements TxSettler; one that keeps a
// value attached to a message across its retries implements StateSettler.
// The runtime asserts each interface and falls back (effects applied before
// the ack, at least once) where one is missing. enginetest exercises each
// one an engine implements.

// KVEngine is an Engine that holds named key-value stores.
type KVEngine interface {
	// OpenKV creates the store if needed and returns a handle on it.
	// Opening the same name twice returns handles on the same store.
	OpenKV(ctx context.Context, spec KVSpec) (KV, error)
}

// KVSpec is what the runtime asks of a key-value store when it opens it.
type KVSpec struct {
	// Name identifies the store inside its engine (the queue name rule).
	Name string
	// MaxValueSize is the largest value accepted; zero means
	// DefaultMaxValueSize.
	MaxValueSize int
}

// Limits of keys and values, the same on every engine.
const (
	// MaxKeySize is the longest key, in bytes. Keys are 1..MaxKeySize bytes.
	MaxKeySize = 512
	// DefaultMaxValueSize is a store's value limit unless its spec says otherwise.
	DefaultMaxValueSize = 1 << 20
	// MaxStateSize is the largest per-message state value.
	MaxStateSize = 1 << 20
)

// KV is a handle on one key-value store. All methods are safe for
// concurrent use. A key whose TTL passed is absent for every method,
// whether or not the engine has removed it yet.
type KV interface {
	// Name is the store's name.
	Name() string
	// Get returns the entry for key, or ErrNotFound.
	Get(ctx context.Context, key []byte) (KVEntry, error)
	// Apply performs ops atomically, in order: all of them or none. A
	// KVCheck (or a KVSet with IfVersion set) whose version does not
	// match fails the whole batch with ErrConflict; a KVIncr on a value
	// that is not a decimal integer fails it with ErrInvalid. It returns
	// the entries the ops left, one per op (Delete: Version 0).
	Apply(ctx context.Context, ops ...KVOp) ([]KVEntry, error)
	// List returns up to limit live entries with keys after the given key
	// (nil starts at the first) that begin with prefix, in key order.
	List(ctx context.Context, prefix, after []byte, limit int) ([]KVEntry, error)
	// Close releases the handle.
	Close() error
}

// KVEntry is one key's value as stored.
type KVEntry struct {
	Key   []byte
	Value []byte
	// Version increases on every write of the key and is never reused for
	// it, even after a delete; 0 means the key is absent.
	Version uint64
	// Expires is when the key disappears; zero means never.
	Expires time.Time
}

// KVOpKind says what a KVOp does.
type KVOpKind uint8

// Kinds of KVOp.
const (
	// KVSet stores Value (with TTL, zero meaning forever).
	KVSet KVOpKind = iota + 1
	// KVDelete removes the key; deleting an absent key is not an error.
	KVDelete
	// KVIncr adds Delta to the key's value, a decimal integer (absent
	// counts as 0), and stores the result as decimal text. TTL as for KVSet
	// (zero keeps the key's current expiry).
	KVIncr
	// KVCheck writes nothing: the batch fails with ErrConflict unless the
	// key's version is IfVersion (0: the key must be absent). A
	// transaction's reads become checks, which is how two deliveries that
	// read and then write one key never both commit.
	KVCheck
)

// KVOp is one operation of an Apply batch or of a delivery's effects.
type KVOp struct {
	Kind  KVOpKind
	Key   []byte
	Value []byte
	TTL   time.Duration
	Delta int64
	// IfVersion makes a KVSet a compare-and-set, and is what a KVCheck
	// checks. Only used when HasVersion is set, so that 0 (absent) can be
	// asked for.
	IfVersion  uint64
	HasVersion bool
}

// Effects are what a delivery's handler asked to happen together with its
// ack: publishes to queues of the delivery's own engine and writes to its
// key-value stores. A TxSettler applies them in the same transaction as the
// ack, or not at all.
type Effects struct {
	Publish []Publish
	KV      []KVBatch
}

// Empty reports whether e holds nothing to apply.
func (e *Effects) Empty() bool { return e == nil || (len(e.Publish) == 0 && len(e.KV) == 0) }

// Publish is one message a handler published.
type Publish struct {
	Queue   string
	Message Message
}

// KVBatch is one store's share of a delivery's effects, applied as by
// KV.Apply.
type KVBatch struct {
	Store string
	Ops   []KVOp
}

// TxSettler is a Settler of an engine with Capabilities.Transactions.
type TxSettler interface {
	Settler
	// SettleTx acks the delivery and applies e in one transaction: after a
	// crash either all of it happened or none. A KVCheck that fails
	// returns ErrConflict and changes nothing: the lease is still held, so
	// the caller can requeue the delivery. s.Verdict must be Ack.
	SettleTx(ctx context.Context, t Ticket, s Settlement, e *Effects) error
}

// GroupTxSettler is implemented by a queue handle (like GroupSettler)
// whose transactional settles can share commits: the dispatcher starts the
// settle of each delivery of a batch as its handler returns and waits for
// them together, so one commit (one fsync) carries many deliveries'
// acks and effects, each still all or nothing. It waits on a goroutine
// of its own while the worker receives and handles its next batch, so
// Wait may run concurrently with the same handle's Receive and settles.
type GroupTxSettler interface {
	// StartSettleTx is d.SettleTx(ctx, e) except that it may return before
	// the outcome is durable, or even decided: a check the engine can only
	// make in its commit makes Wait return ErrConflict, with nothing of d
	// applied and its lease still held. The caller hands e over (it never
	// reads or changes it again), so the engine may keep it until Wait
	// returns.
	StartSettleTx(ctx context.Context, d *Delivery, e *Effects) (Pending, error)
}

// SettleTx acks d and applies e atomically with the ack; ErrUnsupported
// when d's engine cannot.
func (d *Delivery) SettleTx(ctx context.Context, e *Effects) error {
	ts, ok := d.settler.(TxSettler)
	if !ok {
		if d.settler == nil {
			return ErrNotLeased
		}
		return ErrUnsupported
	}
	return ts.SettleTx(ctx, d.ticket, Settlement{Verdict: Ack}, e)
}

// StateSettler is a Settler that keeps a value attached to a message
// across its deliveries (per-message state). The engine deletes it when
// the message is acked or dead-lettered, in the same write, so an acked
// message never leaves state behind and a redriven one starts without.
type StateSettler interface {
	Settler
	// State returns the message's state, or ErrNotFound.
	State(ctx context.Context, t Ticket) ([]byte, error)
	// SetState replaces it; durable (on a Durable engine) when it returns.
	// ErrLeaseLost when t no longer holds the lease.
	SetState(ctx context.Context, t Ticket, value []byte) error
}

// State returns the per-message state of d's message; ErrUnsupported when
// its engine keeps none.
func (d *Delivery) State(ctx context.Context) ([]byte, error) {
	ss, ok := d.settler.(StateSettler)
	if !ok {
		if d.settler == nil {
			return nil, ErrNotLeased
		}
		return nil, ErrUnsupported
	}
	return ss.State(ctx, d.ticket)
}

// SetState replaces the per-message state of d's message.
func (d *Delivery) SetState(ctx context.Context, value []byte) error {
	ss, ok := d.settler.(StateSettler)
	if !ok {
		if d.settler == nil {
			return ErrNotLeased
		}
		return ErrUnsupported
	}
	return ss.SetState(ctx, d.ticket, value)
}

// Errors of key-value stores and transactions.
var (
	// ErrNotFound is returned for an absent key or state.
	ErrNotFound = errors.New("qrun: not found")
	// ErrConflict is returned when a version check failed: another writer
	// changed the key since it was read.
	ErrConflict = errors.New("qrun: version conflict")
)
