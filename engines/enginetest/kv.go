package enginetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Key-value stores (Capabilities.KV), transactional settles and
// per-message state (Capabilities.Transactions).

func kvSubtests() []subtest {
	return []subtest{
		{"kv_get_set_delete", testKVGetSetDelete},
		{"kv_versions_never_reused", testKVVersions},
		{"kv_incr", testKVIncr},
		{"kv_cas_and_check", testKVCAS},
		{"kv_ttl", testKVTTL},
		{"kv_list", testKVList},
		{"kv_limits", testKVLimits},
		{"kv_shared_between_handles", testKVShared},
		{"tx_commits_all", testTxCommitsAll},
		{"tx_conflict_changes_nothing", testTxConflict},
		{"tx_lease_lost_changes_nothing", testTxLeaseLost},
		{"tx_invalid_changes_nothing", testTxInvalid},
		{"tx_no_lost_update", testTxNoLostUpdate},
		{"tx_adds_never_conflict", testTxAddsNeverConflict},
		{"tx_add_refused_at_commit", testTxAddRefused},
		{"state_deleted_on_purge", testStateDeletedOnPurge},
		{"state_survives_nack", testStateSurvivesNack},
		{"state_deleted_on_ack", testStateDeletedOnAck},
		{"state_deleted_on_dead_letter", testStateDeletedOnDeadLetter},
	}
}

func kvRestartSubtests() []restartSubtest {
	return []restartSubtest{
		{"kv_and_state_survive_restart", testKVStateRestart},
		{"crash_tx_all_or_nothing", testCrashTxAllOrNothing},
	}
}

// kv opens a store unique to the test, after skipping an engine without KV.
func (x *env) kv(maxValue int) engines.KV {
	x.t.Helper()
	x.need(x.caps.KV, "KV")
	return x.kvNamed(x.name(), maxValue)
}

func (x *env) kvNamed(name string, maxValue int) engines.KV {
	x.t.Helper()
	ke, ok := x.e.(engines.KVEngine)
	if !ok {
		x.t.Fatalf("engine declares KV but does not implement engines.KVEngine")
	}
	kv, err := ke.OpenKV(x.ctx(wait), engines.KVSpec{Name: name, MaxValueSize: maxValue})
	if err != nil {
		x.t.Fatalf("OpenKV(%q): %v", name, err)
	}
	x.t.Cleanup(func() { _ = kv.Close() })
	return kv
}

func (x *env) apply(kv engines.KV, ops ...engines.KVOp) []engines.KVEntry {
	x.t.Helper()
	out, err := kv.Apply(x.ctx(wait), ops...)
	if err != nil {
		x.t.Fatalf("Apply on %s: %v", kv.Name(), err)
	}
	if len(out) != len(ops) {
		x.t.Fatalf("Apply of %d ops returned %d entries", len(ops), len(out))
	}
	return out
}

func set(key, val string) engines.KVOp {
	return engines.KVOp{Kind: engines.KVSet, Key: []byte(key), Value: []byte(val)}
}

func incr(key string, delta int64) engines.KVOp {
	return engines.KVOp{Kind: engines.KVIncr, Key: []byte(key), Delta: delta}
}

func check(key string, version uint64) engines.KVOp {
	return engines.KVOp{Kind: engines.KVCheck, Key: []byte(key), IfVersion: version, HasVersion: true}
}

// get returns key's entry, or ok false when it is absent.
func (x *env) get(kv engines.KV, key string) (engines.KVEntry, bool) {
	x.t.Helper()
	ent, err := kv.Get(x.ctx(wait), []byte(key))
	if errors.Is(err, engines.ErrNotFound) {
		return ent, false
	}
	if err != nil {
		x.t.Fatalf("Get %q from %s: %v", key, kv.Name(), err)
	}
	return ent, true
}

func (x *env) wantValue(kv engines.KV, key, want string) engines.KVEntry {
	x.t.Helper()
	ent, ok := x.get(kv, key)
	if !ok {
		x.t.Fatalf("%s: key %q absent, want %q", kv.Name(), key, want)
	}
	if string(ent.Value) != want || string(ent.Key) != key || ent.Version == 0 {
		x.t.Fatalf("%s: key %q = %+v, want value %q with a version", kv.Name(), key, ent, want)
	}
	return ent
}

func (x *env) wantAbsent(kv engines.KV, key string) {
	x.t.Helper()
	if ent, ok := x.get(kv, key); ok {
		x.t.Fatalf("%s: key %q = %q (version %d), want it absent", kv.Name(), key, ent.Value, ent.Version)
	}
}

