package plugin

import (
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/engines"
)

// fakeKV is a test double of engines.KV: a map with versions, enough to
// see what the host functions ask of a store. It proves nothing about any
// engine (enginetest does that).
type fakeKV struct {
	mu      sync.Mutex
	m       map[string]engines.KVEntry
	version uint64
	applied [][]engines.KVOp
}

func newFakeKV() *fakeKV { return &fakeKV{m: map[string]engines.KVEntry{}} }

func (f *fakeKV) Name() string { return "fake" }
func (f *fakeKV) Close() error { return nil }

func (f *fakeKV) Get(_ context.Context, key []byte) (engines.KVEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.m[string(key)]
	if !ok {
		return engines.KVEntry{}, engines.ErrNotFound
	}
	return e, nil
}

func (f *fakeKV) List(context.Context, []byte, []byte, int) ([]engines.KVEntry, error) {
	return nil, engines.ErrUnsupported
}

func (f *fakeKV) Apply(_ context.Context, ops ...engines.KVOp) ([]engines.KVEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, op := range ops {
		if op.Kind == engines.KVCheck || (op.Kind == engines.KVSet && op.HasVersion) {
			if f.m[string(op.Key)].Version != op.IfVersion {
				return nil, engines.ErrConflict
			}
		}
	}
	// All or nothing: the ops run on a copy.
	m, version := maps.Clone(f.m), f.version
	out := make([]engines.KVEntry, len(ops))
	for i, op := range ops {
		k := string(op.Key)
		switch op.Kind {
		case engines.KVSet:
			version++
			m[k] = engines.KVEntry{Key: op.Key, Value: op.Value, Version: version}
		case engines.KVDelete:
			delete(m, k)
		case engines.KVIncr:
			var n int64
			if e, ok := m[k]; ok {
				v, err := strconv.ParseInt(string(e.Value), 10, 64)
				if err != nil {
					return nil, engines.ErrInvalid
				}
				n = v
			}
			version++
			m[k] = engines.KVEntry{Key: op.Key, Value: []byte(strconv.FormatInt(n+op.Delta, 10)), Version: version}
		}
		out[i] = m[k]
	}
	f.m, f.version = m, version
	f.applied = append(f.applied, ops)
	return out, nil
}

func (f *fakeKV) value(key string) (string, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.m[key]
	return string(e.Value), e.Version
}

// stateSettler is a settler that keeps per-message state.
type stateSettler struct {
	fakeSettler
	mu    sync.Mutex
	state []byte
	has   bool
}

func (s *stateSettler) State(context.Context, engines.Ticket) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.has {
		return nil, engines.ErrNotFound
	}
	return s.state, nil
}

func (s *stateSettler) SetState(_ context.Context, _ engines.Ticket, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.has = v, true
	return nil
}

// script builds a kv.wat command.
type script []byte

func (s script) cmd(op byte, store, key string, val []byte) script {
	s = append(s, op, byte(len(store)), byte(len(key)), byte(len(val)))
	s = append(s, store...)
	s = append(s, key...)
	return append(s, val...)
}

func le64(n int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(n)) }

func casVal(version int64, v string) []byte { return append(le64(version), v...) }

func kvPlugin(t *testing.T, s Spec, pub Publisher) *Instance {
	t.Helper()
	return newInstance(t, load(t, newTestHost(t, nil), "kv", s, pub))
}

func res(t *testing.T, in *Instance, n uint32) int32 { return memI32(t, in, 0x100+4*n) }
func res64(t *testing.T, in *Instance, n uint32) int64 {
	return memI64(t, in, 0x200+8*n)
}

