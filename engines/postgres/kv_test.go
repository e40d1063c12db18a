package postgres_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
)

// groupTxSettler is engines.GroupTxSettler, spelt out so this test does
// not depend on where the interface is declared.
type groupTxSettler interface {
	StartSettleTx(ctx context.Context, d *engines.Delivery, e *engines.Effects) (engines.Pending, error)
}

// TestStartSettleTxSharesOneGroup: settles started for a whole batch
// before any is waited for run as one group, in the order started: each
// delivery sees the writes of those before it, a stale check fails only
// its own delivery (ErrConflict, lease kept), and the rest commit.
func TestStartSettleTxSharesOneGroup(t *testing.T) {
	t.Parallel()
	e := newEngine(t, "", postgres.Options{Logger: zap.NewNop()})
	ctx := ctxT(t, 30*time.Second)
	q := open(t, e, engines.QueueSpec{Name: "src", VisibilityTimeout: time.Minute})
	out := open(t, e, engines.QueueSpec{Name: "out"})
	kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	msgs := make([]engines.Message, n)
	if err := q.Enqueue(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, q, n)
	if err != nil || len(ds) != n {
		t.Fatalf("Receive = %d, %v", len(ds), err)
	}
	g, ok := q.(groupTxSettler)
	if !ok {
		t.Fatal("postgres queue handle has no StartSettleTx")
	}
	ps := make([]engines.Pending, n)
	for i := range ds {
		ops := []engines.KVOp{{Kind: engines.KVIncr, Key: []byte("n"), Delta: 1}}
		if i == 3 {
			// Read "n" as absent: stale once the first three incremented it.
			ops = append(ops, engines.KVOp{Kind: engines.KVCheck, Key: []byte("n"), HasVersion: true})
		}
		eff := &engines.Effects{
			Publish: []engines.Publish{{Queue: "out", Message: engines.Message{Body: []byte(strconv.Itoa(i))}}},
			KV:      []engines.KVBatch{{Store: kv.Name(), Ops: ops}},
		}
		if ps[i], err = g.StartSettleTx(ctx, &ds[i], eff); err != nil {
			t.Fatalf("StartSettleTx %d: %v", i, err)
		}
	}
	for i, p := range ps {
		err := p.Wait(ctx)
		if i == 3 {
			if !errors.Is(err, engines.ErrConflict) {
				t.Fatalf("delivery 3 with a stale check: %v, want ErrConflict", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	ent, err := kv.Get(ctx, []byte("n"))
	if err != nil || string(ent.Value) != strconv.Itoa(n-1) {
		t.Fatalf("counter = %q, %v; want %d: every delivery but the conflicting one", ent.Value, err, n-1)
	}
	if st, err := out.Stats(ctx); err != nil || st.Depth() != n-1 {
		t.Fatalf("output queue %+v, %v; want %d messages", st, err, n-1)
	}
	// The conflicting delivery still holds its lease.
	if err := ds[3].Requeue(ctx, 0); err != nil {
		t.Fatalf("Requeue after the conflict: %v", err)
	}
	if st, err := q.Stats(ctx); err != nil || st.Ready != 1 || st.AckedTotal != n-1 {
		t.Fatalf("source %+v, %v; want one message back, %d acked", st, err, n-1)
	}
}
