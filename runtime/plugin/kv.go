package plugin

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/engines"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
)

// Key-value stores and per-message state: the kv_* and state_* host
// functions (ABI.md section 4, "State"; docs/state.md).
//
// A store granted to a consumer is either immediate (Tx false: every write
// is applied to the engine as the guest makes it, at least once) or
// transactional (Tx true: the store lives in the engine of the consumer's
// queue and that engine applies effects with the ack). For a transactional
// store the host keeps the delivery's writes in an effect buffer and an
// overlay the delivery reads its own writes from; every key the delivery
// read before writing it becomes a KVCheck of the version it saw, so the
// commit fails with engines.ErrConflict if another delivery changed it
// meanwhile. Result.Effects hands the buffer to the dispatcher, which
// applies it with the ack (engines.Delivery.SettleTx) or drops it.

// KVStore is a key-value store a consumer is granted.
type KVStore struct {
	// Name is the store's name as the guest passes it.
	Name string
	// Store is the open store; nil makes every call on it -6 (a plugin
	// loaded only to be verified has none).
	Store engines.KV
	// MaxValueSize is the largest value kv_set and kv_cas accept; zero
	// means engines.DefaultMaxValueSize.
	MaxValueSize int
	// Tx holds the delivery's writes and applies them with its ack: set
	// only when Store lives in the engine of the consumer's queue and that
	// engine has Capabilities.Transactions.
	Tx bool
	// Stats, if set, counts the store's operations; the runtime shares one
	// per store across consumers for its metrics.
	Stats *KVStats
}

// KVStats are one store's counters.
type KVStats struct {
	// Ops counts kv_* calls on the store that reached it (granted, valid).
	Ops atomic.Uint64
	// Conflicts counts kv_cas calls refused with -12 and commits refused
	// with engines.ErrConflict that held writes or checks of the store.
	Conflicts atomic.Uint64
	// CommitErrors counts other failed commits of effects on the store.
	CommitErrors atomic.Uint64
}

// kvBinding is a granted store as the host functions use it.
type kvBinding struct {
	KVStore
	maxValue int
}

// txState is an instance's effect buffer and overlay, reset for each
// delivery: a delivery that uses no transactional store and holds no
// publish touches none of it. An acked delivery's effects are handed over
// whole (take).
type txState struct {
	eff engines.Effects
	// blk backs eff's slices until take hands them over (fresh).
	blk *effBlock
	// over indexes vals by store name + "\x00" + key: a key's entry is
	// changed in place, so only its first sight allocates its map key.
	over map[string]int
	vals []overlayEntry
	used bool
}

// overlayEntry is what the delivery knows of one key of a transactional
// store: read from the store (and checked at commit) or written by the
// delivery itself.
type overlayEntry struct {
	value   []byte
	version uint64 // 0: absent
	// unread: the delivery wrote the key (a kv_add first) without reading
	// it, so the stored version is unknown and version counts from 0;
	// pending: only adds so far, so the value is unknown too. A read of an
	// unread key resolves it (resolve).
	unread, pending bool
}

func (t *txState) reset() {
	if !t.used {
		return
	}
	clear(t.eff.Publish)
	t.eff.Publish = t.eff.Publish[:0]
	for i := range t.eff.KV {
		clear(t.eff.KV[i].Ops)
		t.eff.KV[i].Ops = t.eff.KV[i].Ops[:0]
	}
	t.eff.KV = t.eff.KV[:0]
	clear(t.over)
	clear(t.vals)
	t.vals = t.vals[:0]
	t.used = false
}

// effBlock is one delivery's effects with room for a publish and a few
// operations on one store, the usual load, in one allocation rather than
// one for the Effects and one for each slice as it grows.
type effBlock struct {
	eff engines.Effects
	kv  [1]engines.KVBatch
	ops [4]engines.KVOp
	pub [1]engines.Publish
}