// TestKVImmediate runs every kv_* function on a store whose writes apply
// at once (not transactional) and checks each return code of ABI.md.
func TestKVImmediate(t *testing.T) {
	store := newFakeKV()
	stats := &KVStats{}
	in := kvPlugin(t, Spec{KV: []KVStore{{Name: "st", Store: store, MaxValueSize: 8, Stats: stats}}}, nil)
	big := make([]byte, 9)
	body := script(nil).
		cmd('s', "st", "k", []byte("v1")).     // 0
		cmd('g', "st", "k", nil).              // 1
		cmd('v', "st", "k", nil).              // 2
		cmd('i', "st", "n", le64(5)).          // 3
		cmd('i', "st", "n", le64(-7)).         // 4
		cmd('c', "st", "k", casVal(1, "v2")).  // 5
		cmd('c', "st", "k", casVal(1, "v3")).  // 6: stale version
		cmd('c', "st", "new", casVal(0, "x")). // 7: only if absent
		cmd('d', "st", "k", nil).              // 8
		cmd('g', "st", "k", nil).              // 9: absent
		cmd('d', "st", "k", nil).              // 10: absent is 0 too
		cmd('g', "other", "k", nil).           // 11: not granted
		cmd('s', "st", "", []byte("v")).       // 12: empty key
		cmd('t', "st", "k", []byte("v")).      // 13: negative ttl
		cmd('s', "st", "k", big).              // 14: too large
		cmd('i', "st", "new", le64(1)).        // 15: not decimal
		cmd('v', "st", "absent", nil)          // 16
	d := delivery("", nil)
	d.Body = body
	r := mustHandle(t, in, d)
	if r.Effects != nil {
		t.Fatalf("immediate store produced held effects: %+v", r.Effects)
	}
	want := map[uint32]int32{0: 0, 1: 2, 3: 0, 4: 0, 5: 0, 6: abi.ErrConflict, 7: 0, 8: 0, 9: abi.ErrNotFound,
		10: 0, 11: abi.ErrDenied, 12: abi.ErrInvalid, 13: abi.ErrInvalid, 14: abi.ErrTooLarge, 15: abi.ErrInvalid}
	for n, w := range want {
		if got := res(t, in, n); got != w {
			t.Errorf("command %d returned %d, want %d", n, got, w)
		}
	}
	if got := memStr(t, in, 0x1000+0x40, 2); got != "v1" {
		t.Errorf("kv_get read %q, want v1", got)
	}
	if got := res64(t, in, 2); got != 1 {
		t.Errorf("kv_version = %d, want 1", got)
	}
	if got := res64(t, in, 3); got != 5 {
		t.Errorf("kv_incr(5) = %d, want 5", got)
	}
	if got := res64(t, in, 4); got != -2 {
		t.Errorf("kv_incr(-7) = %d, want -2", got)
	}
	if got := res64(t, in, 16); got != 0 {
		t.Errorf("kv_version of an absent key = %d, want 0", got)
	}
	if v, _ := store.value("n"); v != "-2" {
		t.Errorf("store holds n=%q, want -2", v)
	}
	if v, _ := store.value("new"); v != "x" {
		t.Errorf("store holds new=%q, want x", v)
	}
	if stats.Conflicts.Load() != 1 {
		t.Errorf("conflicts = %d, want 1", stats.Conflicts.Load())
	}
	if stats.Ops.Load() == 0 {
		t.Error("no operations counted")
	}
}

// TestKVKeyTooLong: a key of 513 bytes is -4 (the script's lengths are
// one byte, so this calls the host function directly).
func TestKVLimits(t *testing.T) {
	st := &instanceState{p: &Plugin{kv: kvBindings(Spec{KV: []KVStore{{Name: "st", Store: newFakeKV()}}})}}
	if _, c := kvCall(st, []byte("st"), []byte("k")); c != abi.ErrNoMessage {
		t.Errorf("outside qrun_handle: %d, want -5", c)
	}
	st.d = delivery("", nil)
	if _, c := kvCall(st, []byte("st"), make([]byte, engines.MaxKeySize+1)); c != abi.ErrInvalid {
		t.Errorf("key of 513 bytes: %d, want -4", c)
	}
	if _, c := kvCall(st, []byte("st"), make([]byte, engines.MaxKeySize)); c != 0 {
		t.Errorf("key of 512 bytes: %d, want 0", c)
	}
	st.p.kv = kvBindings(Spec{KV: []KVStore{{Name: "st"}}})
	if _, c := kvCall(st, []byte("st"), []byte("k")); c != abi.ErrUnavailable {
		t.Errorf("store not open: %d, want -6", c)
	}
}

// TestKVTransactional: on a transactional store writes are held, the
// delivery reads its own writes, reads become checks, and only an ack
// hands the effects over.
// It runs on a store with Get only and on one that offers Lookup, which
// view prefers.
func TestKVTransactional(t *testing.T) {
	t.Run("get", func(t *testing.T) { testKVTransactional(t, false) })
	t.Run("lookup", func(t *testing.T) { testKVTransactional(t, true) })
}

// lookupKV is a fakeKV that offers Lookup, counting its calls.
type lookupKV struct {
	*fakeKV
	lookups *atomic.Int64
}

