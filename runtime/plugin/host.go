// Package plugin is qrun's WebAssembly host: it compiles guest modules with
// wazero (through a shared compilation cache), checks them against ABI v1
// (abi/ABI.md) before they serve anything, instantiates them with the host
// functions of module "qrun" and a locked-down WASI, and calls qrun_handle
// for each delivery with memory, time and log limits enforced.
//
// A Plugin is one loaded module with its own wazero runtime, so memory limits
// and closing are per consumer. An Instance is one live module instance; it
// serves one delivery at a time and is replaced after any failure.
//
// A Live is a consumer's plugin across versions, for hot reload: a Watcher
// (fsnotify on the file's directory, debounced) or a config reload triggers
// it, the new version is compiled, checked and warmed off the delivery
// path, then swapped in atomically. Deliveries in flight finish
// on their version; a replaced version is released, reference counted, when
// its last delivery returns. A version that fails any step never serves.
// See docs/reload.md.
package plugin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"github.com/qrun-dev/qrun/runtime/internal/interrupt"
	"github.com/tetratelabs/wazero"
	"go.uber.org/zap"
)

// DefaultTimeout bounds a guest call when Spec.Timeout is zero; an unbounded
// call would let one looping module wedge its consumer forever.
const DefaultTimeout = 5 * time.Second

// DefaultMaxCallDepth is how many calls a guest may nest when
// Spec.MaxCallDepth is zero (ABI.md section 6; package interrupt says how
// calls that cannot recurse are counted). Deeper recursion traps, so a
// guest that recurses without end costs a bounded stack (a few megabytes)
// and a few milliseconds instead of growing wazero's stack to its 400 MB
// ceiling.
const DefaultMaxCallDepth = interrupt.DefaultDepth

// DefaultLogRate is the guest log budget, in lines per second, when
// Spec.LogRate is zero.
const DefaultLogRate = 100

// HostOptions configures a Host.
type HostOptions struct {
	// CacheDir keeps compiled machine code across restarts; "" keeps it in
	// memory only, which still shares compilation between plugins and reloads.
	CacheDir string
	// Logger receives host and guest log lines; nil discards them.
	Logger *zap.Logger
	// Precompile, when set together with CacheDir, compiles a new version
	// of a large plugin into CacheDir outside this process before it is
	// loaded, so that loading only reads the cache (see ChildPrecompiler).
	// A failure is logged and the version is compiled here as usual.
	Precompile func(ctx context.Context, cacheDir string, wasm []byte) error
	// PrecompileAbove is the module size from which Precompile is used;
	// zero means DefaultPrecompileAbove. Small modules compile in well under
	// a millisecond, less than starting a process.
	PrecompileAbove int
	// HTTPResolver resolves the host names guests' HTTP requests name; nil
	// is the system resolver. Tests map names to loopback with it.
	HTTPResolver httpout.Resolver
	// HTTPTLS configures guests' HTTPS requests; nil uses the system roots.
	HTTPTLS *tls.Config
	// ExtraProc raises GOMAXPROCS by one while a new plugin version is
	// compiled (see extraProcs in procs.go). GOMAXPROCS is process-wide, so
	// only a process that owns it may ask for this: cmd/qrun does; a
	// program embedding qrun leaves it off and its GOMAXPROCS is never
	// touched.
	ExtraProc bool
}

// Host owns what plugins share: the compilation cache and the logger.
type Host struct {
	cache wazero.CompilationCache
	log   *zap.Logger
	opts  HostOptions

	mu      sync.Mutex
	plugins map[*Plugin]struct{}
	closed  bool
}

// NewHost creates a host. Close it after every plugin is done.
func NewHost(ctx context.Context, o HostOptions) (*Host, error) {
	if o.PrecompileAbove <= 0 {
		o.PrecompileAbove = DefaultPrecompileAbove
	}
	h := &Host{log: o.Logger, opts: o, plugins: make(map[*Plugin]struct{})}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if o.CacheDir == "" {
		h.cache = wazero.NewCompilationCache()
	} else {
		c, err := wazero.NewCompilationCacheWithDir(o.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("plugin: compilation cache in %s: %w", o.CacheDir, err)
		}
		h.cache = c
	}
	return h, nil
}

// Close closes every plugin still loaded and then the compilation cache.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	ps := make([]*Plugin, 0, len(h.plugins))
	for p := range h.plugins {
		ps = append(ps, p)
	}
	h.mu.Unlock()
	for _, p := range ps {
		_ = p.Close(ctx)
	}
	if err := h.cache.Close(ctx); err != nil {
		return fmt.Errorf("plugin: closing compilation cache: %w", err)
	}
	return nil
}

