package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// fakeEngines knows "memory" (no settings) and "fake" (a required dsn
// string), enough to show engine bodies are validated with their ranges.
type fakeEngines struct{}

func (fakeEngines) EngineTypes() []string { return []string{"memory", "fake"} }

func (f fakeEngines) DecodeEngine(typ string, body hcl.Body, ctx *hcl.EvalContext) (EngineFacts, hcl.Diagnostics) {
	return EngineFacts{}, f.validate(typ, body, ctx)
}

func (fakeEngines) validate(typ string, body hcl.Body, ctx *hcl.EvalContext) hcl.Diagnostics {
	switch typ {
	case "memory":
		_, diags := body.Content(&hcl.BodySchema{})
		return diags
	case "fake":
		content, diags := body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "dsn", Required: true}}})
		if a := content.Attributes["dsn"]; a != nil {
			v, vd := a.Expr.Value(ctx)
			diags = append(diags, vd...)
			if !vd.HasErrors() {
				if _, err := convert.Convert(v, cty.String); err != nil || v.IsNull() {
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid dsn", Subject: a.Expr.Range().Ptr()})
				}
			}
		}
		return diags
	}
	panic("DecodeEngine called with unknown type " + typ)
}

// fixture is a directory holding a config file name and plugin files: a
// valid one, a directory in its place, and one CheckPlugin rejects.
type fixture struct {
	dir  string
	opts Options
}

func newFixture(t *testing.T, env map[string]string) fixture {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"h.wasm", "bad.wasm"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("\x00asm"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "dir.wasm"), 0o755); err != nil {
		t.Fatal(err)
	}
	return fixture{dir: dir, opts: Options{
		Engines: fakeEngines{},
		CheckPlugin: func(_ *File, c *Consumer) error {
			if filepath.Base(c.Plugin) == "bad.wasm" {
				return errors.New("bad.wasm: not a WebAssembly module")
			}
			return nil
		},
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	}}
}

func (fx fixture) parse(src string) (*File, hcl.Diagnostics) {
	return Parse(filepath.Join(fx.dir, "qrun.hcl"), []byte(src), fx.opts)
}

const fullConfig = `
runtime {
  data_dir      = "state"
  admin_listen  = "0.0.0.0:9000"
  admin_token   = env("QRUN_TOKEN", "")
  log_level     = "debug"
  log_format    = "json"
  drain_timeout = "1m"
  cache_dir     = "/var/cache/qrun"
}

engine "local" { type = "memory" }
engine "pg" {
  type = "fake"
  dsn  = env("QRUN_PG_DSN")
}

queue "orders" {
  engine             = "local"
  visibility_timeout = "45s"
  max_attempts       = 0
  dead_letter        = "orders_dead"
  ordered            = true
  retry {
    initial    = "250ms"
    max        = "10m"
    multiplier = 1.5
    jitter     = 0
  }
}
queue "orders_dead" { engine = "local" }
queue "audit" { engine = "pg" }

consumer "orders" {
  queue        = "orders"
  plugin       = "h.wasm"
  concurrency  = 8
  timeout      = "2s"
  memory_limit = "32MiB"
  batch        = 16
  config       = { greeting = "hello", retries = 3, big = 10000000000, ratio = 0.5, loud = true, from_env = env("QRUN_TOKEN") }
  publish      = ["audit", "orders_dead"]
  log_rate     = 0
  max_call_depth = 500
  isolation    = "per_message"
}
consumer "minimal" {
  queue  = "audit"
  plugin = "h.wasm"
}
`

