package server_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// ackWasmBytes is a complete handler that acknowledges every message,
// compiled with wat2wasm from:
//
//	(module
//	  (memory (export "memory") 1)
//	  (func (export "qrun_abi_v1"))
//	  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
//	  (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 0)))
//
// A real program would go:embed its .wasm file.
var ackWasmBytes = []byte("\x00\x61\x73\x6d\x01\x00\x00\x00\x01\x0f\x03\x60\x00\x00\x60\x01\x7f\x01\x7f\x60\x02\x7f\x7f\x01\x7f\x03\x04\x03\x00\x01\x02\x05\x03\x01\x00\x01\x07\x33\x04\x06\x6d\x65\x6d\x6f\x72\x79\x02\x00\x0b\x71\x72\x75\x6e\x5f\x61\x62\x69\x5f\x76\x31\x00\x00\x0a\x71\x72\x75\x6e\x5f\x61\x6c\x6c\x6f\x63\x00\x01\x0b\x71\x72\x75\x6e\x5f\x68\x61\x6e\x64\x6c\x65\x00\x02\x0a\x0f\x03\x02\x00\x0b\x05\x00\x41\x80\x08\x0b\x04\x00\x41\x00\x0b")

// exampleSpec is the configuration most examples run: one in-memory queue
// and a consumer whose plugin is given as bytes. Dir keeps the data
// directory out of the working directory.
func exampleSpec(dir string) *config.Spec {
	return &config.Spec{
		Dir:     dir,
		Engines: []config.EngineSpec{{Name: "mem", Type: "memory"}},
		Queues:  []config.QueueSpec{{Name: "orders", Engine: "mem", MaxAttempts: 3}},
		Consumers: []config.ConsumerSpec{{
			Name: "ship", Queue: "orders", PluginWasm: ackWasmBytes, Concurrency: 1,
		}},
	}
}

