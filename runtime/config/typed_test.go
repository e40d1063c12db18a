package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var tinyWasm = []byte("\x00asm\x01\x00\x00\x00")

// A Spec with only what differs from the defaults builds to the File the
// same HCL would decode to, with the plugin carried as bytes and the
// admin API off.
func TestSpecBuildDefaults(t *testing.T) {
	dir := t.TempDir()
	var checked []byte
	s := Spec{
		Dir:     dir,
		Engines: []EngineSpec{{Name: "m", Type: "memory"}},
		Queues: []QueueSpec{
			{Name: "in", Engine: "m", DeadLetter: "dead", MaxAttempts: 3},
			{Name: "dead", Engine: "m", MaxAttempts: Unlimited},
		},
		Consumers: []ConsumerSpec{{Name: "c", Queue: "in", PluginWasm: tinyWasm, Config: map[string]string{"k": "v"}, LogRate: NoGuestLogs}},
		Runtime:   RuntimeSpec{DrainTimeout: NoDrain},
	}
	f, err := s.Build(Options{Engines: fakeEngines{}, CheckPlugin: func(_ *File, c *Consumer) error {
		checked = c.PluginWasm
		return nil
	}})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if string(checked) != string(tinyWasm) {
		t.Fatal("CheckPlugin did not see the plugin's bytes")
	}
	c := f.Consumers[0]
	if string(c.PluginWasm) != string(tinyWasm) || c.Plugin != "" || c.Concurrency != DefaultConcurrency ||
		c.Timeout != DefaultTimeout || c.MemoryLimit != DefaultMemoryLimit || c.Config["k"] != "v" || c.LogRate != 0 {
		t.Fatalf("consumer %+v", c)
	}
	if f.Runtime.AdminListen != "" || f.Runtime.DrainTimeout != 0 || f.Runtime.DataDir != filepath.Join(dir, "data") {
		t.Fatalf("runtime %+v", f.Runtime)
	}
	if q := f.Queues[0]; q.MaxAttempts != 3 || q.DeadLetter != "dead" || q.Retry.Initial != DefaultRetryInitial || q.VisibilityTimeout != DefaultVisibilityTimeout {
		t.Fatalf("queue %+v", q)
	}
	if f.Queues[1].MaxAttempts != 0 {
		t.Fatalf("Unlimited max attempts = %d, want 0", f.Queues[1].MaxAttempts)
	}
	if f.Path != "" {
		t.Fatalf("Path = %q, want none (a reload has no file)", f.Path)
	}
}

