package builtin_test

import (
	"context"
	"runtime"
	"slices"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines/builtin"
	"github.com/qrun-dev/qrun/engines/enginetype"
)

// TestCapabilitiesKnownAtValidate: every built-in engine's settings say
// what an engine opened with them offers (enginetype.Capable), and for each
// engine that opens without a server it is what the open engine says,
// MaxMessageSize aside (the settings may leave it to a default or to the
// kernel). postgres and redis need a server to open; each one's engine and
// settings share one function.
func TestCapabilitiesKnownAtValidate(t *testing.T) {
	t.Parallel()
	for _, typ := range builtin.Types() {
		t.Run(typ.Name, func(t *testing.T) {
			t.Parallel()
			src := ""
			switch typ.Name {
			case "postgres":
				src = `dsn = "host=/nonexistent"`
			case "redis":
				src = `url = "redis://127.0.0.1:1/0"`
			case "posixmq", "shm":
				src = `prefix = "qrun-caps-test-"`
			}
			f, diags := hclsyntax.ParseConfig([]byte(src), "e.hcl", hcl.InitialPos)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			s, diags := typ.Decode(f.Body, nil)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			c, ok := s.(enginetype.Capable)
			if !ok {
				t.Fatalf("%s settings do not implement enginetype.Capable", typ.Name)
			}
			want := c.Capabilities()
			if typ.Name == "postgres" || typ.Name == "redis" || typ.Name == "nats" || (len(typ.Platforms) > 0 && !slices.Contains(typ.Platforms, runtime.GOOS)) {
				return
			}
			e, err := s.Open(context.Background(), enginetype.OpenOptions{Name: "e", DataDir: t.TempDir(), Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			got := e.Capabilities()
			got.MaxMessageSize, want.MaxMessageSize = 0, 0
			if got != want {
				t.Fatalf("settings say %+v, the open engine %+v", want, got)
			}
		})
	}
}