// fresh gives eff a block's storage if take handed the last one over.
func (t *txState) fresh() {
	if t.blk != nil {
		return
	}
	t.blk = new(effBlock)
	t.eff.KV, t.eff.Publish = t.blk.kv[:0], t.blk.pub[:0]
}

// take hands the delivery's effects over to the caller; the next delivery
// starts new ones (only a delivery with effects pays for that).
func (t *txState) take() *engines.Effects {
	blk := t.blk
	if blk == nil {
		blk = new(effBlock)
	}
	blk.eff = t.eff
	t.eff, t.blk = engines.Effects{}, nil
	return &blk.eff
}

// publish holds a publish until the ack.
func (t *txState) publish(p engines.Publish) {
	t.used = true
	t.fresh()
	t.eff.Publish = append(t.eff.Publish, p)
}

// batch returns the store's batch of held operations, adding it if needed.
func (t *txState) batch(store string) *engines.KVBatch {
	t.used = true
	t.fresh()
	for i := range t.eff.KV {
		if t.eff.KV[i].Store == store {
			return &t.eff.KV[i]
		}
	}
	if len(t.eff.KV) < cap(t.eff.KV) {
		t.eff.KV = t.eff.KV[:len(t.eff.KV)+1]
		b := &t.eff.KV[len(t.eff.KV)-1]
		b.Store = store
		if b.Ops == nil && len(t.eff.KV) == 1 {
			b.Ops = t.blk.ops[:0]
		}
		return b
	}
	t.eff.KV = append(t.eff.KV, engines.KVBatch{Store: store})
	return &t.eff.KV[len(t.eff.KV)-1]
}

func overlayKey(store string, key []byte) string {
	return store + "\x00" + string(key)
}

// kvCall is what every kv_* function does first: find the delivery, the
// store and the key, or say which error code applies.
func kvCall(st *instanceState, store, key []byte) (*kvBinding, int32) {
	if st.d == nil {
		return nil, abi.ErrNoMessage
	}
	b, ok := st.p.kv[string(store)]
	if !ok {
		return nil, abi.ErrDenied
	}
	if len(key) == 0 || len(key) > engines.MaxKeySize {
		return nil, abi.ErrInvalid
	}
	if b.Store == nil {
		return nil, abi.ErrUnavailable
	}
	if b.Stats != nil {
		b.Stats.Ops.Add(1)
	}
	return b, 0
}

// kvCode maps an engine error to the ABI's code.
func kvCode(st *instanceState, fn string, err error) int32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, engines.ErrNotFound):
		return abi.ErrNotFound
	case errors.Is(err, engines.ErrConflict):
		return abi.ErrConflict
	case errors.Is(err, engines.ErrTooLarge):
		return abi.ErrTooLarge
	case errors.Is(err, engines.ErrInvalid):
		return abi.ErrInvalid
	case errors.Is(err, engines.ErrUnsupported):
		return abi.ErrUnsupported
	}
	st.p.log.Debug("guest "+fn+" failed", zap.Error(err))
	return abi.ErrUnavailable
}

// kvLooker is a store that can report an absent key without an error
// (kvmem.Handle, under the memory and disk engines): view reads many keys
// that do not exist yet, and building and inspecting an ErrNotFound for
// each cost more than the read.
type kvLooker interface {
	Lookup(ctx context.Context, key []byte) (engines.KVEntry, bool, error)
}

// view returns the key as the delivery sees it: from its overlay, or read
// from the store, in which case a transactional store records the version
// seen as a KVCheck (the read is then part of what commits). keep, if not
// nil, is a copy of key the caller made for a write that follows: the
// check shares it rather than making another.
func view(st *instanceState, b *kvBinding, key, keep []byte) (overlayEntry, error) {
	if b.Tx {
		if e, ok := st.tx.overlay(b.Name, key); ok {
			if e.unread {
				return resolve(st, b, key)
			}
			return e, nil
		}
	}
	e, err := readKey(st, b, key)
	if err != nil {
		return overlayEntry{}, err
	}
	if b.Tx {
		k := keep
		if k == nil {
			k = slices.Clone(key)
		}
		bt := st.tx.batch(b.Name)
		bt.Ops = append(bt.Ops, engines.KVOp{Kind: engines.KVCheck, Key: k, IfVersion: e.version, HasVersion: true})
		st.tx.remember(b.Name, k, e)
	}
	return e, nil
}

