package server_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

func ackWasm(tb testing.TB) string {
	tb.Helper()
	p, err := filepath.Abs("../../plugins/examples/wat/ack/ack.wasm")
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// ackConfig is the smallest running setup, with the admin API off: a
// memory queue "in" consumed by "c" through the ack plugin; consumerExtra
// goes into the consumer block as it stands.
func ackConfig(tb testing.TB, consumerExtra string) *config.File {
	tb.Helper()
	return parse(tb, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" { engine = "m" }
consumer "c" {
  queue  = "in"
  plugin = %q
  %s
}`, ackWasm(tb), consumerExtra))
}

// idleServer is a server, not started, with one memory queue "in" and no
// consumer: the lifecycle without any delivery.
func idleServer(tb testing.TB) *server.Server {
	tb.Helper()
	cfg := parse(tb, `
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" { engine = "m" }`)
	srv, err := server.New(context.Background(), cfg, server.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return srv
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Start returns with the consumers running and Started closed; Stop
// drains and closes, after which Done is closed and the server refuses to
// start again.
func TestStartStopDone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := ackConfig(t, "")
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if closed(srv.Started()) || srv.Ready() {
		t.Fatal("started before Start")
	}
	sub := srv.Subscribe(0, server.EventDeliveryFinished)
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !closed(srv.Started()) || !srv.Ready() || closed(srv.Done()) {
		t.Fatalf("after Start: started %v, ready %v, done %v", closed(srv.Started()), srv.Ready(), closed(srv.Done()))
	}
	if err := srv.Start(ctx); !errors.Is(err, server.ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	if err := srv.Enqueue(ctx, "in", []engines.Message{{ID: "a"}}); err != nil {
		t.Fatal(err)
	}
	if ev := <-sub.Events(); ev.MessageID != "a" || ev.Verdict != engines.Ack {
		t.Fatalf("event %+v, want message a acked", ev)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !closed(srv.Done()) || srv.Ready() || srv.Err() != nil {
		t.Fatalf("after Stop: done %v, ready %v, err %v", closed(srv.Done()), srv.Ready(), srv.Err())
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := srv.Start(ctx); !errors.Is(err, server.ErrStopped) {
		t.Fatalf("Start after Stop = %v, want ErrStopped", err)
	}
	if _, err := srv.Queue("in"); err != nil { // the lookup still answers
		t.Fatal(err)
	}
}

// A server that was never started is closed by Stop.
func TestStopBeforeStart(t *testing.T) {
	t.Parallel()
	srv := idleServer(t)
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !closed(srv.Done()) {
		t.Fatal("Done not closed")
	}
	if err := srv.Start(context.Background()); !errors.Is(err, server.ErrStopped) {
		t.Fatalf("Start after Stop = %v, want ErrStopped", err)
	}
}

// Stop's ctx bounds the drain: with a handler that never returns and an
// hour of drain_timeout, a Stop whose ctx has ended still ends the server
// (the running call is stopped and its delivery released), and says that
// its ctx ended or the drain was cut short.
func TestStopBoundedByContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := parse(t, fmt.Sprintf(`
runtime {
  admin_listen  = "off"
  drain_timeout = "1h"
}
engine "m" { type = "memory" }
queue "in" {
  engine = "m"
  visibility_timeout = "3h"
}
consumer "c" {
  queue   = "in"
  plugin  = %q
  timeout = "1h"
}`, testWasm(t, "runaway")))
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sub := srv.Subscribe(0, server.EventDeliveryStarted)
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Enqueue(ctx, "in", []engines.Message{{ID: "loop", Body: []byte("t")}}); err != nil {
		t.Fatal(err)
	}
	if ev := <-sub.Events(); ev.MessageID != "loop" {
		t.Fatalf("started %+v", ev)
	}
	stopCtx, cancel := context.WithCancel(ctx)
	cancel()
	if err := srv.Stop(stopCtx); err == nil {
		t.Fatal("Stop with an ended ctx and a handler still running returned nil")
	}
	<-srv.Done() // would wait the hour without the bound
}

// Run keeps its contract on top of Start and Stop: it blocks until ctx
// ends and returns nil after the drain.
func TestRunUntilCancelled(t *testing.T) {
	t.Parallel()
	srv := idleServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx) }()
	<-srv.Started()
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !closed(srv.Done()) {
		t.Fatal("Done not closed after Run returned")
	}
}

// Events name the consumer, queue, message and attempt; finished events
// carry the verdict. The dispatcher never waits for a subscriber: a full
// buffer drops events and counts them.
func TestSubscribeEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := ackConfig(t, "concurrency = 1")
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	full := srv.Subscribe(1, server.EventDeliveryFinished) // never read until the end
	all := srv.Subscribe(100)
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 10
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i].ID = fmt.Sprint("m", i)
	}
	if err := srv.Enqueue(ctx, "in", msgs); err != nil {
		t.Fatal(err)
	}
	started := map[string]bool{}
	for finished := 0; finished < n; {
		ev := <-all.Events()
		if ev.Consumer != "c" || ev.Queue != "in" || ev.Attempt != 1 {
			t.Fatalf("event %+v: want consumer c, queue in, attempt 1", ev)
		}
		switch ev.Kind {
		case server.EventDeliveryStarted:
			started[ev.MessageID] = true
		case server.EventDeliveryFinished:
			if !started[ev.MessageID] || ev.Verdict != engines.Ack || ev.Latency <= 0 {
				t.Fatalf("finished %+v: want started before, acked, with a latency", ev)
			}
			finished++
		default:
			t.Fatalf("event of kind %v", ev.Kind)
		}
	}
	// full's one slot holds the first finished event; the rest were dropped.
	if ev := <-full.Events(); ev.Kind != server.EventDeliveryFinished {
		t.Fatalf("finished-only subscription got %v", ev.Kind)
	}
	if d := full.Dropped(); d != n-1 {
		t.Fatalf("Dropped = %d, want %d", d, n-1)
	}
	if all.Dropped() != 0 {
		t.Fatalf("the reading subscription dropped %d", all.Dropped())
	}
	full.Close()
	if err := srv.Enqueue(ctx, "in", []engines.Message{{ID: "after"}}); err != nil {
		t.Fatal(err)
	}
	for ev := range all.Events() {
		if ev.MessageID == "after" && ev.Kind == server.EventDeliveryFinished {
			break
		}
	}
	if d := full.Dropped(); d != n-1 {
		t.Fatalf("a closed subscription still counts events: Dropped = %d", d)
	}
}