// A Spec is checked by the same code as HCL: each invalid Spec fails with
// the problem the equivalent file reports, naming its block.
func TestSpecBuildValidatesLikeHCL(t *testing.T) {
	plugin := filepath.Join(t.TempDir(), "p.wasm")
	for _, tc := range []struct {
		name string
		spec Spec
		hcl  string // the same configuration as a file, "" if none
		want string
	}{{
		name: "unknown engine",
		spec: Spec{Queues: []QueueSpec{{Name: "q", Engine: "nope"}}},
		hcl:  `queue "q" { engine = "nope" }`,
		want: `queue "q": Unknown engine`,
	}, {
		name: "bad concurrency",
		spec: Spec{Engines: []EngineSpec{{Name: "m", Type: "memory"}}, Queues: []QueueSpec{{Name: "q", Engine: "m"}},
			Consumers: []ConsumerSpec{{Name: "c", Queue: "q", PluginWasm: tinyWasm, Concurrency: -2}}},
		want: `consumer "c": Invalid concurrency: concurrency must be at least 1, not -2.`,
	}, {
		name: "dead-letter cycle",
		spec: Spec{Engines: []EngineSpec{{Name: "m", Type: "memory"}}, Queues: []QueueSpec{
			{Name: "a", Engine: "m", DeadLetter: "b"}, {Name: "b", Engine: "m", DeadLetter: "a"}}},
		hcl: `engine "m" { type = "memory" }
queue "a" {
  engine = "m"
  dead_letter = "b"
}
queue "b" {
  engine = "m"
  dead_letter = "a"
}`,
		want: "cycle",
	}, {
		name: "missing plugin file",
		spec: Spec{Engines: []EngineSpec{{Name: "m", Type: "memory"}}, Queues: []QueueSpec{{Name: "q", Engine: "m"}},
			Consumers: []ConsumerSpec{{Name: "c", Queue: "q", Plugin: plugin}}},
		want: `consumer "c": Plugin not found`,
	}, {
		name: "no plugin",
		spec: Spec{Engines: []EngineSpec{{Name: "m", Type: "memory"}}, Queues: []QueueSpec{{Name: "q", Engine: "m"}},
			Consumers: []ConsumerSpec{{Name: "c", Queue: "q"}}},
		want: `consumer "c": Missing required argument: The argument "plugin" is required`,
	}, {
		name: "both plugins",
		spec: Spec{Consumers: []ConsumerSpec{{Name: "c", Queue: "q", Plugin: plugin, PluginWasm: tinyWasm}}},
		want: `consumer "c": give Plugin (a file) or PluginWasm (the module's bytes), not both`,
	}, {
		name: "bad duration setting type",
		spec: Spec{Engines: []EngineSpec{{Name: "m", Type: "memory", Settings: map[string]any{"x": struct{}{}}}}},
		want: `engine "m": setting "x": unsupported type struct {}`,
	}, {
		name: "bad name",
		spec: Spec{Engines: []EngineSpec{{Name: "m", Type: "memory"}}, Queues: []QueueSpec{{Name: "no/slash", Engine: "m"}}},
		want: `Invalid name`,
	}, {
		name: "timeout",
		spec: Spec{Engines: []EngineSpec{{Name: "m", Type: "memory"}}, Queues: []QueueSpec{{Name: "q", Engine: "m", Retry: RetrySpec{Initial: time.Minute, Max: time.Second}}}},
		want: `queue "q": `,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.spec.Build(Options{Engines: fakeEngines{}})
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Build = %v, want a *config.Error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error:\n%v\nwant it to contain %q", err, tc.want)
			}
			if tc.hcl == "" {
				return
			}
			_, diags := Parse("x.hcl", []byte(tc.hcl), Options{Engines: fakeEngines{}})
			for _, d := range diags {
				if !strings.Contains(err.Error(), d.Summary+": "+d.Detail) {
					t.Errorf("HCL reports %q: %s, which the Spec's error lacks", d.Summary, d.Detail)
				}
			}
		})
	}
}

// The http and wasi grants of a Spec reach the File as HCL's would, and
// are checked the same way.
func TestSpecBuildGrants(t *testing.T) {
	host := t.TempDir()
	s := Spec{
		Dir:     t.TempDir(),
		Engines: []EngineSpec{{Name: "m", Type: "memory"}},
		Queues:  []QueueSpec{{Name: "q", Engine: "m"}},
		Consumers: []ConsumerSpec{{Name: "c", Queue: "q", PluginWasm: tinyWasm,
			HTTP: &HTTPSpec{Allow: []string{"https://api.example.com"}, MaxRequests: 3, Headers: map[string]string{"X-Token": "t"}},
			WASI: WASISpec{Env: map[string]string{"A": "1"}, Dirs: []DirSpec{{Guest: "/data", Host: host, ReadWrite: true}}},
		}},
	}
	f, err := s.Build(Options{Engines: fakeEngines{}})
	if err != nil {
		t.Fatal(err)
	}
	c := f.Consumers[0]
	if len(c.HTTP.Allow) != 1 || c.HTTP.MaxRequests != 3 || c.HTTP.Headers["X-Token"] != "t" {
		t.Fatalf("http %+v", c.HTTP)
	}
	if c.WASI.Env["A"] != "1" || len(c.WASI.Dirs) != 1 || c.WASI.Dirs[0] != (Dir{Guest: "/data", Host: host, ReadWrite: true}) {
		t.Fatalf("wasi %+v", c.WASI)
	}
	s.Consumers[0].WASI.Dirs[0].Guest = "data"
	s.Consumers[0].HTTP.Allow = []string{"ftp://x"}
	_, err = s.Build(Options{Engines: fakeEngines{}})
	if err == nil || !strings.Contains(err.Error(), `consumer "c": Invalid guest path`) || !strings.Contains(err.Error(), `consumer "c": Invalid allowed host`) {
		t.Fatalf("Build = %v, want both grant errors naming the consumer", err)
	}
}