func TestParseFull(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, map[string]string{"QRUN_TOKEN": "s3cret", "QRUN_PG_DSN": "postgres://x"})
	f, diags := fx.parse(fullConfig)
	if len(diags) > 0 {
		t.Fatalf("unexpected diagnostics:\n%s", render(t, f, diags))
	}
	if f.Dir != fx.dir || f.Path != filepath.Join(fx.dir, "qrun.hcl") {
		t.Errorf("Path/Dir = %q/%q", f.Path, f.Dir)
	}
	wantRT := Runtime{
		DataDir:      filepath.Join(fx.dir, "state"),
		AdminListen:  "0.0.0.0:9000",
		AdminToken:   "s3cret",
		LogLevel:     "debug",
		LogFormat:    "json",
		DrainTimeout: time.Minute,
		CacheDir:     "/var/cache/qrun",
	}
	if f.Runtime != wantRT {
		t.Errorf("Runtime = %+v, want %+v", f.Runtime, wantRT)
	}

	if len(f.Engines) != 2 {
		t.Fatalf("Engines = %+v", f.Engines)
	}
	pg, ok := f.Engine("pg")
	if !ok || pg.Type != "fake" || pg.Range.Start.Line != 13 || pg.Body == nil {
		t.Errorf("engine pg = %+v", pg)
	}
	// The engine body keeps its own settings for the engine to decode later.
	attrs, _ := pg.Body.JustAttributes()
	if v, _ := attrs["dsn"].Expr.Value(f.EvalContext()); v.AsString() != "postgres://x" {
		t.Errorf("pg dsn = %#v", v)
	}
	if _, ok := f.Engine("nope"); ok {
		t.Error("Engine(nope) found")
	}

	orders, ok := f.Queue("orders")
	wantQ := Queue{
		Name: "orders", Engine: "local", VisibilityTimeout: 45 * time.Second, MaxAttempts: 0,
		DeadLetter: "orders_dead", Ordered: true,
		Retry: Retry{Initial: 250 * time.Millisecond, Max: 10 * time.Minute, Multiplier: 1.5, Jitter: 0},
		Range: orders.Range,
	}
	if !ok || *orders != wantQ || orders.Range.Start.Line != 18 {
		t.Errorf("queue orders = %+v, want %+v", orders, wantQ)
	}
	dead, _ := f.Queue("orders_dead")
	wantDead := Queue{
		Name: "orders_dead", Engine: "local", VisibilityTimeout: 30 * time.Second, MaxAttempts: 5,
		Retry: Retry{Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2},
		Range: dead.Range,
	}
	if *dead != wantDead {
		t.Errorf("queue orders_dead = %+v, want %+v", dead, wantDead)
	}

	c, _ := f.Consumer("orders")
	wantC := Consumer{
		Name: "orders", Queue: "orders", Plugin: filepath.Join(fx.dir, "h.wasm"), PluginRange: c.PluginRange,
		Concurrency: 8, Timeout: 2 * time.Second, MemoryLimit: 32 << 20, Batch: 16,
		Config: map[string]string{
			"greeting": "hello", "retries": "3", "big": "10000000000", "ratio": "0.5", "loud": "true", "from_env": "s3cret",
		},
		Publish: []string{"audit", "orders_dead"}, LogRate: 0, MaxCallDepth: 500, Isolation: "per_message", Range: c.Range,
	}
	if !reflect.DeepEqual(*c, wantC) {
		t.Errorf("consumer orders = %+v\nwant %+v", *c, wantC)
	}
	if c.PluginRange.Start.Line != 36 || c.Range.Start.Line != 34 {
		t.Errorf("consumer ranges: plugin %v, block %v", c.PluginRange, c.Range)
	}
	m, _ := f.Consumer("minimal")
	wantM := Consumer{
		Name: "minimal", Queue: "audit", Plugin: filepath.Join(fx.dir, "h.wasm"), PluginRange: m.PluginRange,
		Concurrency: 4, Timeout: 5 * time.Second, MemoryLimit: 64 << 20, Batch: 64,
		Config: map[string]string{}, LogRate: 100, MaxCallDepth: 10000, Isolation: "instance", Range: m.Range,
	}
	if !reflect.DeepEqual(*m, wantM) {
		t.Errorf("consumer minimal = %+v\nwant %+v", *m, wantM)
	}
}