func testKVGetSetDelete(t *testing.T, x *env) {
	kv := x.kv(0)
	x.wantAbsent(kv, "a")
	out := x.apply(kv, set("a", "1"))
	if out[0].Version == 0 || string(out[0].Value) != "1" {
		t.Fatalf("Apply(set) returned %+v, want the new entry with a version", out[0])
	}
	if got := x.wantValue(kv, "a", "1"); got.Version != out[0].Version || !got.Expires.IsZero() {
		t.Fatalf("Get = %+v, want version %d and no expiry", got, out[0].Version)
	}
	x.apply(kv, set("empty", ""))
	x.wantValue(kv, "empty", "")
	out = x.apply(kv, engines.KVOp{Kind: engines.KVDelete, Key: []byte("a")})
	if out[0].Version != 0 {
		t.Fatalf("Apply(delete) returned version %d, want 0", out[0].Version)
	}
	x.wantAbsent(kv, "a")
	// Deleting an absent key is not an error.
	x.apply(kv, engines.KVOp{Kind: engines.KVDelete, Key: []byte("never")})
	// A batch applies in order: later ops see the earlier ones.
	out = x.apply(kv, set("b", "x"), incr("c", 2), engines.KVOp{Kind: engines.KVDelete, Key: []byte("b")}, incr("c", 3))
	if string(out[3].Value) != "5" {
		t.Fatalf("incr after incr in one batch = %q, want 5", out[3].Value)
	}
	x.wantAbsent(kv, "b")
	x.wantValue(kv, "c", "5")
}

func testKVVersions(t *testing.T, x *env) {
	kv := x.kv(0)
	seen := map[uint64]bool{}
	var last uint64
	for i := range 5 {
		v := x.apply(kv, set("k", fmt.Sprint(i)))[0].Version
		if v <= last || seen[v] {
			t.Fatalf("write %d got version %d after %d: versions must increase", i, v, last)
		}
		seen[v], last = true, v
		x.apply(kv, engines.KVOp{Kind: engines.KVDelete, Key: []byte("k")})
	}
	if v := x.apply(kv, incr("k", 1))[0].Version; v <= last {
		t.Fatalf("incr after deletes got version %d, not above %d: a deleted key's versions were reused", v, last)
	}
}

func testKVIncr(t *testing.T, x *env) {
	kv := x.kv(0)
	if got := x.apply(kv, incr("n", 5))[0]; string(got.Value) != "5" {
		t.Fatalf("incr of absent key by 5 = %q, want 5", got.Value)
	}
	if got := x.apply(kv, incr("n", -7))[0]; string(got.Value) != "-2" {
		t.Fatalf("incr by -7 = %q, want -2", got.Value)
	}
	x.wantValue(kv, "n", "-2")
	x.apply(kv, set("text", "abc"), set("big", "9223372036854775807"))
	_, err := kv.Apply(x.ctx(wait), incr("n", 1), incr("text", 1))
	x.wantErr(err, engines.ErrInvalid, "incr of a value that is not a decimal integer")
	x.wantValue(kv, "n", "-2") // the whole batch failed
	_, err = kv.Apply(x.ctx(wait), incr("big", 1))
	x.wantErr(err, engines.ErrInvalid, "incr that overflows")
	x.wantValue(kv, "big", "9223372036854775807")
}

func testKVCAS(t *testing.T, x *env) {
	kv := x.kv(0)
	cas := func(key string, version uint64, val string) engines.KVOp {
		return engines.KVOp{Kind: engines.KVSet, Key: []byte(key), Value: []byte(val), IfVersion: version, HasVersion: true}
	}
	v1 := x.apply(kv, cas("k", 0, "first"))[0].Version
	_, err := kv.Apply(x.ctx(wait), cas("k", 0, "second"))
	x.wantErr(err, engines.ErrConflict, "set-if-absent on a present key")
	_, err = kv.Apply(x.ctx(wait), cas("k", v1+1000, "second"))
	x.wantErr(err, engines.ErrConflict, "compare-and-set on a wrong version")
	x.wantValue(kv, "k", "first")
	v2 := x.apply(kv, cas("k", v1, "second"))[0].Version
	if v2 <= v1 {
		t.Fatalf("compare-and-set gave version %d after %d", v2, v1)
	}
	x.apply(kv, check("k", v2), check("absent", 0))
	// A failed check fails the whole batch, whatever its position.
	_, err = kv.Apply(x.ctx(wait), set("other", "x"), check("k", v1))
	x.wantErr(err, engines.ErrConflict, "batch with a stale check")
	x.wantAbsent(kv, "other")
	_, err = kv.Apply(x.ctx(wait), set("other", "x"), check("absent", 1))
	x.wantErr(err, engines.ErrConflict, "check of an absent key at a version")
}

