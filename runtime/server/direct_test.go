package server_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestSendDirectOpensAProducer: SendDirect opens only the target queue's
// engine, and as a producer, so an engine such as postgres skips its
// migrations and background loops for one message.
func TestSendDirectOpensAProducer(t *testing.T) {
	t.Parallel()
	var opened []enginetype.OpenOptions
	mem := memory.New(memory.Options{})
	t.Cleanup(func() { _ = mem.Close() })
	reg := server.NewRegistry(sharedType(enginetype.WithoutSettings("memory", func(_ context.Context, o enginetype.OpenOptions) (engines.Engine, error) {
		opened = append(opened, o)
		return unclosable{mem}, nil
	})))
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

// TestEngineEventsReachTheMetrics: an engine reports a reconnect and an
// error through the Events its type's Open was given, at start and when a
// reload adds it, and /metrics counts them per engine.
func TestEngineEventsReachTheMetrics(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	events := map[string]engines.Events{}
	reg := server.NewRegistry(enginetype.WithoutSettings("memory", func(_ context.Context, o enginetype.OpenOptions) (engines.Engine, error) {
		mu.Lock()
		events[o.Name] = o.Events
		mu.Unlock()
		return memory.New(memory.Options{}), nil
	}))
	cfg := parse(t, `
engine "a" { type = "memory" }
queue "qa" { engine = "a" }`)
	ln := listen(t)
	srv := start(t, cfg, server.Options{Listener: ln, Registry: reg})
	if err := os.WriteFile(cfg.Path, []byte(`
engine "a" { type = "memory" }
engine "b" { type = "memory" }
queue "qa" { engine = "a" }
queue "qb" { engine = "b" }`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, name := range []string{"a", "b"} {
		if events[name] == nil {
			t.Fatalf("engine %q was opened without Events", name)
		}
		events[name].Reconnected()
		events[name].Error("listen", errors.New("connection reset"))
	}
	mu.Unlock()
	mfs := scrape(t, "http://"+ln.Addr().String(), "")
	for _, name := range []string{"a", "b"} {
		if v := value(t, mfs, "qrun_engine_reconnects_total", map[string]string{"engine": name}); v != 1 {
			t.Errorf("engine %s: reconnects %v, want 1", name, v)
		}
		if v := value(t, mfs, "qrun_engine_errors_total", map[string]string{"engine": name, "op": "listen"}); v != 1 {
			t.Errorf("engine %s: listen errors %v, want 1", name, v)
		}
	}
}

// sharedType marks a test's engine type as shared between processes.
func sharedType(t enginetype.Type) enginetype.Type {
	t.Shared = true
	return t
}