func TestRuntimeDefaults(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	f, diags := fx.parse(``)
	if diags.HasErrors() {
		t.Fatal(render(t, f, diags))
	}
	want := Runtime{
		DataDir:      filepath.Join(fx.dir, "data"),
		AdminListen:  "127.0.0.1:8787",
		LogLevel:     "info",
		LogFormat:    "auto",
		DrainTimeout: 30 * time.Second,
		CacheDir:     filepath.Join(fx.dir, "data", "cache"),
	}
	if f.Runtime != want {
		t.Errorf("Runtime = %+v, want %+v", f.Runtime, want)
	}
}

func TestAdminOff(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	for _, v := range []string{`"off"`, `""`} {
		f, diags := fx.parse("runtime {\n admin_listen = " + v + "\n}\n")
		if diags.HasErrors() || f.Runtime.AdminListen != "" {
			t.Errorf("admin_listen = %s: AdminListen %q, diags %v", v, f.Runtime.AdminListen, diags)
		}
	}
}

func TestMemoryLimitRoundsUpToPages(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	for src, want := range map[string]uint64{
		`"100000"`: 2 * WasmPageSize,
		`100000`:   2 * WasmPageSize,
		`"64KiB"`:  WasmPageSize,
		`"4GiB"`:   4 << 30,
		`"1.5MiB"`: 3 << 19,
		`"64MB"`:   977 * WasmPageSize, // 64e6 bytes is 976.56 pages
	} {
		f, diags := fx.parse(`engine "e" { type = "memory" }
queue "q" { engine = "e" }
consumer "c" {
  queue = "q"
  plugin = "h.wasm"
  memory_limit = ` + src + `
}`)
		if len(diags) > 0 {
			t.Errorf("%s: %s", src, render(t, f, diags))
			continue
		}
		if got := f.Consumers[0].MemoryLimit; got != want {
			t.Errorf("memory_limit = %s: got %d, want %d", src, got, want)
		}
	}
}

// brokenBase declares what most broken files reference, so each case only
// adds its fault.
const brokenBase = `engine "local" { type = "memory" }
engine "pg" {
  type = "fake"
  dsn  = "x"
}
`

type want struct {
	summary string
	line    int
}

func (w want) String() string { return fmt.Sprintf("%s@%d", w.summary, w.line) }