func (l lookupKV) Lookup(ctx context.Context, key []byte) (engines.KVEntry, bool, error) {
	l.lookups.Add(1)
	e, err := l.Get(ctx, key)
	if errors.Is(err, engines.ErrNotFound) {
		return engines.KVEntry{}, false, nil
	}
	return e, err == nil, err
}

func testKVTransactional(t *testing.T, lookup bool) {
	store := newFakeKV()
	var kv engines.KV = store
	lookups := new(atomic.Int64)
	if lookup {
		kv = lookupKV{store, lookups}
		t.Cleanup(func() {
			if lookups.Load() == 0 {
				t.Error("view did not use Lookup")
			}
		})
	}
	_, _ = store.Apply(context.Background(), engines.KVOp{Kind: engines.KVSet, Key: []byte("seen"), Value: []byte("7")})
	pub := &fakePublisher{}
	in := kvPlugin(t, Spec{
		KV:        []KVStore{{Name: "st", Store: kv, Tx: true}},
		Publish:   []string{"out", "far"},
		TxPublish: []string{"out"},
	}, pub)
	body := script(nil).
		cmd('s', "st", "a", []byte("1")).       // 0 blind write
		cmd('g', "st", "a", nil).               // 1 reads its own write
		cmd('i', "st", "seen", le64(3)).        // 2 read (checked) then incr: 10
		cmd('v', "st", "seen", nil).            // 3 version as this delivery sees it
		cmd('c', "st", "seen", casVal(1, "x")). // 4 stale: the delivery sees 2
		cmd('c', "st", "seen", casVal(2, "y")). // 5
		cmd('g', "st", "seen", nil).            // 6
		cmd('d', "st", "a", nil).               // 7
		cmd('g', "st", "a", nil).               // 8 absent now
		cmd('p', "out", "", []byte("held")).    // 9
		cmd('p', "far", "", []byte("now"))      // 10
	d := delivery("", nil)
	d.Body = body
	r := mustHandle(t, in, d)
	for n, w := range map[uint32]int32{0: 0, 1: 1, 2: 0, 4: abi.ErrConflict, 5: 0, 6: 1, 7: 0, 8: abi.ErrNotFound, 9: 0, 10: 0} {
		if got := res(t, in, n); got != w {
			t.Errorf("command %d returned %d, want %d", n, got, w)
		}
	}
	if got := res64(t, in, 2); got != 10 {
		t.Errorf("kv_incr = %d, want 10", got)
	}
	if got := res64(t, in, 3); got != 2 {
		t.Errorf("kv_version after the delivery's own incr = %d, want 2", got)
	}
	if got := memStr(t, in, 0x1000+6*0x40, 1); got != "y" {
		t.Errorf("read %q after own cas, want y", got)
	}
	if v, ver := store.value("seen"); v != "7" || ver != 1 {
		t.Errorf("store changed before the ack: seen=%q v%d", v, ver)
	}
	if ps := pub.all(); len(ps) != 1 || ps[0].queue != "far" {
		t.Errorf("published at once: %+v; want only the publish to far", ps)
	}
	if r.Effects == nil || len(r.Effects.Publish) != 1 || string(r.Effects.Publish[0].Message.Body) != "held" {
		t.Fatalf("effects = %+v, want the publish to out held", r.Effects)
	}
	if len(r.Effects.KV) != 1 {
		t.Fatalf("effects hold %d store batches, want 1", len(r.Effects.KV))
	}
	ops := r.Effects.KV[0].Ops
	kinds := make([]engines.KVOpKind, len(ops))
	for i, op := range ops {
		kinds[i] = op.Kind
	}
	wantKinds := []engines.KVOpKind{engines.KVSet, engines.KVCheck, engines.KVIncr, engines.KVSet, engines.KVDelete}
	if len(kinds) != len(wantKinds) {
		t.Fatalf("ops %v, want %v", kinds, wantKinds)
	}
	for i := range kinds {
		if kinds[i] != wantKinds[i] {
			t.Fatalf("ops %v, want %v", kinds, wantKinds)
		}
	}
	if c := ops[1]; !c.HasVersion || c.IfVersion != 1 || string(c.Key) != "seen" {
		t.Errorf("check %+v, want seen at version 1", c)
	}
	// Applying them as an engine would gives what the delivery saw.
	if _, err := store.Apply(context.Background(), ops...); err != nil {
		t.Fatal(err)
	}
	if v, _ := store.value("seen"); v != "y" {
		t.Errorf("after commit seen=%q, want y", v)
	}

	// A nack holds nothing, and the next delivery starts with an empty buffer.
	d = delivery("", nil)
	d.Body = script(nil).cmd('s', "st", "b", []byte("1")).cmd('p', "out", "", []byte("x")).cmd('N', "", "", nil)
	if r := mustHandle(t, in, d); r.Effects != nil || r.Verdict != engines.Nack {
		t.Errorf("nack returned effects %+v, verdict %v", r.Effects, r.Verdict)
	}
	d = delivery("", nil)
	d.Body = script(nil).cmd('g', "st", "b", nil)
	r = mustHandle(t, in, d)
	if got := res(t, in, 0); got != abi.ErrNotFound {
		t.Errorf("a nacked delivery's write is visible to the next: %d", got)
	}
	if r.Effects == nil || len(r.Effects.Publish) != 0 || len(r.Effects.KV) != 1 || len(r.Effects.KV[0].Ops) != 1 {
		t.Errorf("effects of a read-only delivery = %+v, want one check", r.Effects)
	}
}

