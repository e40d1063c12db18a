package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// TestConfigSourceRedactsSecrets: GET /v1/config shows the file in effect
// with every literal secret (attribute or object key) replaced, and leaves
// env() calls and everything else as written.
func TestConfigSourceRedactsSecrets(t *testing.T) {
	t.Parallel()
	cfg := parse(t, fmt.Sprintf(`
runtime {
  admin_token = "tok-123"
}
engine "m" { type = "memory" }
queue "q" { engine = "m" }
consumer "c" {
  queue  = "q"
  plugin = %q
  config = { api_key = "key-456", "db_password" = "pw-789", region = "eu-1", from_env = env("HOME", "") }
  http {
    allow   = ["http://127.0.0.1:*"]
    headers = { Authorization = "Bearer hdr-000" }
  }
}`, testWasm(t, "ack")))
	ln := listen(t)
	start(t, cfg, server.Options{Listener: ln})
	c := &admin.Client{BaseURL: "http://" + ln.Addr().String(), Token: "tok-123"}
	got, err := c.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"tok-123", "key-456", "pw-789", "hdr-000"} {
		if strings.Contains(got.Source, secret) {
			t.Errorf("source shows %q:\n%s", secret, got.Source)
		}
	}
	for _, kept := range []string{`region = "eu-1"`, `env("HOME", "")`, `queue "q"`, `allow   = ["http://127.0.0.1:*"]`} {
		if !strings.Contains(got.Source, kept) {
			t.Errorf("source lost %q:\n%s", kept, got.Source)
		}
	}
	if got.Redacted != 4 || !strings.HasSuffix(got.Path, "qrun.hcl") {
		t.Errorf("redacted %d (want 4), path %q", got.Redacted, got.Path)
	}
}

// TestConfigSourceOfSpec: a configuration built in Go has no file to show.
func TestConfigSourceOfSpec(t *testing.T) {
	t.Parallel()
	cfg, err := (&config.Spec{
		Dir:     t.TempDir(),
		Engines: []config.EngineSpec{{Name: "m", Type: "memory"}},
		Queues:  []config.QueueSpec{{Name: "in", Engine: "m"}},
	}).Build(config.Options{Engines: server.Builtin()})
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, cfg, server.Options{})
	if _, err := srv.ConfigSource(context.Background()); !errors.Is(err, admin.ErrNoConfigFile) {
		t.Fatalf("got %v, want ErrNoConfigFile", err)
	}
}

// TestConsumerLatency: with metrics on (an admin listener), a consumer
// reports its handler latency summary once it has handled messages.
func TestConsumerLatency(t *testing.T) {
	t.Parallel()
	cfg := parse(t, fmt.Sprintf(`
engine "m" { type = "memory" }
queue "q" { engine = "m" }
consumer "c" {
  queue  = "q"
  plugin = %q
}`, testWasm(t, "ack")))
	ln := listen(t)
	srv := start(t, cfg, server.Options{Listener: ln})
	ctx := context.Background()
	sub := srv.Subscribe(0, server.EventDeliveryFinished)
	defer sub.Close()
	if err := srv.Enqueue(ctx, "q", []engines.Message{{Body: []byte("a")}, {Body: []byte("b")}, {Body: []byte("c")}}); err != nil {
		t.Fatal(err)
	}
	// A delivery's latency is recorded before it finishes.
	for range 3 {
		select {
		case <-sub.Events():
		case <-time.After(30 * time.Second):
			t.Fatal("3 deliveries did not finish")
		}
	}
	cs, err := srv.ConsumerInfos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := cs[0].Latency
	if l == nil || l.Count != 3 || l.P50MS <= 0 || l.P99MS < l.P50MS || l.MeanMS <= 0 {
		t.Fatalf("latency %+v", l)
	}
}