func TestBrokenFiles(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		src  string // appended to brokenBase unless raw
		raw  bool
		want []want // lines count from the case's own src, brokenBase excluded
	}{
		{name: "syntax error", raw: true, src: "queue \"a\" {\n  engine = \"local\"\n", want: []want{{"Unclosed configuration block", 1}}},
		{name: "syntax error in expression", raw: true, src: "queue \"a\" {\n  engine = \n}\n", want: []want{{"Invalid expression", 2}}},
		{name: "unknown attribute", src: "queue \"a\" {\n  engine = \"local\"\n  engin = \"x\"\n}\n", want: []want{{"Unsupported argument", 3}}},
		{name: "unknown top-level block", src: "topic \"a\" {}\n", want: []want{{"Unsupported block type", 1}}},
		{name: "unknown nested block", src: "queue \"a\" {\n  engine = \"local\"\n  backoff {}\n}\n", want: []want{{"Unsupported block type", 3}}},
		{name: "missing block label", src: "queue {\n  engine = \"local\"\n}\n", want: []want{{"Missing name for queue", 1}}},
		{name: "missing required attribute", src: "queue \"a\" {\n}\n", want: []want{{"Missing required argument", 1}}},
		{name: "null required attribute", src: "queue \"a\" {\n  engine = null\n}\n", want: []want{{"Missing required argument", 2}}},
		{name: "empty engine type", src: "engine \"x\" {\n  type = \"\"\n}\n", want: []want{{"Missing required argument", 2}}},
		{name: "invalid name", src: "queue \"a b\" { engine = \"local\" }\n", want: []want{{"Invalid name", 1}}},
		{name: "duplicate runtime block", src: "runtime {}\n\nruntime {}\n", want: []want{{"Duplicate runtime block", 3}}},
		{name: "duplicate engine", src: "engine \"local\" { type = \"memory\" }\n", want: []want{{"Duplicate engine", 1}}},
		{name: "duplicate queue", src: "queue \"a\" { engine = \"local\" }\nqueue \"a\" { engine = \"local\" }\n", want: []want{{"Duplicate queue", 2}}},
		{name: "duplicate consumer", src: "queue \"a\" { engine = \"local\" }\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"h.wasm\"\n}\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"h.wasm\"\n}\n", want: []want{{"Duplicate consumer", 6}}},
		{name: "unknown engine type", src: "engine \"x\" {\n  type = \"memroy\"\n}\n", want: []want{{"Unknown engine type", 2}}},
		{name: "engine body missing setting", src: "engine \"x\" {\n  type = \"fake\"\n}\n", want: []want{{"Missing required argument", 1}}},
		{name: "engine body unknown setting", src: "engine \"x\" {\n  type = \"memory\"\n  dsn = \"y\"\n}\n", want: []want{{"Unsupported argument", 3}}},
		{name: "engine body env missing", src: "engine \"x\" {\n  type = \"fake\"\n  dsn = env(\"NOPE\")\n}\n", want: []want{{"Missing environment variable", 3}}},
		{name: "undeclared engine", src: "queue \"a\" {\n  engine = \"disk\"\n}\n", want: []want{{"Unknown engine", 2}}},
		{name: "undeclared dead letter", src: "queue \"a\" {\n  engine = \"local\"\n  dead_letter = \"a_dead\"\n}\n", want: []want{{"Unknown queue", 3}}},
		{name: "dead letter on other engine", src: "queue \"a\" {\n  engine = \"local\"\n  dead_letter = \"d\"\n}\nqueue \"d\" { engine = \"pg\" }\n", want: []want{{"Dead-letter queue on a different engine", 3}}},
		{name: "dead letter self reference", src: "queue \"a\" {\n  engine = \"local\"\n  dead_letter = \"a\"\n}\n", want: []want{{"Queue is its own dead-letter queue", 3}}},
		{name: "dead letter cycle", src: "queue \"z\" {\n  engine = \"local\"\n  dead_letter = \"a\"\n}\nqueue \"a\" {\n  engine = \"local\"\n  dead_letter = \"b\"\n}\nqueue \"b\" {\n  engine = \"local\"\n  dead_letter = \"a\"\n}\n", want: []want{{"Dead-letter cycle", 7}}},
		{name: "consumer undeclared queue", src: "consumer \"c\" {\n  queue = \"nope\"\n  plugin = \"h.wasm\"\n}\n", want: []want{{"Unknown queue", 2}}},
		{name: "publish undeclared queue", src: "queue \"a\" { engine = \"local\" }\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"h.wasm\"\n  publish = [\"a\",\n    \"audit\"]\n}\n", want: []want{{"Unknown queue", 6}}},
		{name: "plugin missing", src: "queue \"a\" { engine = \"local\" }\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"missing.wasm\"\n}\n", want: []want{{"Plugin not found", 4}}},
		{name: "plugin is a directory", src: "queue \"a\" { engine = \"local\" }\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"dir.wasm\"\n}\n", want: []want{{"Plugin is not a file", 4}}},
		{name: "plugin rejected by CheckPlugin", src: "queue \"a\" { engine = \"local\" }\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"bad.wasm\"\n}\n", want: []want{{"Invalid plugin", 4}}},
		{name: "concurrency zero", src: consumerWith("concurrency = 0"), want: []want{{"Invalid concurrency", 5}}},
		{name: "batch zero", src: consumerWith("batch = 0"), want: []want{{"Invalid batch", 5}}},
		{name: "timeout zero", src: consumerWith(`timeout = "0s"`), want: []want{{"Invalid timeout", 5}}},
		{name: "log rate negative", src: consumerWith("log_rate = -1"), want: []want{{"Invalid log rate", 5}}},
		{name: "call depth zero", src: consumerWith("max_call_depth = 0"), want: []want{{"Invalid call depth", 5}}},
		{name: "call depth huge", src: consumerWith("max_call_depth = 2000000"), want: []want{{"Invalid call depth", 5}}},
		{name: "bad isolation", src: consumerWith(`isolation = "process"`), want: []want{{"Invalid isolation", 5}}},
		{name: "memory limit too small", src: consumerWith(`memory_limit = "1KiB"`), want: []want{{"Invalid memory limit", 5}}},
		{name: "memory limit too large", src: consumerWith(`memory_limit = "8GiB"`), want: []want{{"Invalid memory limit", 5}}},
		{name: "bad size", src: consumerWith(`memory_limit = "32XB"`), want: []want{{"Invalid size", 5}}},
		{name: "config list value", src: consumerWith("config = {\n    ok = \"x\"\n    bad = [1]\n  }"), want: []want{{"Invalid config value", 7}}},
		{name: "config not a map", src: consumerWith(`config = env("X", "y")`), want: []want{{"Invalid config", 5}}},
		{name: "wrong value type", src: consumerWith(`concurrency = "four"`), want: []want{{"Incorrect attribute value type", 5}}},
		{name: "negative visibility timeout", src: queueWith(`visibility_timeout = "-1s"`), want: []want{{"Invalid visibility timeout", 3}}},
		{name: "negative max attempts", src: queueWith("max_attempts = -1"), want: []want{{"Invalid max attempts", 3}}},
		{name: "bad duration", src: queueWith(`visibility_timeout = "30x"`), want: []want{{"Invalid duration", 3}}},
		{name: "duration as number", src: queueWith(`visibility_timeout = 30`), want: []want{{"Invalid duration", 3}}},
		{name: "retry multiplier below one", src: queueWith("retry {\n    multiplier = 0.5\n  }"), want: []want{{"Invalid retry multiplier", 4}}},
		{name: "retry jitter above one", src: queueWith("retry {\n    jitter = 1.5\n  }"), want: []want{{"Invalid retry jitter", 4}}},
		{name: "retry initial above max", src: queueWith("retry {\n    initial = \"1m\"\n    max = \"10s\"\n  }"), want: []want{{"Retry initial exceeds max", 5}}},
		{name: "retry initial zero", src: queueWith("retry {\n    initial = \"0s\"\n  }"), want: []want{{"Invalid retry delay", 4}}},
		{name: "duplicate retry block", src: queueWith("retry {}\n  retry {}"), want: []want{{"Duplicate retry block", 4}}},
		{name: "bad log level", src: "runtime {\n  log_level = \"verbose\"\n}\n", want: []want{{"Invalid log level", 2}}},
		{name: "bad log format", src: "runtime {\n  log_format = \"xml\"\n}\n", want: []want{{"Invalid log format", 2}}},
		{name: "admin listen not host:port", src: "runtime {\n  admin_listen = \"localhost\"\n}\n", want: []want{{"Invalid admin address", 2}}},
		{name: "admin listen bad port", src: "runtime {\n  admin_listen = \"127.0.0.1:http\"\n}\n", want: []want{{"Invalid admin address", 2}}},
		{name: "negative drain timeout", src: "runtime {\n  drain_timeout = \"-5s\"\n}\n", want: []want{{"Invalid drain timeout", 2}}},
		{name: "env missing", src: "runtime {\n  admin_token = env(\"QRUN_NOT_SET\")\n}\n", want: []want{{"Missing environment variable", 2}}},
		{name: "env too many arguments", src: "runtime {\n  admin_token = env(\"A\", \"b\", \"c\")\n}\n", want: []want{{"Invalid function argument", 2}}},
		{
			name: "several problems at once",
			src:  "queue \"a\" {\n  engine = \"nope\"\n  max_attempts = -2\n}\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"missing.wasm\"\n  batch = 0\n}\n",
			want: []want{{"Unknown engine", 2}, {"Invalid max attempts", 3}, {"Plugin not found", 7}, {"Invalid batch", 8}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t, nil)
			src, offset := tc.src, 0
			if !tc.raw {
				src, offset = brokenBase+src, strings.Count(brokenBase, "\n")
			}
			f, diags := fx.parse(src)
			var got []want
			for _, d := range diags {
				if d.Severity != hcl.DiagError {
					continue
				}
				if d.Subject == nil {
					t.Errorf("diagnostic %q has no subject", d.Summary)
					continue
				}
				got = append(got, want{d.Summary, d.Subject.Start.Line - offset})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v\n%s", got, tc.want, render(t, f, diags))
			}
		})
	}
}