func testKVTTL(t *testing.T, x *env) {
	kv := x.kv(0)
	const ttl = 150 * time.Millisecond
	start := time.Now()
	out := x.apply(kv, engines.KVOp{Kind: engines.KVSet, Key: []byte("short"), Value: []byte("v"), TTL: ttl}, set("long", "v"))
	if out[0].Expires.IsZero() {
		t.Fatalf("set with TTL returned no expiry: %+v", out[0])
	}
	// An incr without TTL keeps the key's expiry; with one, sets it.
	x.apply(kv, engines.KVOp{Kind: engines.KVIncr, Key: []byte("counter"), Delta: 1, TTL: ttl})
	x.apply(kv, incr("counter", 1))
	if ent, ok := x.get(kv, "short"); ok && ent.Expires.IsZero() {
		t.Fatalf("Get of a key with a TTL shows no expiry: %+v", ent)
	} else if !ok && time.Since(start) < ttl-clockSlack {
		t.Fatalf("key with a TTL of %v gone after %v", ttl, time.Since(start))
	}
	x.outlive(ttl + 50*time.Millisecond)
	x.wantAbsent(kv, "short")
	x.wantAbsent(kv, "counter")
	x.wantValue(kv, "long", "v")
	ents, err := kv.List(x.ctx(wait), nil, nil, 10)
	if err != nil || len(ents) != 1 || string(ents[0].Key) != "long" {
		t.Fatalf("List after expiry = %v, %v; want only the key without TTL", keysOf(ents), err)
	}
	// An expired key is absent for a compare-and-set too.
	x.apply(kv, check("short", 0))
	_, err = kv.Apply(x.ctx(wait), engines.KVOp{Kind: engines.KVSet, Key: []byte("neg"), TTL: -time.Second})
	x.wantErr(err, engines.ErrInvalid, "negative TTL")
}

func keysOf(ents []engines.KVEntry) []string {
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = string(e.Key)
	}
	return out
}

func testKVList(t *testing.T, x *env) {
	kv := x.kv(0)
	for _, k := range []string{"b1", "a2", "a1", "a3", "c"} {
		x.apply(kv, set(k, "v-"+k))
	}
	list := func(prefix, after string, limit int) []string {
		t.Helper()
		var a []byte
		if after != "" {
			a = []byte(after)
		}
		ents, err := kv.List(x.ctx(wait), []byte(prefix), a, limit)
		if err != nil {
			t.Fatalf("List(%q, %q, %d): %v", prefix, after, limit, err)
		}
		for _, e := range ents {
			if string(e.Value) != "v-"+string(e.Key) || e.Version == 0 {
				t.Fatalf("List entry %+v: wrong value or no version", e)
			}
		}
		return keysOf(ents)
	}
	if got := list("", "", 100); !slices.Equal(got, []string{"a1", "a2", "a3", "b1", "c"}) {
		t.Fatalf("List all = %v, want every key in order", got)
	}
	if got := list("a", "", 2); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("List(a, limit 2) = %v", got)
	}
	if got := list("a", "a2", 2); !slices.Equal(got, []string{"a3"}) {
		t.Fatalf("List(a, after a2) = %v", got)
	}
	if got := list("zz", "", 5); len(got) != 0 {
		t.Fatalf("List(zz) = %v, want nothing", got)
	}
	_, err := kv.List(x.ctx(wait), nil, nil, 0)
	x.wantErr(err, engines.ErrInvalid, "List with limit 0")
}

func testKVLimits(t *testing.T, x *env) {
	kv := x.kv(16)
	ctx := x.ctx(wait)
	_, err := kv.Apply(ctx, set("", "v"))
	x.wantErr(err, engines.ErrInvalid, "empty key")
	_, err = kv.Get(ctx, nil)
	x.wantErr(err, engines.ErrInvalid, "Get of an empty key")
	long := strings.Repeat("k", engines.MaxKeySize)
	x.apply(kv, set(long, "v"))
	x.wantValue(kv, long, "v")
	_, err = kv.Apply(ctx, set(long+"k", "v"))
	x.wantErr(err, engines.ErrInvalid, "key one byte over MaxKeySize")
	x.apply(kv, set("fits", strings.Repeat("v", 16)))
	_, err = kv.Apply(ctx, set("ok", "v"), set("big", strings.Repeat("v", 17)))
	x.wantErr(err, engines.ErrTooLarge, "value one byte over the store's MaxValueSize")
	x.wantAbsent(kv, "ok")
	// Values may hold any bytes.
	bin := string([]byte{0, 1, 0xff, '\n'})
	x.apply(kv, set("bin", bin))
	x.wantValue(kv, "bin", bin)
}

func testKVShared(t *testing.T, x *env) {
	x.need(x.caps.KV, "KV")
	name := x.name()
	a, b := x.kvNamed(name, 0), x.kvNamed(name, 0)
	x.apply(a, set("k", "from a"))
	x.wantValue(b, "k", "from a")
	other := x.kvNamed(name+"_other", 0)
	x.wantAbsent(other, "k")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	x.wantValue(b, "k", "from a")
}

