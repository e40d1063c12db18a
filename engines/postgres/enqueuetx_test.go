package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// A message enqueued in the caller's transaction exists only if that
// transaction commits: a rolled-back one never appears, a committed one
// wakes a receiver that was already waiting and carries the caller's
// other writes with it.
func TestEnqueueTx(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{})
	q := open(t, e, engines.QueueSpec{Name: "orders"})
	ctx := ctxT(t, time.Minute)
	txq, ok := q.(postgres.TxEnqueuer)
	if !ok {
		t.Fatalf("%T is not a postgres.TxEnqueuer", q)
	}
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	table := pgx.Identifier{schema, "app_orders"}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (id int)"); err != nil {
		t.Fatal(err)
	}

	// Rolled back: neither the row nor the message.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := txq.EnqueueTx(ctx, tx, engines.Message{Body: []byte("rolled back")}); err != nil {
		t.Fatalf("EnqueueTx: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	expectEmpty(t, q, "after the rollback")

	// Committed: a receiver waiting before the commit gets it.
	got := make(chan []engines.Delivery, 1)
	go func() {
		ds, err := engines.ReceiveN(ctx, q, 10)
		if err != nil {
			t.Errorf("Receive: %v", err)
		}
		got <- ds
	}()
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	msgs := []engines.Message{{Body: []byte("order 2")}}
	if err := txq.EnqueueTx(ctx, tx, msgs...); err != nil {
		t.Fatalf("EnqueueTx: %v", err)
	}
	if msgs[0].ID == "" {
		t.Fatal("no ID written back")
	}
	select {
	case ds := <-got:
		t.Fatalf("received %d messages before the commit", len(ds))
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ds := <-got
	if len(ds) != 1 || string(ds[0].Body) != "order 2" || ds[0].ID != msgs[0].ID {
		t.Fatalf("received %d messages (%v), want the committed one", len(ds), ds)
	}
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 1 {
		t.Fatalf("app rows = %d (%v), want the committed one", n, err)
	}
	expectEmpty(t, q, "after the committed message")
}
