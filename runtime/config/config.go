// Package config reads qrun's HCL configuration into typed values and checks
// everything that can be checked before the first message arrives: the
// schema, units, cross references between blocks, dead-letter cycles and the
// plugin files. Every problem is an hcl.Diagnostic whose Subject points at
// the offending attribute or label, so `qrun validate` can print all of them
// at once with file:line:col and a source snippet.
//
// Fixed shapes are decoded with gohcl; an engine block's type-specific
// settings are left as an hcl.Body for the engine to decode itself (through
// Options.Engines), so adding an engine never changes this package's schema.
package config

import (
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
)

// Options are the hooks a caller plugs into parsing. The zero value is usable:
// it accepts any engine type, only checks that plugin files exist and reads
// the process environment.
type Options struct {
	// Engines validates an engine block's type-specific body. nil accepts any
	// type and any body, which suits tools that only need the shape.
	Engines EngineValidator
	// CheckPlugin validates consumer c's plugin, whose file (c.Plugin, an
	// absolute path) is known to exist; f is the file being decoded, its
	// Runtime already set. It is called once per consumer, since the
	// consumer's limits and config values decide whether the plugin starts.
	// A non-nil error becomes a diagnostic on the consumer's plugin
	// attribute, so a module that does not compile or initialise is
	// reported at validate time; the error should name the plugin. nil only
	// checks that the file exists.
	CheckPlugin func(f *File, c *Consumer) error
	// LookupEnv backs the env() function; nil means os.LookupEnv. Tests inject
	// a map so they need not mutate the process environment.
	LookupEnv func(string) (string, bool)

	// inline holds the plugin bytes of a Spec's consumers, by consumer
	// name; such a consumer has no plugin attribute (Spec.Build).
	inline map[string][]byte
}

// EngineValidator lets the engine registry, which lives above this package,
// check engine blocks without this package importing any engine.
type EngineValidator interface {
	// DecodeEngine decodes and validates body (the engine block minus its
	// type attribute) for engine type typ, once, and returns what the rest
	// of the config needs to know of the engine; the facts are only used
	// when the diagnostics hold no error. It is only called for a type
	// listed by EngineTypes; ctx carries the env() function.
	DecodeEngine(typ string, body hcl.Body, ctx *hcl.EvalContext) (EngineFacts, hcl.Diagnostics)
	// EngineTypes lists the accepted values of an engine block's type.
	EngineTypes() []string
}

// EngineFacts are what validating queues and consumers needs to know of a
// decoded engine block.
type EngineFacts struct {
	// Topics lists the topics the block declares: names a queue block may
	// declare and publish to, but no consumer may read (it reads the
	// topic's subscriptions). A consumer on a topic is refused at validate
	// instead of failing every receive once running.
	Topics []string
	// QueueNameRule reports why the engine cannot hold a queue called
	// name, beyond qrun's own rule (1 to 128 letters, digits, '_', '.' or
	// '-'): an engine that makes a file or kernel name of a prefix and the
	// queue name, say. A name that fails is an error at the queue's label;
	// no name is ever shortened or altered to fit. nil accepts every name.
	QueueNameRule func(name string) error
	// Capabilities, when the engine knows them before it opens, let a
	// queue asking for one it lacks (ordered = true) be refused at
	// validate, at the attribute that asks; nil when they are only known
	// once it is open.
	Capabilities *engines.Capabilities
	// KeepsSlots: the engine keeps per-key concurrency slots shared by
	// every node (engines.SlotKeeper), so a consumer on it may ask for
	// concurrency_scope = "global".
	KeepsSlots bool
}

// EngineAvailability is optionally implemented by an EngineValidator whose
// engine types work on some platforms only. A type that does not work on
// the platform qrun runs on is an error at the block's type attribute,
// before its settings are decoded.
type EngineAvailability interface {
	// EngineAvailable reports why engine type typ cannot run here, or nil.
	EngineAvailable(typ string) error
}

// File is a decoded configuration. When Parse or Load report errors the File
// is still returned, but only Path, Dir and Files are meaningful: they are
// kept so the diagnostics can be rendered with their source.
type File struct {
	// Path is the configuration file name as given; diagnostics use it.
	Path string
	// Dir is the absolute directory of the configuration file; relative
	// paths in the file are resolved against it, not the working directory,
	// so a config means the same thing wherever qrun is started.
	Dir string

	Runtime   Runtime
	Engines   []Engine
	Queues    []Queue
	Consumers []Consumer
	// Schedules are the schedule blocks (schedule.go).
	Schedules []Schedule
	// KV are the key-value stores (`kv "name"` blocks; kv.go).
	KV []KVStore

	// Files holds the parsed sources keyed by file name, for
	// WriteDiagnostics and hcl.NewDiagnosticTextWriter.
	Files map[string]*hcl.File

	lookupEnv func(string) (string, bool)
}