// txSetup skips unless the engine has transactions, and returns a source
// queue holding one leased message, a target queue and a store.
func (x *env) txSetup(spec engines.QueueSpec) (src, dst engines.Queue, kv engines.KV, d engines.Delivery) {
	x.t.Helper()
	x.need(x.caps.Transactions, "Transactions")
	x.need(x.caps.KV, "KV")
	src = x.open(spec)
	dst = x.open(engines.QueueSpec{})
	kv = x.kv(0)
	x.enqueue(src, engines.Message{Body: []byte("in")})
	return src, dst, kv, x.receiveOne(src, wait)
}

func (x *env) effects(dst engines.Queue, kv engines.KV, ops ...engines.KVOp) *engines.Effects {
	return &engines.Effects{
		Publish: []engines.Publish{
			{Queue: dst.Name(), Message: engines.Message{Body: []byte("out 1"), Attributes: map[string]string{"k": "v"}}},
			{Queue: dst.Name(), Message: engines.Message{Body: []byte("out 2")}},
		},
		KV: []engines.KVBatch{{Store: kv.Name(), Ops: ops}},
	}
}

func testTxCommitsAll(t *testing.T, x *env) {
	src, dst, kv, d := x.txSetup(engines.QueueSpec{})
	x.apply(kv, set("seen", "0"))
	other := x.kvNamed(x.name(), 0)
	eff := x.effects(dst, kv, incr("count", 1), check("seen", x.wantValue(kv, "seen", "0").Version), set("seen", "1"))
	eff.KV = append(eff.KV, engines.KVBatch{Store: other.Name(), Ops: []engines.KVOp{set("x", "y")}})
	if err := d.SettleTx(x.ctx(wait), eff); err != nil {
		t.Fatalf("SettleTx: %v", err)
	}
	for i, p := range eff.Publish {
		if p.Message.ID == "" {
			t.Fatalf("SettleTx did not write an ID back into publish %d", i)
		}
	}
	if st := x.stats(src); st.Depth() != 0 || st.AckedTotal != 1 {
		t.Fatalf("source after SettleTx: %+v, want the message acked", st)
	}
	got := x.receiveN(dst, 2, wait)
	slices.SortFunc(got, func(a, b engines.Delivery) int { return bytes.Compare(a.Body, b.Body) })
	if string(got[0].Body) != "out 1" || got[0].Attributes["k"] != "v" || string(got[1].Body) != "out 2" {
		t.Fatalf("target received %q, want both publishes with their attributes", bodies(got))
	}
	x.ackAll(got)
	x.wantValue(kv, "count", "1")
	x.wantValue(kv, "seen", "1")
	x.wantValue(other, "x", "y")
	// The ack happened: settling again finds no lease.
	x.wantErr(d.Ack(x.ctx(wait)), engines.ErrLeaseLost, "Ack after SettleTx")
	// Empty effects are a plain ack.
	x.enqueue(src, engines.Message{Body: []byte("plain")})
	d2 := x.receiveOne(src, wait)
	if err := d2.SettleTx(x.ctx(wait), nil); err != nil {
		t.Fatalf("SettleTx with no effects: %v", err)
	}
	if st := x.stats(src); st.Depth() != 0 || st.AckedTotal != 2 {
		t.Fatalf("source after an empty SettleTx: %+v", st)
	}
}

// wantUncommitted checks, after a SettleTx that failed (what), that it
// published nothing to dst and left its message of src leased, not acked.
func (x *env) wantUncommitted(src, dst engines.Queue, what string) {
	x.t.Helper()
	if st := x.stats(dst); st.Depth() != 0 {
		x.t.Fatalf("target after %s: %+v, want nothing published", what, st)
	}
	if st := x.stats(src); st.InFlight != 1 || st.AckedTotal != 0 {
		x.t.Fatalf("source after %s: %+v, want the message still leased", what, st)
	}
}

func testTxConflict(t *testing.T, x *env) {
	src, dst, kv, d := x.txSetup(engines.QueueSpec{MaxAttempts: 5})
	read := x.apply(kv, set("k", "old"))[0].Version
	x.apply(kv, set("k", "changed by another writer"))
	err := d.SettleTx(x.ctx(wait), x.effects(dst, kv, check("k", read), set("k", "mine"), incr("count", 1)))
	x.wantErr(err, engines.ErrConflict, "SettleTx after another writer changed a key it read")
	x.wantValue(kv, "k", "changed by another writer")
	x.wantAbsent(kv, "count")
	x.wantUncommitted(src, dst, "a conflict")
	// The lease is kept, so the caller can requeue it without a failure.
	if err := d.Requeue(x.ctx(wait), 0); err != nil {
		t.Fatalf("Requeue after a conflict: %v", err)
	}
	again := x.receiveOne(src, wait)
	if x.caps.DeadLetter && again.Failures != 0 {
		t.Fatalf("after a conflict and a requeue: %d failures, want 0", again.Failures)
	}
	if err := again.SettleTx(x.ctx(wait), x.effects(dst, kv, check("k", x.wantValue(kv, "k", "changed by another writer").Version), set("k", "mine"))); err != nil {
		t.Fatalf("SettleTx on the retry: %v", err)
	}
	x.wantValue(kv, "k", "mine")
	x.receiveN(dst, 2, wait)
}