// TestState: state_get and state_set go to the delivery's engine; -13
// where it keeps none.
func TestState(t *testing.T) {
	in := kvPlugin(t, Spec{}, nil)
	ss := &stateSettler{}
	d := delivery("", ss)
	d.Body = script(nil).cmd('G', "", "", nil).cmd('S', "", "", []byte("step2")).cmd('G', "", "", nil)
	mustHandle(t, in, d)
	if got := res(t, in, 0); got != abi.ErrNotFound {
		t.Errorf("state_get with none = %d, want -2", got)
	}
	if got := res(t, in, 2); got != 5 || memStr(t, in, 0x1000+2*0x40, 5) != "step2" {
		t.Errorf("state_get = %d, want 5 (step2)", got)
	}
	if string(ss.state) != "step2" {
		t.Errorf("engine holds %q", ss.state)
	}
	d = delivery("", nil) // fakeSettler keeps no state
	d.Body = script(nil).cmd('G', "", "", nil).cmd('S', "", "", []byte("x"))
	mustHandle(t, in, d)
	if a, b := res(t, in, 0), res(t, in, 1); a != abi.ErrUnsupported || b != abi.ErrUnsupported {
		t.Errorf("state on an engine without it: %d %d, want -13", a, b)
	}
}

// TestKVAddImmediate: on an immediate store kv_add applies the add at once
// and says at once when it cannot.
func TestKVAddImmediate(t *testing.T) {
	store := newFakeKV()
	in := kvPlugin(t, Spec{KV: []KVStore{{Name: "st", Store: store}}}, nil)
	d := delivery("", nil)
	d.Body = script(nil).
		cmd('a', "st", "n", le64(5)).  // 0
		cmd('a', "st", "n", le64(-7)). // 1
		cmd('s', "st", "k", []byte("v")).
		cmd('a', "st", "k", le64(1)).    // 3: not decimal
		cmd('a', "other", "n", le64(1)). // 4: not granted
		cmd('a', "st", "", le64(1))      // 5: empty key
	if r := mustHandle(t, in, d); r.Effects != nil {
		t.Fatalf("immediate store produced held effects: %+v", r.Effects)
	}
	for n, w := range map[uint32]int32{0: 0, 1: 0, 3: abi.ErrInvalid, 4: abi.ErrDenied, 5: abi.ErrInvalid} {
		if got := res(t, in, n); got != w {
			t.Errorf("command %d returned %d, want %d", n, got, w)
		}
	}
	if v, _ := store.value("n"); v != "-2" {
		t.Errorf("store holds n=%q, want -2", v)
	}
}

