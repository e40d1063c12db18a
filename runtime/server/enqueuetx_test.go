package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/server"
)

// Server.EnqueueTx: what is enqueued in a rolled-back transaction is never
// delivered; what is enqueued in a committed one is, once. A queue on an
// engine without transactions says so.
func TestServerEnqueueTx(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pgEngine := postgresEngine(t, "pg")
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
%s
engine "m" { type = "memory" }
queue "orders" { engine = "pg" }
queue "mem" { engine = "m" }
consumer "c" {
  queue  = "orders"
  plugin = %q
}`, pgEngine, ackWasm(t)))
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sub := srv.Subscribe(0, server.EventDeliveryFinished)
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	conn, err := pgx.Connect(ctx, pg.srv.DSN) // the server postgresEngine started
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	for _, commit := range []bool{false, true} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msgs := []engines.Message{{ID: fmt.Sprint("committed-", commit)}}
		if err := srv.EnqueueTx(ctx, tx, "orders", msgs); err != nil {
			t.Fatalf("EnqueueTx: %v", err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The rolled-back message was enqueued first; had it survived, it
	// would be delivered first.
	if ev := <-sub.Events(); ev.MessageID != "committed-true" {
		t.Fatalf("delivered %q, want only the committed message", ev.MessageID)
	}
	qs, err := srv.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Depth != 0 {
			t.Fatalf("queue %s depth %d after the committed message was acked", q.Name, q.Depth)
		}
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := srv.EnqueueTx(ctx, tx, "mem", []engines.Message{{}}); !errors.Is(err, engines.ErrUnsupported) {
		t.Fatalf("EnqueueTx on a memory queue = %v, want ErrUnsupported", err)
	}
}