func testTxLeaseLost(t *testing.T, x *env) {
	x.need(x.caps.Visibility, "Visibility")
	src, dst, kv, d := x.txSetup(engines.QueueSpec{VisibilityTimeout: 100 * time.Millisecond})
	// The lease lapses and another receiver gets the message, with a
	// lease long enough to outlast a loaded machine (the latest settings
	// win).
	src = x.open(engines.QueueSpec{Name: src.Name(), VisibilityTimeout: time.Minute})
	again := x.receiveOne(src, wait)
	err := d.SettleTx(x.ctx(wait), x.effects(dst, kv, incr("count", 1)))
	x.wantErr(err, engines.ErrLeaseLost, "SettleTx by a holder whose lease lapsed")
	x.wantAbsent(kv, "count")
	if st := x.stats(dst); st.Depth() != 0 {
		t.Fatalf("target after a lost lease: %+v, want nothing published", st)
	}
	// A nack applies nothing either: effects only ever travel with the ack.
	if err := again.Nack(x.ctx(wait), 0, "failed"); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	x.wantAbsent(kv, "count")
	if st := x.stats(dst); st.Depth() != 0 {
		t.Fatalf("target after a nack: %+v", st)
	}
}

func testTxInvalid(t *testing.T, x *env) {
	src, dst, kv, d := x.txSetup(engines.QueueSpec{})
	err := d.SettleTx(x.ctx(wait), x.effects(dst, kv, incr("count", 1), set("", "bad key")))
	x.wantErr(err, engines.ErrInvalid, "SettleTx with an empty key")
	x.wantAbsent(kv, "count")
	if st := x.stats(dst); st.Depth() != 0 {
		t.Fatalf("target after a rejected SettleTx: %+v", st)
	}
	if st := x.stats(src); st.InFlight != 1 {
		t.Fatalf("source after a rejected SettleTx: %+v, want the message still leased", st)
	}
	x.ack(d)
}

// stateOf returns d's state, or ok false when it has none.
func (x *env) stateOf(d engines.Delivery) ([]byte, bool) {
	x.t.Helper()
	v, err := d.State(x.ctx(wait))
	if errors.Is(err, engines.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		x.t.Fatalf("State of %s: %v", d.ID, err)
	}
	return v, true
}

func (x *env) setState(d engines.Delivery, v string) {
	x.t.Helper()
	if err := d.SetState(x.ctx(wait), []byte(v)); err != nil {
		x.t.Fatalf("SetState of %s: %v", d.ID, err)
	}
}

func testStateSurvivesNack(t *testing.T, x *env) {
	x.need(x.caps.Transactions, "Transactions")
	q := x.open(engines.QueueSpec{MaxAttempts: 10})
	x.enqueue(q, engines.Message{ID: "job", Body: []byte("multi-step")}, engines.Message{ID: "other"})
	ds := x.receiveN(q, 2, wait)
	d := ds[0]
	if d.ID != "job" {
		d = ds[1]
	}
	if _, ok := x.stateOf(d); ok {
		t.Fatalf("a new message has state")
	}
	x.setState(d, "step 1")
	x.setState(d, "step 2")
	if v, _ := x.stateOf(d); string(v) != "step 2" {
		t.Fatalf("State after two SetState = %q, want the latest", v)
	}
	err := d.SetState(x.ctx(wait), make([]byte, engines.MaxStateSize+1))
	x.wantErr(err, engines.ErrTooLarge, "state over MaxStateSize")
	if err := d.Nack(x.ctx(wait), 0, "step 3 failed"); err != nil {
		t.Fatal(err)
	}
	x.wantErr(d.SetState(x.ctx(wait), []byte("late")), engines.ErrLeaseLost, "SetState after the nack")
	again := x.receiveOne(q, wait)
	if again.ID != "job" {
		t.Fatalf("redelivered %q, want job", again.ID)
	}
	if v, ok := x.stateOf(again); !ok || string(v) != "step 2" {
		t.Fatalf("state on the retry = %q (present %v), want step 2", v, ok)
	}
	// State is per message: the other one has none.
	for _, o := range ds {
		if o.ID == "other" {
			if _, ok := x.stateOf(o); ok {
				t.Fatalf("state leaked to another message")
			}
		}
	}
	x.setState(again, "")
	if v, ok := x.stateOf(again); !ok || len(v) != 0 {
		t.Fatalf("empty state read back as %q (present %v), want present and empty", v, ok)
	}
}

