package dispatch_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// TestCommitConflictRequeues: a delivery whose effects fail their version
// check at commit is requeued without a failure counted, none of its
// effects applied; its next attempt commits. Effects of a nack are never
// committed.
func TestCommitConflictRequeues(t *testing.T) {
	ctx := context.Background()
	var (
		mu      sync.Mutex
		commits []error
	)
	var kv engines.KV
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result {
		if string(d.Body) == "nack" {
			return plugin.Result{Verdict: engines.Nack, Effects: &engines.Effects{KV: []engines.KVBatch{{Store: "s",
				Ops: []engines.KVOp{{Kind: engines.KVSet, Key: []byte("nacked"), Value: []byte("1")}}}}}}
		}
		// The first attempt read version 99 of x, which it never had.
		seen := uint64(1)
		if d.Attempt == 1 {
			seen = 99
		}
		return plugin.Result{Verdict: engines.Ack, Effects: &engines.Effects{
			Publish: []engines.Publish{{Queue: "q-dlq", Message: engines.Message{Body: []byte("published")}}},
			KV: []engines.KVBatch{{Store: "s", Ops: []engines.KVOp{
				{Kind: engines.KVCheck, Key: []byte("x"), IfVersion: seen, HasVersion: true},
				{Kind: engines.KVIncr, Key: []byte("x"), Delta: 1},
			}}},
		}}
	}, func(c *dispatch.Config) {
		c.Concurrency = 1
		c.OnCommit = func(_ *engines.Effects, err error) {
			mu.Lock()
			commits = append(commits, err)
			mu.Unlock()
		}
	})
	var err error
	if kv, err = fx.eng.OpenKV(ctx, engines.KVSpec{Name: "s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Apply(ctx, engines.KVOp{Kind: engines.KVSet, Key: []byte("x"), Value: []byte("10")}); err != nil {
		t.Fatal(err)
	}
	if err := fx.q.Enqueue(ctx, engines.Message{Body: []byte("go")}, engines.Message{Body: []byte("nack")}); err != nil {
		t.Fatal(err)
	}
	fx.c.Start()
	got := map[string][]engines.Verdict{}
	for len(got["go"]) < 2 || len(got["nack"]) < 1 {
		select {
		case s := <-fx.settled:
			got[s.body] = append(got[s.body], s.verdict)
		case <-time.After(30 * time.Second):
			t.Fatalf("settled so far: %v", got)
		}
	}
	if v := got["go"]; v[0] != engines.Requeue || v[1] != engines.Ack {
		t.Errorf("verdicts %v, want requeue (conflict) then ack", v)
	}
	st := fx.c.Stats()
	if st.Conflicts != 1 || st.Acked != 1 {
		t.Errorf("stats %+v, want one conflict and one ack", st)
	}
	e, err := kv.Get(ctx, []byte("x"))
	if err != nil || string(e.Value) != "11" {
		t.Errorf("x = %q (%v), want 11: incremented once", e.Value, err)
	}
	if _, err := kv.Get(ctx, []byte("nacked")); !errors.Is(err, engines.ErrNotFound) {
		t.Errorf("a nacked delivery's write was applied: %v", err)
	}
	dst, _ := fx.dlq.Stats(ctx)
	if dst.Depth() != 1 {
		t.Errorf("published %d messages, want 1", dst.Depth())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(commits) != 2 || !errors.Is(commits[0], engines.ErrConflict) || commits[1] != nil {
		t.Errorf("commits %v, want a conflict then success", commits)
	}
}

// groupTxQueue is a memory queue whose transactional settles are started
// and decided when waited for, as an engine that checks versions in its
// commit does: the first commit it sees conflicts.
type groupTxQueue struct {
	engines.Queue
	mu      sync.Mutex
	started int
}

type pendingFunc func(context.Context) error

func (p pendingFunc) Wait(ctx context.Context) error { return p(ctx) }

func (g *groupTxQueue) StartSettleTx(_ context.Context, d *engines.Delivery, e *engines.Effects) (engines.Pending, error) {
	g.mu.Lock()
	g.started++
	first := g.started == 1
	g.mu.Unlock()
	return pendingFunc(func(ctx context.Context) error {
		if first {
			return engines.ErrConflict
		}
		return d.SettleTx(ctx, e)
	}), nil
}

// TestGroupCommitConflictRequeues: on a GroupTxSettler the commit is
// started when the handler returns and its outcome taken when the batch
// is flushed; a conflict found then requeues the delivery like one found
// at once.
func TestGroupCommitConflictRequeues(t *testing.T) {
	ctx := context.Background()
	var gq *groupTxQueue
	fx := newFixtureOn(t, func(d *engines.Delivery) plugin.Result {
		return plugin.Result{Verdict: engines.Ack, Effects: &engines.Effects{KV: []engines.KVBatch{{Store: "s",
			Ops: []engines.KVOp{{Kind: engines.KVIncr, Key: []byte("x"), Delta: 1}}}}}}
	}, func(c *dispatch.Config) { c.Concurrency = 1 }, func(q engines.Queue) engines.Queue {
		gq = &groupTxQueue{Queue: q}
		return gq
	})
	kv, err := fx.eng.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.q.Enqueue(ctx, engines.Message{Body: []byte("a")}, engines.Message{Body: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	fx.c.Start()
	acks := 0
	for acks < 2 {
		if s := fx.next(t); s.verdict == engines.Ack {
			acks++
		}
	}
	if st := fx.c.Stats(); st.Conflicts != 1 || st.Requeued != 1 || st.Nacked != 0 {
		t.Errorf("stats %+v, want one conflict requeued and no failure", st)
	}
	if e, err := kv.Get(ctx, []byte("x")); err != nil || string(e.Value) != "2" {
		t.Errorf("x = %q (%v), want 2", e.Value, err)
	}
	gq.mu.Lock()
	defer gq.mu.Unlock()
	if gq.started != 3 {
		t.Errorf("%d commits started, want 3", gq.started)
	}
}

// TestCommitRefusedFails: effects the store refuses at commit (an add to
// a value that is not a decimal integer, a sum longer than the store's
// value limit) fail the delivery as a trap does: nacked with the reason
// and a failure counted, dead-lettered once its attempts run out, nothing
// of it applied.
func TestCommitRefusedFails(t *testing.T) {
	for _, c := range []struct {
		name, value string
		maxValue    int
	}{
		{"not a number", "abc", 0},
		{"sum too large", "99", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testCommitRefused(t, c.value, c.maxValue)
		})
	}
}

func testCommitRefused(t *testing.T, value string, maxValue int) {
	ctx := context.Background()
	fx := newFixture(t, func(d *engines.Delivery) plugin.Result {
		return plugin.Result{Verdict: engines.Ack, Effects: &engines.Effects{
			Publish: []engines.Publish{{Queue: "q-dlq", Message: engines.Message{Body: []byte("published")}}},
			KV: []engines.KVBatch{{Store: "s", Ops: []engines.KVOp{
				{Kind: engines.KVSet, Key: []byte("y"), Value: []byte("1")},
				{Kind: engines.KVIncr, Key: []byte("x"), Delta: 1},
			}}},
		}}
	}, func(c *dispatch.Config) { c.Concurrency = 1 })
	kv, err := fx.eng.OpenKV(ctx, engines.KVSpec{Name: "s", MaxValueSize: maxValue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Apply(ctx, engines.KVOp{Kind: engines.KVSet, Key: []byte("x"), Value: []byte(value)}); err != nil {
		t.Fatal(err)
	}
	if err := fx.q.Enqueue(ctx, engines.Message{Body: []byte("go")}); err != nil {
		t.Fatal(err)
	}
	fx.c.Start()
	var got []engines.Verdict
	for len(got) < 3 { // max_attempts 3
		got = append(got, fx.next(t).verdict)
	}
	for i, v := range got {
		if v != engines.Nack {
			t.Errorf("attempt %d: verdict %v, want nack", i+1, v)
		}
	}
	st := fx.c.Stats()
	if st.Nacked != 3 || st.Acked != 0 || st.Conflicts != 0 {
		t.Errorf("stats %+v, want three nacks", st)
	}
	if _, err := kv.Get(ctx, []byte("y")); !errors.Is(err, engines.ErrNotFound) {
		t.Errorf("a refused commit's write was applied: %v", err)
	}
	if e, err := kv.Get(ctx, []byte("x")); err != nil || string(e.Value) != value {
		t.Errorf("x = %q (%v), want %q", e.Value, err, value)
	}
	dst, err := fx.dlq.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The dead letter is the message itself, not the refused publish.
	if dst.Depth() != 1 {
		t.Errorf("dead-letter queue holds %d messages, want the message alone", dst.Depth())
	}
	ds, err := fx.dlq.(engines.Peeker).Peek(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || string(ds[0].Body) != "go" || !strings.Contains(ds[0].Attributes[engines.AttrDeadLetterReason], "effects refused at commit") {
		t.Errorf("dead letters %+v, want the message with the commit's reason", ds)
	}
}
