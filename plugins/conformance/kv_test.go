package conformance_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// Key-value stores and per-message state (README.md, "Stores and state"):
// every module runs the same script against a real memory engine, once
// with the store immediate (each write applied as the guest makes it) and
// once transactional (writes held by the host and applied with the ack,
// reads seeing the delivery's own writes), the test playing the
// dispatcher: it leases each delivery from the engine and settles it with
// the verdict, through SettleTx when the result carries effects.

// kvMax is the store's max_value_size in these tests.
const kvMax = 1000

// kvStep is one delivery.
type kvStep struct {
	body    string // enqueued as a new message; ignored with again or redrive
	again   bool   // the previous message once more (it was nacked)
	redrive bool   // the previous message, redriven from the dead-letter queue
	park    bool   // settle a nack with an hour's delay, out of the next steps' way
	verdict engines.Verdict
	pub     []string // bodies published to "out", in order
	// txPub, if set, is what the transactional run publishes instead of
	// pub: kv_add is held there, so its failure shows only at commit.
	txPub []string
	// txSettle, if set, is the error SettleTx must return in the
	// transactional run (checked with errors.Is); the step then settles the
	// delivery with a nack parked an hour, as park does.
	txSettle error
	// check, if set, inspects the store after the delivery was settled;
	// before and after bracket the handler call and the settle (a
	// transactional write's TTL counts from its commit).
	check func(t *testing.T, kv engines.KV, before, after time.Time)
}

// ttlIs checks that key k expires ttl after the write, which happened
// between before and after.
func ttlIs(ttl time.Duration) func(*testing.T, engines.KV, time.Time, time.Time) {
	return func(t *testing.T, kv engines.KV, before, after time.Time) {
		t.Helper()
		e, err := kv.Get(context.Background(), []byte("k"))
		if err != nil {
			t.Fatalf("Get k: %v", err)
		}
		if e.Expires.Before(before.Add(ttl)) || e.Expires.After(after.Add(ttl)) {
			t.Errorf("k expires at %v, want %v after the write (between %v and %v)", e.Expires, ttl, before, after)
		}
	}
}

// valueIs checks what the store holds under k once the delivery settled.
func valueIs(want string) func(*testing.T, engines.KV, time.Time, time.Time) {
	return func(t *testing.T, kv engines.KV, _, _ time.Time) {
		t.Helper()
		e, err := kv.Get(context.Background(), []byte("k"))
		switch {
		case want == "" && errors.Is(err, engines.ErrNotFound):
		case err != nil:
			t.Errorf("Get k: %v, want %q", err, want)
		case string(e.Value) != want:
			t.Errorf("k = %q, want %q", e.Value, want)
		}
	}
}

var (
	ack  = engines.Ack
	nack = engines.Nack
)