func testStateDeletedOnAck(t *testing.T, x *env) {
	x.need(x.caps.Transactions, "Transactions")
	q := x.open(engines.QueueSpec{})
	x.enqueue(q, engines.Message{ID: "job"})
	d := x.receiveOne(q, wait)
	x.setState(d, "progress")
	x.ack(d)
	// A new message with the same ID starts without state.
	x.enqueue(q, engines.Message{ID: "job"})
	d = x.receiveOne(q, wait)
	if v, ok := x.stateOf(d); ok {
		t.Fatalf("state %q outlived its message's ack", v)
	}
	x.setState(d, "progress")
	if err := d.SettleTx(x.ctx(wait), nil); err != nil {
		t.Fatal(err)
	}
	x.enqueue(q, engines.Message{ID: "job"})
	if v, ok := x.stateOf(x.receiveOne(q, wait)); ok {
		t.Fatalf("state %q outlived its message's SettleTx", v)
	}
}

func testStateDeletedOnDeadLetter(t *testing.T, x *env) {
	x.need(x.caps.Transactions, "Transactions")
	x.need(x.caps.DeadLetter, "DeadLetter")
	name := x.name()
	q := x.open(engines.QueueSpec{Name: name, MaxAttempts: 1, DeadLetter: name + "_dlq"})
	dlq := x.open(engines.QueueSpec{Name: name + "_dlq"})
	x.enqueue(q, engines.Message{ID: "explicit"}, engines.Message{ID: "exhausted"})
	for _, d := range x.receiveN(q, 2, wait) {
		x.setState(d, "progress of "+d.ID)
		var err error
		if d.ID == "explicit" {
			err = d.DeadLetter(x.ctx(wait), "gave up")
		} else {
			err = d.Nack(x.ctx(wait), 0, "last attempt")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The dead letters carry no state into their new queue...
	for _, d := range x.receiveN(dlq, 2, wait) {
		if v, ok := x.stateOf(d); ok {
			t.Fatalf("dead letter %s has state %q in the dead-letter queue", d.ID, v)
		}
		x.ack(d)
	}
	// ...and left none behind in the old one.
	x.enqueue(q, engines.Message{ID: "explicit"}, engines.Message{ID: "exhausted"})
	for _, d := range x.receiveN(q, 2, wait) {
		if v, ok := x.stateOf(d); ok {
			t.Fatalf("state %q of %s outlived its dead-lettering", v, d.ID)
		}
	}
}

// testKVStateRestart: stores, versions and per-message state survive a
// clean restart.
func testKVStateRestart(t *testing.T, s *storage) {
	s.start()
	if !s.caps.KV || !s.caps.Transactions {
		s.stop()
		s.need(false, "KV and Transactions")
	}
	name := s.name()
	store := name + "_kv"
	kv := s.kvNamed(store, 0)
	v := s.apply(kv, set("k", "v"), incr("n", 41), set("gone", "x"))[0].Version
	s.apply(kv, engines.KVOp{Kind: engines.KVDelete, Key: []byte("gone")})
	q := s.open(engines.QueueSpec{Name: name, VisibilityTimeout: time.Minute, MaxAttempts: 10})
	s.enqueue(q, engines.Message{ID: "job"})
	d := s.receiveOne(q, wait)
	s.setState(d, "half done")
	if err := d.Nack(s.ctx(wait), 0, "crash soon"); err != nil {
		t.Fatal(err)
	}
	s.stop()

	s.start()
	kv = s.kvNamed(store, 0)
	if got := s.wantValue(kv, "k", "v"); got.Version != v {
		t.Fatalf("after restart: version %d, want %d", got.Version, v)
	}
	s.wantValue(kv, "n", "41")
	s.wantAbsent(kv, "gone")
	var last uint64
	ents, err := kv.List(s.ctx(wait), nil, nil, 10)
	if err != nil || len(ents) != 2 {
		t.Fatalf("List after restart = %v, %v", keysOf(ents), err)
	}
	for _, e := range ents {
		last = max(last, e.Version)
	}
	if nv := s.apply(kv, set("gone", "again"))[0].Version; nv <= last+1 {
		// "gone" was written at a version above "n"'s and deleted: a new
		// write must not reuse it.
		t.Fatalf("write after restart got version %d; the deleted key had a version above %d", nv, last)
	}
	q = s.open(engines.QueueSpec{Name: name})
	d = s.receiveOne(q, wait)
	if v, ok := s.stateOf(d); !ok || string(v) != "half done" {
		t.Fatalf("state after restart = %q (present %v), want half done", v, ok)
	}
	s.ack(d)
	s.stop()
}

// testCrashTxAllOrNothing kills a process while it settles deliveries
// transactionally (an ack, a publish, an increment and a set each): after
// the restart every message's effects are all there, and the message
// gone, or none of them are, and the message still there.
func testCrashTxAllOrNothing(t *testing.T, s *storage) {
	s.needCrash()
	s.start()
	caps := s.caps
	s.stop()
	s.need(caps.Transactions && caps.KV, "Transactions and KV")
	const n = 400
	name := s.name()
	spec := engines.QueueSpec{Name: name, VisibilityTimeout: 5 * time.Second}
	cmd, out := s.child("tx", spec, fmt.Sprint(n))
	settled := map[string]bool{}
	for len(settled) < n/4 {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("the child stopped reporting after %d settles: %v", len(settled), err)
		}
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "T "); ok {
			settled[id] = true
		}
	}
	s.kill(cmd, out, "tx child", func(line string) {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "T "); ok {
			settled[id] = true
		}
	})

	s.start()
	kv := s.kvNamed(name+"_kv", 0)
	ents, err := kv.List(s.ctx(wait), []byte("m-"), nil, 2*n)
	if err != nil {
		t.Fatal(err)
	}
	committed := map[string]bool{}
	for _, e := range ents {
		committed[strings.TrimPrefix(string(e.Key), "m-")] = true
	}
	count := int64(0)
	if ent, ok := s.get(kv, "count"); ok {
		fmt.Sscan(string(ent.Value), &count)
	}
	if count != int64(len(committed)) {
		t.Fatalf("counter %d but %d messages' sets committed: a transaction was applied in part", count, len(committed))
	}
	if s.r.SyncCommits {
		for id := range settled {
			if !committed[id] {
				t.Fatalf("SettleTx of %s returned before the kill, but its effects are gone", id)
			}
		}
	}
	dst := s.open(engines.QueueSpec{Name: name + "_out"})
	src := s.open(engines.QueueSpec{Name: name})
	if st := s.stats(dst); st.Depth() != int64(len(committed)) {
		t.Fatalf("output queue holds %d messages, %d transactions committed", st.Depth(), len(committed))
	}
	for _, d := range s.receiveN(dst, len(committed), wait) {
		if !committed[string(d.Body)] {
			t.Fatalf("published %q without its store writes", d.Body)
		}
		s.ack(d)
	}
	// Acked as they come: the crashed child's leases expire meanwhile.
	ctx := s.ctx(wait)
	for left := n - len(committed); left > 0; {
		ds, err := s.receive(ctx, src, left)
		if err != nil {
			t.Fatalf("receiving the %d messages no committed transaction acked: %v", left, err)
		}
		for _, d := range ds {
			if committed[d.ID] {
				t.Fatalf("message %s was acked in a committed transaction but is still in its queue", d.ID)
			}
			s.ack(d)
		}
		left -= len(ds)
	}
	s.stop()
}