// consumerWith puts attr on line 5 of a valid consumer.
func consumerWith(attr string) string {
	return "queue \"a\" { engine = \"local\" }\nconsumer \"c\" {\n  queue = \"a\"\n  plugin = \"h.wasm\"\n  " + attr + "\n}\n"
}

// queueWith puts attr on line 3 of a valid queue.
func queueWith(attr string) string {
	return "queue \"a\" {\n  engine = \"local\"\n  " + attr + "\n}\n"
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	f, diags := fx.parse(brokenBase + `runtime {
  admin_listen = ":8787"
}
queue "a" {
  engine = "local"
  visibility_timeout = "10s"
}
consumer "c" {
  queue = "a"
  plugin = "h.wasm"
  timeout = "5s" # stopped within 10s: as long as the lease
}
queue "b" {
  engine = "local"
  visibility_timeout = "10s"
}
consumer "d" {
  queue = "b"
  plugin = "h.wasm"
  timeout = "4s" # stopped within 8s: fits
}
`)
	if diags.HasErrors() {
		t.Fatal(render(t, f, diags))
	}
	var got []string
	for _, d := range diags {
		got = append(got, fmt.Sprintf("%s@%d", d.Summary, d.Subject.Start.Line))
	}
	want := []string{"Admin API exposed without a token@7", "Timeout exceeds visibility timeout@16"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings = %v, want %v", got, want)
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, map[string]string{"SET": "from-env", "EMPTY": ""})
	f, diags := fx.parse(`runtime {
  admin_token = env("SET")
  data_dir    = env("UNSET", "/srv/qrun")
  log_level   = env("EMPTY", "error") == "" ? "warn" : "info"
}`)
	if diags.HasErrors() {
		t.Fatal(render(t, f, diags))
	}
	// A variable set to the empty string is set: the default does not apply.
	if f.Runtime.AdminToken != "from-env" || f.Runtime.DataDir != "/srv/qrun" || f.Runtime.LogLevel != "warn" {
		t.Errorf("Runtime = %+v", f.Runtime)
	}
	// The file's EvalContext resolves env() through the same lookup.
	v, d := ctyCall(f.EvalContext(), "SET")
	if d != nil || v != "from-env" {
		t.Errorf("EvalContext env(SET) = %q, %v", v, d)
	}
}