// A configuration written in Go, with the plugin given as bytes: Build
// checks it as `qrun validate` checks a file.
func ExampleNew_typedConfig() {
	dir, _ := os.MkdirTemp("", "qrun-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	cfg, err := exampleSpec(dir).Build(config.Options{Engines: server.Builtin()})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Stop(ctx)
	fmt.Println(cfg.Consumers[0].Name, "runs", len(cfg.Consumers[0].PluginWasm), "bytes of wasm")

	// The same checks as HCL: a consumer on an undeclared queue.
	bad := exampleSpec(dir)
	bad.Consumers[0].Queue = "ordres"
	_, err = bad.Build(config.Options{Engines: server.Builtin()})
	fmt.Println(err)
	// Output:
	// ship runs 106 bytes of wasm
	// config: consumer "ship": Unknown queue: Consumer "ship" reads queue "ordres", which is not declared. Did you mean "orders"?
}

// The HCL route, as `qrun run` takes it; relative paths resolve against
// the file's directory.
func ExampleNew_hcl() {
	dir, _ := os.MkdirTemp("", "qrun-example-")
	defer os.RemoveAll(dir)
	ack, _ := filepath.Abs("../../plugins/examples/wat/ack/ack.wasm")
	src := fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "mem" { type = "memory" }
queue "orders" { engine = "mem" }
consumer "ship" {
  queue  = "orders"
  plugin = %q
}`, ack)
	cfg, diags := config.Parse(filepath.Join(dir, "qrun.hcl"), []byte(src), config.Options{Engines: server.Builtin()})
	if diags.HasErrors() {
		_ = config.WriteDiagnostics(os.Stderr, cfg, diags, false)
		os.Exit(1)
	}
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Stop(ctx)
	fmt.Println(len(cfg.Queues), "queue,", len(cfg.Consumers), "consumer")
	// Output: 1 queue, 1 consumer
}

// Start returns once the consumers run; Stop drains within its ctx (and
// the config's drain_timeout); Done closes when everything is closed.
func ExampleServer_Start() {
	dir, _ := os.MkdirTemp("", "qrun-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	cfg, err := exampleSpec(dir).Build(config.Options{Engines: server.Builtin()})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	<-srv.Started() // closed already: Start returned
	fmt.Println("ready:", srv.Ready())

	if err := srv.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	<-srv.Done()
	fmt.Println("ready:", srv.Ready())
	// Output:
	// ready: true
	// ready: false
}

// Enqueue from Go, and wait for the handler's verdict through the events.
func ExampleServer_Enqueue() {
	dir, _ := os.MkdirTemp("", "qrun-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	cfg, err := exampleSpec(dir).Build(config.Options{Engines: server.Builtin()})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		log.Fatal(err)
	}
	sub := srv.Subscribe(0, server.EventDeliveryFinished)
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer srv.Stop(ctx)

	err = srv.Enqueue(ctx, "orders", []engines.Message{
		{ID: "order-1", Body: []byte(`{"sku":"tea"}`), Attributes: map[string]string{"region": "eu"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	ev := <-sub.Events()
	fmt.Println(ev.MessageID, ev.Verdict)
	// Output: order-1 ack
}

// Delivery events: every delivery starts and then finishes with a
// verdict. A subscription never slows the dispatcher: a full buffer drops
// events and counts them in Dropped.
func ExampleServer_Subscribe() {
	dir, _ := os.MkdirTemp("", "qrun-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	cfg, err := exampleSpec(dir).Build(config.Options{Engines: server.Builtin()})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		log.Fatal(err)
	}
	sub := srv.Subscribe(100) // both kinds
	defer sub.Close()
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer srv.Stop(ctx)

	if err := srv.Enqueue(ctx, "orders", []engines.Message{{ID: "a"}, {ID: "b"}}); err != nil {
		log.Fatal(err)
	}
	for range 4 {
		ev := <-sub.Events()
		fmt.Println(ev.Kind, ev.Consumer, ev.Queue, ev.MessageID, "attempt", ev.Attempt)
	}
	fmt.Println("dropped:", sub.Dropped())
	// Output:
	// delivery_started ship orders a attempt 1
	// delivery_finished ship orders a attempt 1
	// delivery_started ship orders b attempt 1
	// delivery_finished ship orders b attempt 1
	// dropped: 0
}

// A program brings its own zap logger and Prometheus registry; with the
// admin API off (a Spec's default) nothing listens.
func ExampleOptions_ownLoggerAndRegistry() {
	dir, _ := os.MkdirTemp("", "qrun-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	cfg, err := exampleSpec(dir).Build(config.Options{Engines: server.Builtin()})
	if err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := server.New(ctx, cfg, server.Options{Logger: zap.NewNop(), Registerer: reg})
	if err != nil {
		log.Fatal(err)
	}
	sub := srv.Subscribe(0, server.EventDeliveryFinished)
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer srv.Stop(ctx)
	if err := srv.Enqueue(ctx, "orders", []engines.Message{{ID: "x"}}); err != nil {
		log.Fatal(err)
	}
	<-sub.Events()

	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "qrun_queue_acked_total" {
			fmt.Println(mf.GetName(), mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	fmt.Printf("admin API: %q\n", srv.AdminAddr())
	// Output:
	// qrun_queue_acked_total 1
	// admin API: ""
}

// Enqueue inside the program's own PostgreSQL transaction: the message
// exists only if the order row does. (It needs a database, so it is only
// compiled here; TestServerEnqueueTx runs the same against a real one.)
func ExampleServer_EnqueueTx() {
	ctx := context.Background()
	var srv *server.Server // running, with queue "orders" on a postgres engine
	conn, err := pgx.Connect(ctx, os.Getenv("QRUN_PG_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, sku) VALUES ($1, $2)`, 42, "tea"); err != nil {
			return err
		}
		return srv.EnqueueTx(ctx, tx, "orders", []engines.Message{{ID: "order-42", Body: []byte(`{"id":42}`)}})
	})
	if err != nil {
		log.Fatal(err)
	}
}
