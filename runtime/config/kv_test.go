package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
)

// kvEngines knows "memory", which holds key-value stores, and "mq", which
// does not.
type kvEngines struct{}

func (kvEngines) EngineTypes() []string { return []string{"memory", "mq"} }

func (kvEngines) DecodeEngine(typ string, body hcl.Body, _ *hcl.EvalContext) (EngineFacts, hcl.Diagnostics) {
	_, diags := body.Content(&hcl.BodySchema{})
	return EngineFacts{Capabilities: &engines.Capabilities{KV: typ == "memory", Transactions: typ == "memory"}}, diags
}

func parseKV(t *testing.T, src string) (*File, hcl.Diagnostics) {
	t.Helper()
	fx := newFixture(t, nil)
	fx.opts.Engines = kvEngines{}
	return Parse(filepath.Join(fx.dir, "qrun.hcl"), []byte(`engine "local" { type = "memory" }
engine "mq" { type = "mq" }
queue "a" { engine = "local" }
`+src), fx.opts)
}

func TestKVBlocks(t *testing.T) {
	t.Parallel()
	f, diags := parseKV(t, `kv "counts" {
  engine         = "local"
  max_value_size = "4KiB"
}
kv "plain" { engine = "local" }
consumer "c" {
  queue  = "a"
  plugin = "h.wasm"
  kv     = ["counts", "plain"]
}
`)
	if diags.HasErrors() {
		t.Fatal(render(t, f, diags))
	}
	if len(f.KV) != 2 || f.KV[0].Name != "counts" || f.KV[0].Engine != "local" || f.KV[0].MaxValueSize != 4096 ||
		f.KV[1].MaxValueSize != engines.DefaultMaxValueSize {
		t.Errorf("stores = %+v", f.KV)
	}
	c, _ := f.Consumer("c")
	if fmt.Sprint(c.KV) != "[counts plain]" || len(c.KVStores) != 2 || c.KVStores[0].MaxValueSize != 4096 {
		t.Errorf("grants = %v, resolved %+v", c.KV, c.KVStores)
	}
}

// TestKVBrokenFiles: every mistake in a kv block or grant is an error at
// the attribute or label that makes it (file:line:col).
func TestKVBrokenFiles(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, src string
		summary   string
		line, col int // in src
	}{
		{"unknown engine", "kv \"s\" {\n  engine = \"locl\"\n}\n", "Unknown engine", 2, 12},
		{"engine without kv", "kv \"s\" {\n  engine = \"mq\"\n}\n", "Engine holds no key-value stores", 2, 12},
		{"missing engine", "kv \"s\" {\n}\n", "Missing required argument", 1, 1},
		{"bad name", "kv \"s s\" { engine = \"local\" }\n", "Invalid name", 1, 4},
		{"duplicate", "kv \"s\" { engine = \"local\" }\nkv \"s\" { engine = \"local\" }\n", "Duplicate kv store", 2, 4},
		{"value size zero", "kv \"s\" {\n  engine = \"local\"\n  max_value_size = 0\n}\n", "Invalid max value size", 3, 20},
		{"value size huge", "kv \"s\" {\n  engine = \"local\"\n  max_value_size = \"1GiB\"\n}\n", "Invalid max value size", 3, 20},
		{"unknown store in grant", "kv \"counts\" { engine = \"local\" }\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"h.wasm\"\n  kv = [\"counts\",\n    \"cunts\"]\n}\n", "Unknown key-value store", 6, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, diags := parseKV(t, tc.src)
			var got []string
			for _, d := range diags {
				if d.Severity == hcl.DiagError && d.Subject != nil {
					got = append(got, fmt.Sprintf("%s@%d:%d", d.Summary, d.Subject.Start.Line-3, d.Subject.Start.Column))
				}
			}
			want := fmt.Sprintf("[%s@%d:%d]", tc.summary, tc.line, tc.col)
			if fmt.Sprint(got) != want {
				t.Errorf("got %v, want %s\n%s", got, want, render(t, f, diags))
			}
		})
	}
}

// TestSpecBuildKV: a Go Spec declares stores and grants them as HCL does.
func TestSpecBuildKV(t *testing.T) {
	t.Parallel()
	s := Spec{
		Dir:       t.TempDir(),
		Engines:   []EngineSpec{{Name: "m", Type: "memory"}},
		Queues:    []QueueSpec{{Name: "q", Engine: "m"}},
		Consumers: []ConsumerSpec{{Name: "c", Queue: "q", PluginWasm: tinyWasm, KV: []string{"counts"}}},
		KV:        []KVSpec{{Name: "counts", Engine: "m", MaxValueSize: 512}},
	}
	f, err := s.Build(Options{Engines: kvEngines{}})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.KV) != 1 || f.KV[0].MaxValueSize != 512 || len(f.Consumers[0].KVStores) != 1 {
		t.Fatalf("stores %+v, grants %+v", f.KV, f.Consumers[0].KVStores)
	}
	s.Consumers[0].KV = []string{"nope"}
	if _, err := s.Build(Options{Engines: kvEngines{}}); err == nil || !strings.Contains(err.Error(), "Unknown key-value store") {
		t.Fatalf("Build = %v, want the unknown store refused", err)
	}
}