func ctyCall(ctx *hcl.EvalContext, name string) (string, error) {
	v, err := ctx.Functions["env"].Call([]cty.Value{cty.StringVal(name)})
	if err != nil {
		return "", err
	}
	return v.AsString(), nil
}

func TestWriteDiagnostics(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	src := brokenBase + queueWith(`visibility_timeout = "30x"`)
	path := filepath.Join(fx.dir, "file.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, diags := Load(path, fx.opts)
	if len(diags) != 1 {
		t.Fatalf("diags = %v", diags)
	}
	for _, file := range []*File{f, nil} { // nil: sources are read back from disk
		var buf bytes.Buffer
		if err := WriteDiagnostics(&buf, file, diags, false); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		for _, want := range []string{
			path + ":8:24: Error: Invalid duration\n",
			"  on " + path + ` line 8, in queue "a":`,
			`   8:   visibility_timeout = "30x"`,
			`"30x" is not a duration`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("file=%v: output lacks %q:\n%s", file != nil, want, out)
			}
		}
		if strings.Contains(out, "\x1b[") {
			t.Error("color escapes without color")
		}
	}
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, f, diags, true); err != nil || !strings.Contains(buf.String(), "\x1b[31m") {
		t.Errorf("color output = %q, %v", buf.String(), err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	f, diags := Load(filepath.Join(t.TempDir(), "nope.hcl"), Options{})
	if f == nil || len(diags) != 1 || diags[0].Summary != "Cannot read configuration file" {
		t.Fatalf("f=%v diags=%v", f, diags)
	}
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, f, diags, false); err != nil || !strings.HasPrefix(buf.String(), "Error: Cannot read configuration file") {
		t.Errorf("output %q, %v", buf.String(), err)
	}
}