// kvScript is the behaviour every module implements; each case runs on a
// fresh engine (so versions start at 1) and a fresh instance.
var kvScript = []struct {
	name  string
	steps []kvStep
}{
	{"get absent", []kvStep{{body: "kvget:k", verdict: ack, pub: []string{"<absent>"}}}},
	{"set get delete", []kvStep{
		{body: "kvset:hello", verdict: ack, pub: []string{"ok"}, check: valueIs("hello")},
		{body: "kvget:k", verdict: ack, pub: []string{"hello"}},
		{body: "kvdel", verdict: ack, pub: []string{"ok"}, check: valueIs("")},
		{body: "kvget:k", verdict: ack, pub: []string{"<absent>"}},
		{body: "kvdel", verdict: ack, pub: []string{"ok"}}, // absent: still 0
	}},
	{"long value", []kvStep{
		{body: "kvset:" + strings.Repeat("v", kvMax), verdict: ack, pub: []string{"ok"}},
		{body: "kvget:k", verdict: ack, pub: []string{strings.Repeat("v", kvMax)}},
	}},
	{"version", []kvStep{
		{body: "kvver", verdict: ack, pub: []string{"0"}},
		{body: "kvset:a", verdict: ack, pub: []string{"ok"}},
		{body: "kvver", verdict: ack, pub: []string{"1"}},
		{body: "kvset:b", verdict: ack, pub: []string{"ok"}},
		{body: "kvver", verdict: ack, pub: []string{"2"}},
	}},
	{"compare-and-set", []kvStep{
		{body: "kvcas:1", verdict: ack, pub: []string{"conflict"}, check: valueIs("")}, // absent is version 0
		{body: "kvcas:0", verdict: ack, pub: []string{"ok"}, check: valueIs("cas")},
		{body: "kvset:a", verdict: ack, pub: []string{"ok"}}, // version 2
		{body: "kvcas:1", verdict: ack, pub: []string{"conflict"}, check: valueIs("a")},
		{body: "kvcas:0", verdict: ack, pub: []string{"conflict"}},
		{body: "kvcas:2", verdict: ack, pub: []string{"ok"}, check: valueIs("cas")},
	}},
	{"incr", []kvStep{
		{body: "kvincr:5", verdict: ack, pub: []string{"5"}},
		{body: "kvincr:-2", verdict: ack, pub: []string{"3"}},
		{body: "kvget:k", verdict: ack, pub: []string{"3"}},
		{body: "kvincr:-10", verdict: ack, pub: []string{"-7"}, check: valueIs("-7")},
		{body: "kvset:abc", verdict: ack, pub: []string{"ok"}},
		{body: "kvincr:1", verdict: ack, pub: []string{"invalid"}, check: valueIs("abc")},
		{body: "kvset:9223372036854775807", verdict: ack, pub: []string{"ok"}},
		{body: "kvincr:1", verdict: ack, pub: []string{"invalid"}},
	}},
	{"add", []kvStep{
		{body: "kvadd:5", verdict: ack, pub: []string{"ok"}, check: valueIs("5")},
		{body: "kvadd:-7", verdict: ack, pub: []string{"ok"}, check: valueIs("-2")},
		// A read after an add sees the add applied.
		{body: "kvaddget:3", verdict: ack, pub: []string{"ok", "1"}, check: valueIs("1")},
		{body: "kvset:abc", verdict: ack, pub: []string{"ok"}},
		// Immediate: the add fails at once. Transactional: it is held, and
		// the commit fails, applying nothing of the delivery.
		{body: "kvadd:1", verdict: ack, pub: []string{"invalid"},
			txPub: []string{"ok"}, txSettle: engines.ErrInvalid, check: valueIs("abc")},
		// Transactional: the read applies the held add, and fails.
		{body: "kvaddget:1", verdict: ack, pub: []string{"invalid", "abc"},
			txPub: []string{"ok", "invalid"}, txSettle: engines.ErrInvalid, check: valueIs("abc")},
		{body: "kvset:9223372036854775807", verdict: ack, pub: []string{"ok"}},
		{body: "kvadd:1", verdict: ack, pub: []string{"invalid"},
			txPub: []string{"ok"}, txSettle: engines.ErrInvalid, check: valueIs("9223372036854775807")},
	}},
	{"ttl", []kvStep{
		{body: "kvttl:60000", verdict: ack, pub: []string{"ok"}, check: ttlIs(time.Minute)},
		{body: "kvget:k", verdict: ack, pub: []string{"t"}},
		{body: "kvttl:-5", verdict: ack, pub: []string{"invalid"}},
	}},
	{"read your writes", []kvStep{
		{body: "kvset:old", verdict: ack, pub: []string{"ok"}},
		{body: "kvrw:mine", verdict: ack, pub: []string{"mine"}, check: valueIs("mine")},
	}},
	{"store not granted", []kvStep{{body: "kvother", verdict: ack, pub: []string{"denied"}}}},
	{"bad keys", []kvStep{
		{body: "kvget:", verdict: ack, pub: []string{"invalid"}},
		{body: "kvget:" + strings.Repeat("k", engines.MaxKeySize+1), verdict: ack, pub: []string{"invalid"}},
		{body: "kvget:" + strings.Repeat("k", engines.MaxKeySize), verdict: ack, pub: []string{"<absent>"}},
	}},
	{"value too large", []kvStep{
		{body: "kvset:" + strings.Repeat("v", kvMax+1), verdict: ack, pub: []string{"toolarge"}, check: valueIs("")},
	}},
	{"state across a nack, gone once dead-lettered", []kvStep{
		{body: "state:step 2", verdict: nack, pub: []string{"<absent>", "ok"}},
		{again: true, verdict: nack, pub: []string{"step 2", "ok"}}, // max_attempts 2: dead-lettered
		{redrive: true, verdict: nack, pub: []string{"<absent>", "ok"}},
	}},
	{"state is per message", []kvStep{
		{body: "state:a", verdict: nack, pub: []string{"<absent>", "ok"}, park: true},
		{body: "state:b", verdict: nack, pub: []string{"<absent>", "ok"}},
	}},
}