// Runtime is the `runtime` block: process-wide settings.
type Runtime struct {
	// DataDir is where durable engines keep their files; absolute.
	// Default "./data" next to the config file.
	DataDir string
	// AdminListen is the admin HTTP address (host:port). Empty means the
	// admin server is off; the file disables it with "" or "off".
	// Default "127.0.0.1:8787".
	AdminListen string
	// AdminToken, when set, is required as a bearer token by the admin API.
	AdminToken string
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string
	// LogFormat is one of auto, console, json; auto picks console on a
	// terminal and json otherwise. Default auto.
	LogFormat string
	// DrainTimeout bounds how long shutdown waits for in-flight messages.
	// Default 30s; 0 stops without waiting.
	DrainTimeout time.Duration
	// CacheDir holds the compiled-module cache; absolute. Default
	// <DataDir>/cache.
	CacheDir string
}

// Engine is an `engine "name"` block.
type Engine struct {
	Name string
	Type string
	// Body holds the type-specific settings (everything but type), for the
	// engine's own decoder.
	Body hcl.Body
	// Range is the block header, for errors raised when the engine opens.
	Range hcl.Range
}

// Queue is a `queue "name"` block.
type Queue struct {
	Name   string
	Engine string
	// VisibilityTimeout is the lease length. Default 30s; 0 means the
	// engine's default.
	VisibilityTimeout time.Duration
	// MaxAttempts is the number of failures before dead-lettering. Default
	// 5; 0 means unlimited.
	MaxAttempts int
	// DeadLetter names a queue on the same engine; empty means none.
	DeadLetter string
	// Ordered delivers messages sharing an ordering key one at a time.
	Ordered bool
	// Retry is the backoff applied to failed messages: by the dispatcher to
	// nacks, traps and timeouts, and by the engine to expired leases.
	Retry Retry
	// Range is the block header.
	Range hcl.Range
}

// Retry is a queue's `retry` block: exponential backoff with jitter. The
// n-th retry waits min(Initial*Multiplier^(n-1), Max), randomised by
// ±Jitter of itself.
type Retry struct {
	// Initial is the first delay. Default 1s; must be positive so a failing
	// message is never retried in a hot loop.
	Initial time.Duration
	// Max caps the delay. Default 5m; must be at least Initial.
	Max time.Duration
	// Multiplier grows the delay per failure. Default 2; at least 1.
	Multiplier float64
	// Jitter is the randomised fraction of each delay, 0..1. Default 0.2.
	Jitter float64
}

// Consumer is a `consumer "name"` block: one plugin handling one queue.
type Consumer struct {
	Name  string
	Queue string
	// Plugin is the absolute path of the .wasm file; a relative path in the
	// file is resolved against File.Dir.
	Plugin string
	// PluginWasm is the module itself, for a consumer whose plugin a
	// program gave as bytes (ConsumerSpec.PluginWasm); Plugin is then
	// empty and nothing is watched.
	PluginWasm []byte
	// PluginRange is the plugin attribute's value, so errors raised later
	// (compilation, hot swap) can point where CheckPlugin would have.
	PluginRange hcl.Range
	// Concurrency is the number of messages handled at once. Default 4.
	Concurrency int
	// Timeout bounds one handle call. Default 5s.
	Timeout time.Duration
	// MemoryLimit is the guest memory cap in bytes, rounded up to whole 64KiB
	// WebAssembly pages; 64KiB..4GiB. Default 64MiB.
	MemoryLimit uint64
	// Batch is the most messages received per engine call. Default 64.
	Batch int
	// Config is handed to the plugin; numbers and bools arrive as strings.
	Config map[string]string
	// Publish lists the queues the plugin may publish to.
	Publish []string
	// LogRate caps guest log lines per second. Default 100; 0 discards
	// guest logs.
	LogRate int
	// MaxCallDepth bounds how many calls the guest may nest; a deeper call
	// traps (ABI.md section 6). Default 10000.
	MaxCallDepth int
	// Isolation is "instance" (reuse instances, the default) or
	// "per_message" (a fresh instance per message).
	Isolation string
	// HTTP is the `http` block, the guest's outbound HTTP grant; without
	// one its allow list is empty and every request is denied.
	HTTP httpout.Policy
	// WASI is the `wasi` block: environment variables and preopened
	// directories; none without one.
	WASI WASI
	// Throttle holds the consumer's rate limits and per-key concurrency
	// (throttle.go).
	Throttle Throttle
	// KV lists the key-value stores the plugin may use (kv_* host
	// functions); any other store is -3 (docs/state.md).
	KV []string
	// KVStores are the stores KV names, resolved by validation (in KV's
	// order), so that whoever starts the consumer needs nothing else of
	// the file.
	KVStores []KVStore
	// Range is the block header.
	Range hcl.Range
}

