package server_test

import (
	"context"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestSendDirectOpensAProducer: SendDirect opens only the target queue's
// engine, and as a producer, so an engine such as postgres skips its
// migrations and background loops for one message.
func TestSendDirectOpensAProducer(t *testing.T) {
	t.Parallel()
	var opened []server.EngineOptions
	mem := memory.New(memory.Options{})
	t.Cleanup(func() { _ = mem.Close() })
	reg := server.NewRegistry()
	reg.Register("memory", server.EngineType{Shared: true, Open: func(_ context.Context, o server.EngineOptions) (engines.Engine, error) {
		opened = append(opened, o)
		return unclosable{mem}, nil
	}})
	cfg := parse(t, `
engine "target" { type = "memory" }
engine "other"  { type = "memory" }
queue "q"     { engine = "target" }
queue "elsewhere" { engine = "other" }`)
	msgs := []engines.Message{{Body: []byte("one")}}
	if err := server.SendDirect(context.Background(), cfg, reg, "q", msgs, nil); err != nil {
		t.Fatal(err)
	}
	if len(opened) != 1 || opened[0].Name != "target" || !opened[0].Producer {
		t.Fatalf("SendDirect opened %+v; want only engine target, as a producer", opened)
	}
	q, err := mem.Open(context.Background(), engines.QueueSpec{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := q.Stats(context.Background()); err != nil || s.Ready != 1 {
		t.Fatalf("queue q after SendDirect: %+v, %v; want 1 ready", s, err)
	}
}