// swapKV forwards to the current case's store, so that one loaded plugin
// serves every case while each case gets a fresh engine.
type swapKV struct {
	mu  sync.Mutex
	cur engines.KV
}

func (s *swapKV) get() engines.KV {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *swapKV) set(kv engines.KV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = kv
}

func (s *swapKV) Name() string { return s.get().Name() }
func (s *swapKV) Get(ctx context.Context, key []byte) (engines.KVEntry, error) {
	return s.get().Get(ctx, key)
}
func (s *swapKV) Apply(ctx context.Context, ops ...engines.KVOp) ([]engines.KVEntry, error) {
	return s.get().Apply(ctx, ops...)
}
func (s *swapKV) List(ctx context.Context, prefix, after []byte, limit int) ([]engines.KVEntry, error) {
	return s.get().List(ctx, prefix, after, limit)
}
func (s *swapKV) Close() error { return nil }

// kvEngine is one case's engine: queue "in" (max_attempts 2, dead letters
// to "in-dlq") and store "kv".
type kvEngine struct {
	q, dlq engines.Queue
	kv     engines.KV
	last   string // the body of the message last enqueued
}

func newKVEngine(t *testing.T) *kvEngine {
	t.Helper()
	ctx := context.Background()
	eng := memory.New(memory.Options{})
	t.Cleanup(func() { eng.Close() })
	q, err := eng.Open(ctx, engines.QueueSpec{Name: "in", VisibilityTimeout: time.Minute, MaxAttempts: 2, DeadLetter: "in-dlq"})
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := eng.Open(ctx, engines.QueueSpec{Name: "in-dlq"})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := eng.OpenKV(ctx, engines.KVSpec{Name: "kv", MaxValueSize: kvMax})
	if err != nil {
		t.Fatal(err)
	}
	return &kvEngine{q: q, dlq: dlq, kv: kv}
}

// receive leases the next message of "in". The engine has it ready: the
// deadline only turns a harness bug into a failure instead of a hang.
func (e *kvEngine) receive(t *testing.T) *engines.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	buf := make([]engines.Delivery, 1)
	if n, err := e.q.Receive(ctx, buf); err != nil || n != 1 {
		t.Fatalf("Receive: %d, %v", n, err)
	}
	return &buf[0]
}

// TestConformanceKV runs kvScript against every language's module.
func TestConformanceKV(t *testing.T) {
	for _, lang := range languages {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			wasm := readModule(t, lang)
			h := newHost(t, nil)
			for _, tx := range []bool{false, true} {
				t.Run(map[bool]string{false: "immediate", true: "transactional"}[tx], func(t *testing.T) {
					store := &swapKV{}
					s := spec(lang, wasm, baseConfig)
					s.KV = []plugin.KVStore{{Name: "kv", Store: store, MaxValueSize: kvMax, Tx: tx}}
					pub := &sink{}
					p, err := h.Load(context.Background(), s, pub)
					if err != nil {
						t.Fatalf("Load: %v", err)
					}
					for _, c := range kvScript {
						t.Run(c.name, func(t *testing.T) {
							e := newKVEngine(t)
							store.set(e.kv)
							in, err := p.NewInstance(context.Background())
							if err != nil {
								t.Fatalf("NewInstance: %v", err)
							}
							defer in.Close(context.Background())
							for i, st := range c.steps {
								runKVStep(t, i, e, in, pub, tx, st)
							}
						})
					}
				})
			}
		})
	}
}