// Publisher is how a guest's publish reaches queues. The runtime implements
// it; the plugin host only checks the allow-list and copies the message out
// of guest memory.
type Publisher interface {
	Publish(ctx context.Context, queue string, msg engines.Message) error
}

// Spec describes one consumer's plugin.
type Spec struct {
	// Consumer names the consumer in logs and errors.
	Consumer string
	// Path is the .wasm file; ignored when Wasm is set.
	Path string
	// Wasm is the module itself, for callers that already hold it.
	Wasm []byte
	// MemoryLimit caps the guest's linear memory in bytes, rounded up to
	// 64 KiB pages; zero means the WebAssembly maximum of 4 GiB.
	MemoryLimit uint64
	// Timeout bounds each qrun_handle and qrun_init call (and instantiation);
	// zero means DefaultTimeout.
	Timeout time.Duration
	// Config is what config_get reads.
	Config map[string]string
	// Publish lists the queues publish may target; any other gets -3.
	Publish []string
	// MaxCallDepth bounds how many calls the guest may nest; a call past
	// it traps (ErrCallDepth). Zero means DefaultMaxCallDepth.
	MaxCallDepth int
	// LogRate is the guest's log budget in lines per second, shared by all
	// instances of the plugin, burst equal to the rate; zero means
	// DefaultLogRate.
	LogRate int
	// HTTP is the guest's outbound HTTP grant (http_request); the zero
	// value denies every request.
	HTTP httpout.Policy
	// HTTPClient, when set, serves http_request instead of a client built
	// from HTTP, and is not closed with the plugin. A Live shares one
	// across its versions, so that counters and pooled connections
	// survive a hot swap.
	HTTPClient *httpout.Client
	// Env is the guest's WASI environment; nil means none.
	Env map[string]string
	// Dirs are directories preopened for WASI; nil means no filesystem.
	Dirs []Dir
	// KV lists the key-value stores the guest may use (kv_* host
	// functions); any other store is -3.
	KV []KVStore
	// TxPublish lists the queues of Publish whose publishes are held and
	// returned in Result.Effects instead of published at once: those of
	// the consumer's own engine when it applies effects with the ack.
	TxPublish []string
}

// Dir is a host directory a guest sees through WASI.
type Dir struct {
	// Host is the directory on this machine.
	Host string
	// Guest is the absolute path the guest opens it by.
	Guest string
	// ReadWrite allows writes; otherwise every write fails with EROFS
	// (wazero's read-only mount).
	ReadWrite bool
}

// Load compiles the module (through the host's cache) and checks it against
// the ABI without running any guest code. The error is a *ValidationError
// listing every problem when the module is refused.
func (h *Host) Load(ctx context.Context, s Spec, pub Publisher) (*Plugin, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("plugin: load %s: host %w", s.Consumer, ErrClosed)
	}
	wasm := s.Wasm
	if wasm == nil {
		b, err := os.ReadFile(s.Path)
		if err != nil {
			return nil, fmt.Errorf("plugin: load consumer %q: %w", s.Consumer, err)
		}
		wasm = b
	}
	p, err := newPlugin(ctx, h, s, wasm, pub)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = p.Close(ctx)
		return nil, fmt.Errorf("plugin: load %s: host %w", s.Consumer, ErrClosed)
	}
	h.plugins[p] = struct{}{}
	h.mu.Unlock()
	return p, nil
}

// Verify loads s and starts one instance of it exactly as a consumer's
// first instance starts (compile through the cache, ABI check, memory
// limit, instantiate, _initialize and qrun_init within the timeout), then
// discards both. It is what `qrun validate` runs, so that validate refuses
// every plugin `qrun run` would refuse. A publish from qrun_init is refused
// (nothing is running to receive it).
func (h *Host) Verify(ctx context.Context, s Spec) error {
	p, err := h.Load(ctx, s, refusePublisher{})
	if err != nil {
		return err
	}
	defer func() { _ = p.Close(ctx) }()
	in, err := p.NewInstance(ctx)
	if err != nil {
		return err
	}
	return in.Close(ctx)
}

// refusePublisher is the Publisher of a plugin loaded only to be verified.
type refusePublisher struct{}

// Publish refuses: no queue is open while a config is validated.
func (refusePublisher) Publish(context.Context, string, engines.Message) error {
	return errors.New("publish is not available while the configuration is validated")
}

func (h *Host) forget(p *Plugin) {
	h.mu.Lock()
	delete(h.plugins, p)
	h.mu.Unlock()
}

// newHTTPClient builds the outbound HTTP client for s.
func (h *Host) newHTTPClient(s Spec, log *zap.Logger) *httpout.Client {
	return httpout.New(s.HTTP, httpout.Options{Resolver: h.opts.HTTPResolver, TLS: h.opts.HTTPTLS, Logger: log})
}