// childTx enqueues n messages and settles them one at a time with
// SettleTx (a publish to QUEUE_out, an incr of "count" and a set of "m-ID"
// in store QUEUE_kv), reporting "T id" after each returned.
func childTx(ctx context.Context, e engines.Engine, q engines.Queue, arg string) error {
	var n int
	if _, err := fmt.Sscan(arg, &n); err != nil {
		return fmt.Errorf("argument %q: %w", arg, err)
	}
	ke, ok := e.(engines.KVEngine)
	if !ok {
		return errors.New("engine has no KV")
	}
	kv, err := ke.OpenKV(ctx, engines.KVSpec{Name: q.Name() + "_kv"})
	if err != nil {
		return err
	}
	if _, err := e.Open(ctx, engines.QueueSpec{Name: q.Name() + "_out"}); err != nil {
		return err
	}
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i] = engines.Message{ID: fmt.Sprintf("t%04d", i)}
	}
	if err := q.Enqueue(ctx, msgs...); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	var w lineWriter
	buf := make([]engines.Delivery, 8)
	for {
		k, err := q.Receive(ctx, buf)
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		for _, d := range buf[:k] {
			eff := &engines.Effects{
				Publish: []engines.Publish{{Queue: q.Name() + "_out", Message: engines.Message{Body: []byte(d.ID)}}},
				KV:      []engines.KVBatch{{Store: kv.Name(), Ops: []engines.KVOp{incr("count", 1), set("m-"+d.ID, "done")}}},
			}
			if err := d.SettleTx(ctx, eff); err != nil {
				return fmt.Errorf("settle tx %s: %w", d.ID, err)
			}
			w.emit("T", []string{d.ID})
		}
	}
}