// readKey reads the key from the store.
func readKey(st *instanceState, b *kvBinding, key []byte) (overlayEntry, error) {
	var e overlayEntry
	if l, ok := b.Store.(kvLooker); ok {
		ent, found, err := l.Lookup(kvCtx(st), key)
		if err != nil {
			return overlayEntry{}, err
		}
		if found {
			e = overlayEntry{value: ent.Value, version: ent.Version}
		}
	} else {
		ent, err := b.Store.Get(kvCtx(st), key)
		if err != nil && !errors.Is(err, engines.ErrNotFound) {
			return overlayEntry{}, err
		}
		if err == nil {
			e = overlayEntry{value: ent.Value, version: ent.Version}
		}
	}
	return e, nil
}

// resolve reads a key the delivery wrote without reading it (kv_add) and
// replays the delivery's writes of it on what it read, so the delivery
// sees its own adds on the stored value and a version one higher per
// write, as if it had read the key first. The read is checked at commit
// like any other: its check goes before every op the delivery holds, so
// it tests the version the key had before the delivery's writes. Adds
// that cannot apply to the stored value are ErrInvalid, and the key stays
// unread (the commit would fail the same way).
func resolve(st *instanceState, b *kvBinding, key []byte) (overlayEntry, error) {
	base, err := readKey(st, b, key)
	if err != nil {
		return overlayEntry{}, err
	}
	bt := st.tx.batch(b.Name)
	var k []byte
	cur := base
	for _, op := range bt.Ops {
		if op.Kind == engines.KVCheck || !bytes.Equal(op.Key, key) {
			continue
		}
		k = op.Key
		switch op.Kind {
		case engines.KVDelete:
			cur = overlayEntry{}
		case engines.KVSet:
			cur = overlayEntry{value: op.Value, version: cur.version + 1}
		case engines.KVIncr:
			n, ok := incr(cur, op.Delta)
			if !ok {
				return overlayEntry{}, fmt.Errorf("kv %q: add to %q: the value is not a decimal int64 or the sum overflows: %w", b.Name, key, engines.ErrInvalid)
			}
			cur = overlayEntry{value: strconv.AppendInt(nil, n, 10), version: cur.version + 1}
		}
	}
	bt.Ops = slices.Insert(bt.Ops, 0, engines.KVOp{Kind: engines.KVCheck, Key: k, IfVersion: base.version, HasVersion: true})
	st.tx.remember(b.Name, k, cur)
	return cur, nil
}

func (t *txState) remember(store string, key []byte, e overlayEntry) {
	if i, ok := t.over[overlayKey(store, key)]; ok {
		t.vals[i] = e
		return
	}
	if t.over == nil {
		t.over = make(map[string]int)
	}
	t.over[overlayKey(store, key)] = len(t.vals)
	t.vals = append(t.vals, e)
}

// overlay returns what the delivery knows of the key, if anything.
func (t *txState) overlay(store string, key []byte) (overlayEntry, bool) {
	if i, ok := t.over[overlayKey(store, key)]; ok {
		return t.vals[i], true
	}
	return overlayEntry{}, false
}

// hold adds a write to the delivery's effects and its overlay. A written
// key's version, as the delivery sees it, is one more than before; the
// store assigns the real one at commit.
// A key the delivery has not read stays unread (its version still counts
// from 0), now with a known value.
func hold(st *instanceState, b *kvBinding, op engines.KVOp, prev overlayEntry, now []byte) {
	bt := st.tx.batch(b.Name)
	bt.Ops = append(bt.Ops, op)
	e := overlayEntry{unread: prev.unread}
	if op.Kind != engines.KVDelete {
		e.value, e.version = now, prev.version+1
	}
	st.tx.remember(b.Name, op.Key, e)
}

