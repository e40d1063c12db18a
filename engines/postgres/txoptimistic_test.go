package postgres_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// TestSettleTxLeaseLostUnderOptimisticGroup: a group of unordered
// deliveries commits without locking its leases first; when one of its
// leases was lost in the database meanwhile (here: re-leased under another
// token, which the engine cannot know), the group is rolled back and run
// again, locking first: the lost delivery gets ErrLeaseLost and nothing
// of it happens, the others commit everything, and the publishes' IDs
// are those of the rows committed.
func TestSettleTxLeaseLostUnderOptimisticGroup(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	ctx := ctxT(t, time.Minute)
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{Logger: zap.NewNop()})
	q := open(t, e, engines.QueueSpec{Name: "src", VisibilityTimeout: time.Minute})
	out := open(t, e, engines.QueueSpec{Name: "out"})
	kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	conn, qs := schemaConn(ctx, t, s, schema)

	const n = 4
	settle := func(ds []engines.Delivery) []error {
		g, ok := q.(groupTxSettler)
		if !ok {
			t.Fatal("postgres queue handle has no StartSettleTx")
		}
		effs := make([]*engines.Effects, len(ds))
		ps := make([]engines.Pending, len(ds))
		for i := range ds {
			effs[i] = &engines.Effects{
				Publish: []engines.Publish{{Queue: "out", Message: engines.Message{Body: []byte(ds[i].ID)}}},
				KV:      []engines.KVBatch{{Store: kv.Name(), Ops: []engines.KVOp{{Kind: engines.KVIncr, Key: []byte("n"), Delta: 1}}}},
			}
			if ps[i], err = g.StartSettleTx(ctx, &ds[i], effs[i]); err != nil {
				t.Fatalf("StartSettleTx %d: %v", i, err)
			}
		}
		errs := make([]error, len(ds))
		for i, p := range ps {
			errs[i] = p.Wait(ctx)
			if errs[i] == nil {
				// The ID the publish reports is the committed row's.
				var body string
				err := conn.QueryRow(ctx, `SELECT convert_from(body, 'UTF8') FROM `+qs+`.messages WHERE seq = $1::bigint`,
					effs[i].Publish[0].Message.ID).Scan(&body)
				if err != nil || body != ds[i].ID {
					t.Errorf("delivery %d: published ID %q holds %q, %v; want its body %q", i, effs[i].Publish[0].Message.ID, body, err, ds[i].ID)
				}
			}
		}
		return errs
	}

	// All leases held: one transaction, no retry.
	if err := q.Enqueue(ctx, make([]engines.Message, 2*n)...); err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, q, n)
	if err != nil || len(ds) != n {
		t.Fatalf("Receive = %d, %v", len(ds), err)
	}
	for i, err := range settle(ds) {
		if err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if r := postgres.TxRetries(e); r != 0 {
		t.Fatalf("%d retries of a group whose leases were all held", r)
	}

	// Delivery 2's lease moves to another holder behind the engine's back.
	ds, err = engines.ReceiveN(ctx, q, n)
	if err != nil || len(ds) != n {
		t.Fatalf("Receive = %d, %v", len(ds), err)
	}
	if tag, err := conn.Exec(ctx, `UPDATE `+qs+`.messages SET lease_token = lease_token + 1 WHERE seq = $1::bigint`, ds[2].ID); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("re-lease: %v, %v", tag, err)
	}
	for i, err := range settle(ds) {
		if i == 2 {
			if !errors.Is(err, engines.ErrLeaseLost) {
				t.Fatalf("delivery with the lost lease: %v, want ErrLeaseLost", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if r := postgres.TxRetries(e); r != 1 {
		t.Fatalf("%d retries, want 1", r)
	}
	ent, err := kv.Get(ctx, []byte("n"))
	if err != nil || string(ent.Value) != strconv.Itoa(2*n-1) {
		t.Fatalf("counter = %q, %v; want %d", ent.Value, err, 2*n-1)
	}
	if st, err := out.Stats(ctx); err != nil || st.Depth() != 2*n-1 {
		t.Fatalf("output queue %+v, %v; want %d messages", st, err, 2*n-1)
	}
	if st, err := q.Stats(ctx); err != nil || st.AckedTotal != 2*n-1 || st.InFlight != 1 {
		t.Fatalf("source %+v, %v; want %d acked and the re-leased one still leased", st, err, 2*n-1)
	}
}