// Defaults, exported so docs, the example config and callers agree with the
// decoder.
const (
	DefaultDataDir           = "./data"
	DefaultAdminListen       = "127.0.0.1:8787"
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "auto"
	DefaultDrainTimeout      = 30 * time.Second
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultMaxAttempts       = 5
	DefaultRetryInitial      = time.Second
	DefaultRetryMax          = 5 * time.Minute
	DefaultRetryMultiplier   = 2.0
	DefaultRetryJitter       = 0.2
	DefaultConcurrency       = 4
	DefaultTimeout           = 5 * time.Second
	DefaultMemoryLimit       = 64 << 20
	DefaultBatch             = 64
	DefaultLogRate           = 100
	DefaultMaxCallDepth      = 10000
	// MaxMaxCallDepth is the largest max_call_depth: a million small
	// frames are already hundreds of megabytes of stack.
	MaxMaxCallDepth  = 1000000
	DefaultIsolation = IsolationInstance
)

// Isolation modes of a consumer.
const (
	// IsolationInstance reuses pooled instances across messages.
	IsolationInstance = "instance"
	// IsolationPerMessage gives every message a fresh instance, trading
	// speed for no state leaking between messages.
	IsolationPerMessage = "per_message"
)

// WebAssembly memory is allocated in 64KiB pages and wasm32 addresses at most
// 4GiB, which bounds memory_limit.
const (
	WasmPageSize   = 64 << 10
	MaxMemoryLimit = 4 << 30
)

// Load reads and parses the configuration file at path. It reads at most
// one byte more than MaxFileSize, so a huge file (or a device that never
// ends) is refused without being read whole.
func Load(path string, opts Options) (*File, hcl.Diagnostics) {
	src, err := readLimited(path, MaxFileSize+1)
	if err != nil {
		f := newFile(path, opts)
		return f, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read configuration file",
			Detail:   err.Error(),
		}}
	}
	return Parse(path, src, opts)
}

// Parse parses src as the configuration file filename. filename names the
// file in diagnostics and fixes Dir, against which relative paths resolve.
// All problems are returned together, sorted by position.
func Parse(filename string, src []byte, opts Options) (*File, hcl.Diagnostics) {
	f := newFile(filename, opts)
	if d := prescan(filename, src); d != nil {
		// The bytes alone render the snippet; parsing them is what the
		// scan guards against.
		f.Files[filename] = &hcl.File{Bytes: printable(src)} // a snippet of it must not garble the terminal
		return f, hcl.Diagnostics{d}
	}
	parser := hclparse.NewParser()
	hf, diags := parser.ParseHCL(src, filename)
	f.Files = parser.Files()
	if diags.HasErrors() {
		// Decoding a body with syntax errors mostly reports their echoes.
		return f, sortDiags(diags)
	}
	d := &decoder{file: f, opts: opts, ctx: f.EvalContext(),
		topics: map[string]map[string]bool{}, nameRules: map[string]func(string) error{}, caps: map[string]engines.Capabilities{}}
	d.diags = diags
	d.decode(hf.Body)
	d.validate()
	return f, sortDiags(rewriteEnvDiags(d.diags))
}

// readLimited reads at most limit bytes of the file at path.
func readLimited(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return io.ReadAll(io.LimitReader(fh, limit))
}

func newFile(path string, opts Options) *File {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		dir = filepath.Dir(path)
	}
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &File{Path: path, Dir: dir, Files: map[string]*hcl.File{}, lookupEnv: lookup}
}

// EvalContext is the context the file's expressions are evaluated in: no
// variables, and the env() function. Engines decoding their own settings
// later use it so env() means the same there.
func (f *File) EvalContext() *hcl.EvalContext {
	lookup := f.lookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return newEvalContext(lookup)
}

// Queue returns the queue named name.
func (f *File) Queue(name string) (*Queue, bool) {
	for i := range f.Queues {
		if f.Queues[i].Name == name {
			return &f.Queues[i], true
		}
	}
	return nil, false
}

// Engine returns the engine named name.
func (f *File) Engine(name string) (*Engine, bool) {
	for i := range f.Engines {
		if f.Engines[i].Name == name {
			return &f.Engines[i], true
		}
	}
	return nil, false
}

// Consumer returns the consumer named name.
func (f *File) Consumer(name string) (*Consumer, bool) {
	for i := range f.Consumers {
		if f.Consumers[i].Name == name {
			return &f.Consumers[i], true
		}
	}
	return nil, false
}