// current is the overlay entry of a key the delivery is about to write
// blindly (set, delete): what it saw or wrote before, without reading the
// store (a blind write needs no check).
func current(st *instanceState, b *kvBinding, key []byte) overlayEntry {
	e, _ := st.tx.overlay(b.Name, key)
	return e
}

// kvSpan is a KV host call's (ptr, len) argument beyond the store and key
// every one of them takes; the zero kvSpan means there is none.
type kvSpan struct {
	name     string
	ptr, len uint64
}

// kvArgs reads a KV host call's store (stack[0:2]), key (stack[2:4]) and
// extra region, in that order (so a bad pointer traps before any other
// check), then checks the call with kvCall. On a refusal it writes the code
// to stack[0] with enc and returns ok false; the caller just returns.
func kvArgs(ctx context.Context, m api.Module, stack []uint64, fn string, enc func(int32) uint64, extra kvSpan) (st *instanceState, b *kvBinding, key, more []byte, ok bool) {
	st = stateOf(ctx)
	store := region(m, fn, "store", stack[0], stack[1])
	key = region(m, fn, "key", stack[2], stack[3])
	if extra.name != "" {
		more = region(m, fn, extra.name, extra.ptr, extra.len)
	}
	b, c := kvCall(st, store, key)
	if c != 0 {
		stack[0] = enc(c)
		return nil, nil, nil, nil, false
	}
	return st, b, key, more, true
}

// code64 encodes a code as an i64 result, for the calls that return one.
func code64(c int32) uint64 { return api.EncodeI64(int64(c)) }

func hostKVGet(ctx context.Context, m api.Module, stack []uint64) {
	st, b, key, buf, ok := kvArgs(ctx, m, stack, abi.FuncKVGet, code, kvSpan{"buf", stack[4], stack[5]})
	if !ok {
		return
	}
	e, err := view(st, b, key, nil)
	if err != nil {
		stack[0] = code(kvCode(st, abi.FuncKVGet, err))
		return
	}
	if e.version == 0 {
		stack[0] = code(abi.ErrNotFound)
		return
	}
	if len(e.value) <= len(buf) {
		copy(buf, e.value)
	}
	stack[0] = ret(len(e.value))
}

func hostKVVersion(ctx context.Context, m api.Module, stack []uint64) {
	st, b, key, _, ok := kvArgs(ctx, m, stack, abi.FuncKVVersion, code64, kvSpan{})
	if !ok {
		return
	}
	e, err := view(st, b, key, nil)
	if err != nil {
		stack[0] = api.EncodeI64(int64(kvCode(st, abi.FuncKVVersion, err)))
		return
	}
	stack[0] = api.EncodeI64(int64(min(e.version, math.MaxInt64)))
}

// kvValue checks a value and ttl for kv_set and kv_cas.
func kvValue(b *kvBinding, val []byte, ttlMS int64) (time.Duration, int32) {
	if ttlMS < 0 {
		return 0, abi.ErrInvalid
	}
	if len(val) > b.maxValue {
		return 0, abi.ErrTooLarge
	}
	return time.Duration(min(ttlMS, math.MaxInt64/int64(time.Millisecond))) * time.Millisecond, 0
}

func hostKVSet(ctx context.Context, m api.Module, stack []uint64) {
	st, b, key, val, ok := kvArgs(ctx, m, stack, abi.FuncKVSet, code, kvSpan{"val", stack[4], stack[5]})
	if !ok {
		return
	}
	ttl, c := kvValue(b, val, int64(stack[6]))
	if c != 0 {
		stack[0] = code(c)
		return
	}
	op := engines.KVOp{Kind: engines.KVSet, Key: slices.Clone(key), Value: slices.Clone(val), TTL: ttl}
	if b.Tx {
		hold(st, b, op, current(st, b, key), op.Value)
		stack[0] = 0
		return
	}
	stack[0] = code(kvCode(st, abi.FuncKVSet, apply(st, b, op)))
}