// With no EngineValidator any type and body is accepted, so tools that only
// need the shape of a config can still read one.
func TestNilEngineValidator(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	fx.opts.Engines = nil
	fx.opts.CheckPlugin = nil
	f, diags := fx.parse(`engine "x" {
  type = "whatever"
  anything = 1
}
queue "q" { engine = "x" }
consumer "c" {
  queue  = "q"
  plugin = "bad.wasm"
}`)
	if len(diags) > 0 {
		t.Fatal(render(t, f, diags))
	}
	if f.Engines[0].Type != "whatever" {
		t.Errorf("Engines = %+v", f.Engines)
	}
}

func TestDiagnosticsSorted(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	// Many unknown attributes in one block: HCL reports these in map order.
	_, diags := fx.parse("queue \"a\" {\n  engine = \"local\"\n  z = 1\n  y = 2\n  x = 3\n  w = 4\n}\n" + brokenBase)
	lines := make([]int, len(diags))
	for i, d := range diags {
		lines[i] = d.Subject.Start.Line
	}
	if !sort.IntsAreSorted(lines) || len(lines) != 4 {
		t.Errorf("lines = %v", lines)
	}
}

func render(t *testing.T, f *File, diags hcl.Diagnostics) string {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, f, diags, false); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// placelessEngines reports a problem without a position, as an engine's
// own check of a whole block may.
type placelessEngines struct{ fakeEngines }

func (placelessEngines) DecodeEngine(string, hcl.Body, *hcl.EvalContext) (EngineFacts, hcl.Diagnostics) {
	return EngineFacts{}, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Engine unhappy"}}
}

// TestEngineDiagnosticsGetAPosition: a diagnostic an engine could not place
// points at its engine block, so every diagnostic has file:line (issue 12
// item 12).
func TestEngineDiagnosticsGetAPosition(t *testing.T) {
	t.Parallel()
	_, diags := Parse("e.hcl", []byte("\n\nengine \"m\" {\n  type = \"memory\"\n}\n"), Options{Engines: placelessEngines{}})
	diags = slices.DeleteFunc(diags, func(d *hcl.Diagnostic) bool { return d.Severity != hcl.DiagError })
	if len(diags) != 1 || diags[0].Subject == nil || diags[0].Subject.Start.Line != 3 {
		t.Fatalf("diagnostics %v, want one at e.hcl line 3", diags)
	}
}

// TestNothingConfiguredWarns: a file with no queue and no consumer is valid
// but runs an idle qrun, so it is warned about (issue 12 item 14).
func TestNothingConfiguredWarns(t *testing.T) {
	t.Parallel()
	for name, src := range map[string]string{
		"empty":        "",
		"comments":     "# nothing here\n// nor here\n/* nor */\n",
		"runtime only": "runtime {\n  log_level = \"debug\"\n}\n",
		"engine only":  "engine \"m\" { type = \"memory\" }\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, diags := Parse("empty.hcl", []byte(src), Options{Engines: fakeEngines{}})
			if diags.HasErrors() || len(diags) != 1 || diags[0].Summary != "Nothing configured" || diags[0].Subject == nil {
				t.Fatalf("diagnostics %v, want one warning \"Nothing configured\" with a position", diags)
			}
		})
	}
}