// TestKVAddTransactional: on a transactional store kv_add neither reads
// the key nor checks it at commit; it is held as an increment the engine
// applies to the value the key has then. A later read of the key reads the
// store once, checked before every op the delivery holds, and sees the
// adds applied; an add to a value the delivery knows is applied at once.
func TestKVAddTransactional(t *testing.T) {
	store := newFakeKV()
	for k, v := range map[string]string{"seen": "7", "bad": "x"} {
		if _, err := store.Apply(context.Background(), engines.KVOp{Kind: engines.KVSet, Key: []byte(k), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	lookups := new(atomic.Int64)
	in := kvPlugin(t, Spec{KV: []KVStore{{Name: "st", Store: lookupKV{store, lookups}, Tx: true}}}, nil)
	blind := script(nil).
		cmd('a', "st", "seen", le64(3)).  // 0
		cmd('a', "st", "fresh", le64(2)). // 1
		cmd('a', "st", "fresh", le64(5)). // 2
		cmd('a', "st", "bad", le64(1))    // 3: refused only at commit
	d := delivery("", nil)
	d.Body = blind
	r := mustHandle(t, in, d)
	for n := range uint32(4) {
		if got := res(t, in, n); got != 0 {
			t.Errorf("blind add %d returned %d, want 0", n, got)
		}
	}
	if n := lookups.Load(); n != 0 {
		t.Errorf("blind adds read the store %d times, want none", n)
	}
	if r.Effects == nil || len(r.Effects.KV) != 1 {
		t.Fatalf("effects %+v, want one store batch", r.Effects)
	}
	for _, op := range r.Effects.KV[0].Ops {
		if op.Kind != engines.KVIncr {
			t.Errorf("blind adds hold %+v, want increments only", op)
		}
	}
	if _, err := store.Apply(context.Background(), r.Effects.KV[0].Ops...); !errors.Is(err, engines.ErrInvalid) {
		t.Errorf("commit of an add to %q: %v, want ErrInvalid", "x", err)
	}

	d = delivery("", nil)
	d.Body = script(nil).
		cmd('a', "st", "seen", le64(3)).      // 0
		cmd('g', "st", "seen", nil).          // 1: reads 7, sees 10
		cmd('v', "st", "seen", nil).          // 2: version 1 + one write
		cmd('a', "st", "seen", le64(1)).      // 3: known: 11 at once
		cmd('g', "st", "seen", nil).          // 4
		cmd('a', "st", "w", le64(2)).         // 5
		cmd('s', "st", "w", []byte("9")).     // 6
		cmd('v', "st", "w", nil).             // 7: absent + two writes
		cmd('g', "st", "w", nil).             // 8
		cmd('a', "st", "bad", le64(1)).       // 9
		cmd('g', "st", "bad", nil).           // 10: the add cannot apply
		cmd('s', "st", "fresh", []byte("x")). // 11: known now
		cmd('a', "st", "fresh", le64(1))      // 12: -4 at once
	lookups.Store(0)
	r = mustHandle(t, in, d)
	for n, w := range map[uint32]int32{0: 0, 1: 2, 3: 0, 4: 2, 5: 0, 6: 0, 8: 1, 9: 0, 10: abi.ErrInvalid, 11: 0, 12: abi.ErrInvalid} {
		if got := res(t, in, n); got != w {
			t.Errorf("command %d returned %d, want %d", n, got, w)
		}
	}
	if got := memStr(t, in, 0x1000+1*0x40, 2); got != "10" {
		t.Errorf("read %q after add, want 10", got)
	}
	if got := res64(t, in, 2); got != 2 {
		t.Errorf("kv_version after a read add = %d, want 2", got)
	}
	if got := memStr(t, in, 0x1000+4*0x40, 2); got != "11" {
		t.Errorf("read %q after a second add, want 11", got)
	}
	if got := res64(t, in, 7); got != 2 {
		t.Errorf("kv_version of a key added to then set = %d, want 2", got)
	}
	if got := memStr(t, in, 0x1000+8*0x40, 1); got != "9" {
		t.Errorf("read %q after add then set, want 9", got)
	}
	if n := lookups.Load(); n != 3 {
		t.Errorf("%d store reads, want 3 (seen, w, bad: one each)", n)
	}
	ops := r.Effects.KV[0].Ops
	// The checks come first and test the versions read: seen at 1, w
	// absent. bad's read found adds that cannot apply, so it stays
	// unchecked: the commit fails on them unless bad changes first.
	checks := map[string]uint64{}
	for i, op := range ops {
		if op.Kind != engines.KVCheck {
			for _, later := range ops[i:] {
				if later.Kind == engines.KVCheck {
					t.Fatalf("ops %+v: a check after a write", ops)
				}
			}
			break
		}
		checks[string(op.Key)] = op.IfVersion
	}
	if len(checks) != 2 || checks["seen"] != 1 || checks["w"] != 0 {
		t.Errorf("checks %v, want seen@1 w@0", checks)
	}
	// Without the refused add, the ops give what the delivery saw.
	var keep []engines.KVOp
	for _, op := range ops {
		if string(op.Key) != "bad" {
			keep = append(keep, op)
		}
	}
	if _, err := store.Apply(context.Background(), keep...); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"seen": "11", "w": "9", "fresh": "x"} {
		if v, _ := store.value(k); v != want {
			t.Errorf("after commit %s=%q, want %q", k, v, want)
		}
	}
}