func hostKVCas(ctx context.Context, m api.Module, stack []uint64) {
	st, b, key, val, ok := kvArgs(ctx, m, stack, abi.FuncKVCas, code, kvSpan{"val", stack[5], stack[6]})
	if !ok {
		return
	}
	want := int64(stack[4])
	ttl, c := kvValue(b, val, int64(stack[7]))
	if c == 0 && want < 0 {
		c = abi.ErrInvalid
	}
	if c != 0 {
		stack[0] = code(c)
		return
	}
	op := engines.KVOp{Kind: engines.KVSet, Key: slices.Clone(key), Value: slices.Clone(val), TTL: ttl,
		IfVersion: uint64(want), HasVersion: true}
	if b.Tx {
		e, err := view(st, b, key, op.Key)
		if err != nil {
			stack[0] = code(kvCode(st, abi.FuncKVCas, err))
			return
		}
		if e.version != uint64(want) {
			if b.Stats != nil {
				b.Stats.Conflicts.Add(1)
			}
			stack[0] = code(abi.ErrConflict)
			return
		}
		// The read's check guards the version at commit; the write itself
		// is a plain set.
		op.IfVersion, op.HasVersion = 0, false
		hold(st, b, op, e, op.Value)
		stack[0] = 0
		return
	}
	err := apply(st, b, op)
	if errors.Is(err, engines.ErrConflict) && b.Stats != nil {
		b.Stats.Conflicts.Add(1)
	}
	stack[0] = code(kvCode(st, abi.FuncKVCas, err))
}

func hostKVDelete(ctx context.Context, m api.Module, stack []uint64) {
	st, b, key, _, ok := kvArgs(ctx, m, stack, abi.FuncKVDelete, code, kvSpan{})
	if !ok {
		return
	}
	op := engines.KVOp{Kind: engines.KVDelete, Key: slices.Clone(key)}
	if b.Tx {
		hold(st, b, op, current(st, b, key), nil)
		stack[0] = 0
		return
	}
	stack[0] = code(kvCode(st, abi.FuncKVDelete, apply(st, b, op)))
}

func hostKVIncr(ctx context.Context, m api.Module, stack []uint64) {
	st, b, key, out, ok := kvArgs(ctx, m, stack, abi.FuncKVIncr, code, kvSpan{"result", stack[5], 8})
	if !ok {
		return
	}
	delta := int64(stack[4])
	op := engines.KVOp{Kind: engines.KVIncr, Key: slices.Clone(key), Delta: delta}
	var n int64
	if b.Tx {
		e, err := view(st, b, key, op.Key)
		if err != nil {
			stack[0] = code(kvCode(st, abi.FuncKVIncr, err))
			return
		}
		var ok bool
		if n, ok = incr(e, delta); !ok {
			stack[0] = code(abi.ErrInvalid)
			return
		}
		hold(st, b, op, e, strconv.AppendInt(nil, n, 10))
	} else {
		ent, err := b.Store.Apply(kvCtx(st), op)
		if err != nil {
			stack[0] = code(kvCode(st, abi.FuncKVIncr, err))
			return
		}
		if len(ent) != 1 {
			stack[0] = code(abi.ErrUnavailable)
			return
		}
		if n, err = strconv.ParseInt(string(ent[0].Value), 10, 64); err != nil {
			stack[0] = code(abi.ErrInvalid)
			return
		}
	}
	binary.LittleEndian.PutUint64(out, uint64(n))
	stack[0] = 0
}