// runKVStep runs step s; tx tells that the store is transactional, where
// s.txPub and s.txSettle, when set, replace what the immediate run expects.
func runKVStep(t *testing.T, i int, e *kvEngine, in *plugin.Instance, pub *sink, tx bool, s kvStep) {
	t.Helper()
	ctx := context.Background()
	switch {
	case s.redrive:
		if n, err := e.dlq.(engines.Redriver).Redrive(ctx, nil); err != nil || n != 1 {
			t.Fatalf("step %d: Redrive: %d, %v (the message was not dead-lettered)", i, n, err)
		}
	case !s.again:
		if err := e.q.Enqueue(ctx, engines.Message{Body: []byte(s.body)}); err != nil {
			t.Fatal(err)
		}
		e.last = s.body
	}
	name := fmt.Sprintf("step %d (%.40q)", i, e.last)
	d := e.receive(t)
	if string(d.Message.Body) != e.last {
		t.Fatalf("%s: leased %q", name, d.Message.Body)
	}
	before := time.Now()
	r := in.Handle(ctx, d, before)
	if r.Err != nil {
		t.Errorf("%s: unexpected failure: %v", name, r.Err)
	}
	if r.Verdict != s.verdict {
		t.Errorf("%s: verdict %v, want %v", name, r.Verdict, s.verdict)
	}
	wantPub, wantSettle := s.pub, error(nil)
	if tx && s.txPub != nil {
		wantPub = s.txPub
	}
	if tx {
		wantSettle = s.txSettle
	}
	// Settle as the dispatcher does: effects with the ack, in one go.
	var err error
	if r.Verdict == engines.Ack && !r.Effects.Empty() {
		err = d.SettleTx(ctx, r.Effects)
	} else {
		err = d.Settle(ctx, engines.Settlement{Verdict: r.Verdict, Delay: parkDelay(s.park)})
	}
	switch {
	case wantSettle == nil && err != nil:
		t.Fatalf("%s: settle: %v", name, err)
	case wantSettle != nil && !errors.Is(err, wantSettle):
		t.Fatalf("%s: settle: %v, want %v", name, err, wantSettle)
	case wantSettle != nil:
		// The commit failed and applied nothing; the delivery is still
		// leased, and the dispatcher counts a failure: a nack, parked out
		// of the next steps' way.
		if err := d.Settle(ctx, engines.Settlement{Verdict: engines.Nack, Delay: parkDelay(true)}); err != nil {
			t.Fatalf("%s: nack after the failed commit: %v", name, err)
		}
	}
	after := time.Now()
	got := pub.take()
	var bodies []string
	for _, p := range got {
		bodies = append(bodies, p.Body)
	}
	if strings.Join(bodies, "|") != strings.Join(wantPub, "|") || len(bodies) != len(wantPub) {
		t.Errorf("%s: published %q, want %q", name, shortAll(bodies), shortAll(wantPub))
	}
	if s.check != nil {
		s.check(t, e.kv, before, after)
	}
}

// parkDelay is the nack delay of a step: an hour when it is parked, out of
// the next steps' way, else none.
func parkDelay(park bool) time.Duration {
	if park {
		return time.Hour
	}
	return 0
}

// shortAll keeps failure output readable with long values.
func shortAll(bs []string) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		if len(b) > 40 {
			b = fmt.Sprintf("%s...(%d bytes)", b[:20], len(b))
		}
		out[i] = b
	}
	return out
}
