package server_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// A program embedding qrun brings its own logger and Prometheus registry
// with the admin API off: nothing listens, qrun's metrics (and only
// qrun's: the Go and process collectors are the program's) land on the
// registry, the logs on the logger, and stopping unregisters the metrics
// so another server can use the same registry.
func TestOwnLoggerAndRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := ackConfig(t, "")
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	srv, err := server.New(ctx, cfg, server.Options{Logger: zap.New(core), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	sub := srv.Subscribe(0, server.EventDeliveryFinished)
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if a := srv.AdminAddr(); a != "" {
		t.Fatalf("admin API listening on %s with admin_listen off", a)
	}
	if err := srv.Enqueue(ctx, "in", []engines.Message{{ID: "a"}}); err != nil {
		t.Fatal(err)
	}
	<-sub.Events()

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	acked := -1.0
	for _, mf := range mfs {
		switch name := mf.GetName(); {
		case name == "qrun_consumer_deliveries_total":
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "verdict" && l.GetValue() == "ack" {
						acked = m.GetCounter().GetValue()
					}
				}
			}
		case name == "go_goroutines" || name == "process_cpu_seconds_total":
			t.Errorf("qrun registered %s on the program's registry", name)
		}
	}
	if acked != 1 {
		t.Fatalf("qrun_consumer_deliveries_total{verdict=ack} = %v, want 1", acked)
	}
	if logs.FilterMessage("qrun running").Len() != 1 {
		t.Fatalf("no \"qrun running\" line on the given logger; got %d lines", logs.Len())
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	mfs, err = reg.Gather()
	if err != nil {
		t.Fatalf("gather after Stop: %v", err)
	}
	if len(mfs) != 0 {
		t.Fatalf("%d metric families left on the registry after Stop", len(mfs))
	}
	again, err := server.New(ctx, cfg, server.Options{Registerer: reg})
	if err != nil {
		t.Fatalf("a second server on the same registry: %v", err)
	}
	// And while one is registered, a second is refused clearly.
	if _, err := server.New(ctx, cfg, server.Options{Registerer: reg}); err == nil {
		t.Fatal("two servers registered on one registry")
	}
	if err := again.Stop(ctx); err != nil {
		t.Fatalf("stopping the second server: %v", err)
	}
}

// A server built from a config.Spec runs a plugin given as bytes, and a
// Reload, having no file to re-read, says so instead of failing obscurely.
func TestSpecServerRunsBytesAndRefusesReload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	wasm, err := os.ReadFile(ackWasm(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := (&config.Spec{
		Dir:       t.TempDir(),
		Engines:   []config.EngineSpec{{Name: "m", Type: "memory"}},
		Queues:    []config.QueueSpec{{Name: "in", Engine: "m"}},
		Consumers: []config.ConsumerSpec{{Name: "c", Queue: "in", PluginWasm: wasm}},
	}).Build(config.Options{Engines: server.Builtin()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sub := srv.Subscribe(0, server.EventDeliveryFinished)
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(ctx) })
	if err := srv.Enqueue(ctx, "in", []engines.Message{{ID: "b"}}); err != nil {
		t.Fatal(err)
	}
	if ev := <-sub.Events(); ev.MessageID != "b" || ev.Verdict != engines.Ack {
		t.Fatalf("event %+v", ev)
	}
	if _, err := srv.Reload(ctx); err == nil || !strings.Contains(err.Error(), "built in Go") {
		t.Fatalf("Reload = %v, want it to say the config has no file", err)
	}
}