// hostKVAdd is kv_add: kv_incr without the sum, and so, on a
// transactional store, without the read. The add is held as a KVIncr the
// engine applies at commit to the value the key has then, with no check:
// adds commute, so deliveries adding to one key never conflict, and a
// delivery that only adds costs the store no round trip. A key whose value
// the delivery already knows (read or written) is added to at once, as
// kv_incr does, so an add that cannot apply is -4 here; otherwise it is
// found at commit, which then fails with ErrInvalid and applies nothing.
func hostKVAdd(ctx context.Context, m api.Module, stack []uint64) {
	st, b, key, _, ok := kvArgs(ctx, m, stack, abi.FuncKVAdd, code, kvSpan{})
	if !ok {
		return
	}
	op := engines.KVOp{Kind: engines.KVIncr, Key: slices.Clone(key), Delta: int64(stack[4])}
	if !b.Tx {
		stack[0] = code(kvCode(st, abi.FuncKVAdd, apply(st, b, op)))
		return
	}
	e, seen := st.tx.overlay(b.Name, key)
	if !seen || e.pending {
		bt := st.tx.batch(b.Name)
		bt.Ops = append(bt.Ops, op)
		st.tx.remember(b.Name, op.Key, overlayEntry{unread: true, pending: true})
		stack[0] = 0
		return
	}
	n, valid := incr(e, op.Delta)
	if !valid {
		stack[0] = code(abi.ErrInvalid)
		return
	}
	hold(st, b, op, e, strconv.AppendInt(nil, n, 10))
	stack[0] = 0
}

// incr adds delta to e's decimal value (absent: 0); false if the value is
// not a decimal int64 or the sum overflows.
func incr(e overlayEntry, delta int64) (int64, bool) {
	var cur int64
	if e.version != 0 {
		v, err := strconv.ParseInt(string(e.value), 10, 64)
		if err != nil {
			return 0, false
		}
		cur = v
	}
	sum := cur + delta
	if (delta > 0 && sum < cur) || (delta < 0 && sum > cur) {
		return 0, false
	}
	return sum, true
}

// apply performs one write on an immediate store.
func apply(st *instanceState, b *kvBinding, op engines.KVOp) error {
	_, err := b.Store.Apply(kvCtx(st), op)
	return err
}

// kvCtx is the context of a store call: the instance's own, which the
// watchdog cancels when the call runs past its timeout and Close cancels
// when the dispatcher aborts it, so a stuck engine cannot hold a guest. It
// costs nothing, unlike withInstanceCancel's derived context, and a store
// call is on the path of every delivery that uses one.
func kvCtx(st *instanceState) context.Context { return st.in.ctx }

func hostStateGet(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	buf := region(m, abi.FuncStateGet, "buf", stack[0], stack[1])
	d := st.d
	if d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	v, err := d.State(kvCtx(st))
	if err != nil {
		stack[0] = code(kvCode(st, abi.FuncStateGet, err))
		return
	}
	if len(v) <= len(buf) {
		copy(buf, v)
	}
	stack[0] = ret(len(v))
}

func hostStateSet(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	val := region(m, abi.FuncStateSet, "value", stack[0], stack[1])
	d := st.d
	if d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	if len(val) > engines.MaxStateSize {
		stack[0] = code(abi.ErrTooLarge)
		return
	}
	stack[0] = code(kvCode(st, abi.FuncStateSet, d.SetState(kvCtx(st), slices.Clone(val))))
}

// kvBindings indexes a spec's stores by name.
func kvBindings(s Spec) map[string]*kvBinding {
	if len(s.KV) == 0 {
		return nil
	}
	out := make(map[string]*kvBinding, len(s.KV))
	for _, k := range s.KV {
		b := &kvBinding{KVStore: k, maxValue: k.MaxValueSize}
		if b.maxValue <= 0 {
			b.maxValue = engines.DefaultMaxValueSize
		}
		out[k.Name] = b
	}
	return out
}