// testTxNoLostUpdate: concurrent deliveries that read a counter and write
// it back plus one, checking what they read at commit and requeueing on a
// conflict, lose no update.
// IncrementTx is one read-then-write delivery: it reads the decimal
// counter at key in kv (absent counts as 0) and settles d with its ack,
// a check that the key is still at the version read and the counter plus
// one, in one transaction (engines.Delivery.SettleTx). When another
// delivery changed the key first (engines.ErrConflict) it requeues d and
// reports committed false; any other error is returned. Engine packages
// use it to test that concurrent increments lose no update, across engines
// sharing storage too.
func IncrementTx(ctx context.Context, kv engines.KV, key string, d *engines.Delivery) (committed bool, err error) {
	var cur int64
	var ver uint64
	if ent, err := kv.Get(ctx, []byte(key)); err == nil {
		cur, _ = strconv.ParseInt(string(ent.Value), 10, 64)
		ver = ent.Version
	} else if !errors.Is(err, engines.ErrNotFound) {
		return false, err
	}
	err = d.SettleTx(ctx, &engines.Effects{KV: []engines.KVBatch{{Store: kv.Name(), Ops: []engines.KVOp{check(key, ver), set(key, strconv.FormatInt(cur+1, 10))}}}})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, engines.ErrConflict):
		return false, d.Requeue(ctx, 0)
	default:
		return false, err
	}
}

func testTxNoLostUpdate(t *testing.T, x *env) {
	x.need(x.caps.Transactions, "Transactions")
	x.need(x.caps.KV, "KV")
	const n, workers = 60, 4
	q := x.open(engines.QueueSpec{})
	kv := x.kv(0)
	msgs := make([]engines.Message, n)
	x.enqueue(q, msgs...)
	ctx := x.ctx(wait)
	var (
		mu        sync.Mutex
		done      int
		conflicts int
		wg        sync.WaitGroup
		errs      = make(chan error, workers)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				finished := done == n
				mu.Unlock()
				if finished {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, quiet)
				ds, err := engines.ReceiveN(rctx, q, 1)
				cancel()
				if err != nil {
					continue // another worker holds the rest
				}
				committed, err := IncrementTx(ctx, kv, "n", &ds[0])
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
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	x.wantValue(kv, "n", strconv.Itoa(n))
	t.Logf("%d conflicts requeued", conflicts)
}

func testStateDeletedOnPurge(t *testing.T, x *env) {
	x.need(x.caps.Transactions, "Transactions")
	q := x.open(engines.QueueSpec{})
	p, ok := q.(engines.Purger)
	if !ok {
		t.Skip("queue is not an engines.Purger")
	}
	x.enqueue(q, engines.Message{ID: "job"})
	d := x.receiveOne(q, wait)
	x.setState(d, "progress")
	if err := d.Requeue(x.ctx(wait), 0); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Purge(x.ctx(wait)); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v; want the one message", n, err)
	}
	x.enqueue(q, engines.Message{ID: "job"})
	if v, ok := x.stateOf(x.receiveOne(q, wait)); ok {
		t.Fatalf("state %q outlived a purge of its message", v)
	}
}

// testTxAddsNeverConflict: increments held without a check (kv_add)
// commute: deliveries committing them to one key at the same time all
// commit, and none is lost.
func testTxAddsNeverConflict(t *testing.T, x *env) {
	x.need(x.caps.Transactions, "Transactions")
	x.need(x.caps.KV, "KV")
	const n, workers = 60, 4
	q := x.open(engines.QueueSpec{})
	kv := x.kv(0)
	x.enqueue(q, make([]engines.Message, n)...)
	ctx := x.ctx(wait)
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		errs = make(chan error, n)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= n {
				ds, err := engines.ReceiveN(ctx, q, 1)
				if err != nil {
					errs <- err
					return
				}
				errs <- ds[0].SettleTx(ctx, &engines.Effects{KV: []engines.KVBatch{{Store: kv.Name(), Ops: []engines.KVOp{incr("n", 1)}}}})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("SettleTx of a blind increment: %v", err)
		}
	}
	x.wantValue(kv, "n", strconv.Itoa(n))
}

// testTxAddRefused: an increment held without a check that cannot apply
// to the value the key has at commit (not a decimal integer) fails the
// whole commit with ErrInvalid, nothing applied and the lease kept, so
// the caller can nack the delivery.
func testTxAddRefused(t *testing.T, x *env) {
	src, dst, kv, d := x.txSetup(engines.QueueSpec{MaxAttempts: 5})
	x.apply(kv, set("n", "abc"))
	err := d.SettleTx(x.ctx(wait), x.effects(dst, kv, set("y", "1"), incr("n", 1)))
	x.wantErr(err, engines.ErrInvalid, "SettleTx adding to a value that is not a number")
	x.wantValue(kv, "n", "abc")
	x.wantAbsent(kv, "y")
	x.wantUncommitted(src, dst, "a refused commit")
	if err := d.Nack(x.ctx(wait), 0, "effects refused"); err != nil {
		t.Fatalf("Nack after a refused commit: %v", err)
	}
	again := x.receiveOne(src, wait)
	if x.caps.DeadLetter && again.Failures != 1 {
		t.Fatalf("after a refused commit and a nack: %d failures, want 1", again.Failures)
	}
	x.ack(again)
}
