package plugin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"github.com/qrun-dev/qrun/runtime/internal/interrupt"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
)

// Plugin is one loaded module for one consumer. It owns a wazero runtime of
// its own, because wazero applies memory limits per runtime and because
// closing the runtime is the one reliable way to drop every instance of a
// replaced module. All methods are safe for concurrent use.
type Plugin struct {
	host    *Host
	name    string // for errors: consumer and path
	digest  string
	log     *zap.Logger
	pub     Publisher
	config  map[string]string
	allowed map[string]struct{}
	// kv are the granted key-value stores and txPublish the queues whose
	// publishes are held until the ack (kv.go), each mapped to its own
	// name so that a held publish names its queue without allocating;
	// both read-only once loaded.
	kv        map[string]*kvBinding
	txPublish map[string]string
	timeout   time.Duration
	memLimit  uint64 // bytes, page-rounded
	maxDepth  uint32 // calls a guest may nest
	limiter   *logLimiter
	http      *httpout.Client
	ownHTTP   bool // http was built for this plugin, which closes it
	// truncated counts guest log bytes dropped by cutting lines at maxLine.
	truncated atomic.Uint64

	rt     wazero.Runtime
	cm     wazero.CompiledModule
	modCfg wazero.ModuleConfig

	// The watchdog samples instances every wdPeriod and stops one whose call
	// has been running for wdTicks samples, i.e. at least Timeout and less
	// than Timeout+wdPeriod <= 2*Timeout after it began. Sampling a sequence
	// number costs Handle two atomic adds and no clock reads or timers of
	// its own. Stopping is free for the calls that are not stopped: the
	// module was instrumented (package interrupt) to read a stop flag at
	// its loop headers and function entries (every 4096 iterations, and
	// within 64 calls), and the watchdog sets that
	// flag; wazero's WithCloseOnContextDone, which would start a watcher
	// goroutine on every call and make its compiler call into Go at every
	// loop header, stays off.
	wdPeriod time.Duration
	wdTicks  int
	wdStop   chan struct{}
	wdDone   chan struct{}
	// afterSweep, a test hook set under mu, runs under mu after each
	// watchdog sweep: the event a test waits for instead of sleeping
	// through watchdog periods.
	afterSweep func()

	mu        sync.Mutex
	instances map[*Instance]struct{}
	closed    bool
}

func newPlugin(ctx context.Context, h *Host, s Spec, wasm []byte, pub Publisher) (*Plugin, error) {
	sum := sha256.Sum256(wasm)
	p := &Plugin{
		host:      h,
		digest:    hex.EncodeToString(sum[:]),
		pub:       pub,
		config:    make(map[string]string, len(s.Config)),
		allowed:   make(map[string]struct{}, len(s.Publish)),
		timeout:   s.Timeout,
		instances: make(map[*Instance]struct{}),
		wdStop:    make(chan struct{}),
		wdDone:    make(chan struct{}),
	}
	p.name = fmt.Sprintf("consumer %q", s.Consumer)
	if s.Wasm == nil && s.Path != "" {
		p.name += " (" + s.Path + ")"
	}
	for k, v := range s.Config {
		p.config[k] = v
	}
	for _, q := range s.Publish {
		p.allowed[q] = struct{}{}
	}
	p.kv = kvBindings(s)
	for _, q := range s.TxPublish {
		if p.txPublish == nil {
			p.txPublish = make(map[string]string, len(s.TxPublish))
		}
		p.txPublish[q] = q
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	p.log = h.log.With(zap.String("consumer", s.Consumer), zap.String("plugin", p.Version()))
	rate := s.LogRate
	if rate <= 0 {
		rate = DefaultLogRate
	}
	p.limiter = newLogLimiter(rate, p.log)

	pages := uint64(65536)
	if s.MemoryLimit > 0 {
		if n := (s.MemoryLimit + pageSize - 1) / pageSize; n < pages {
			pages = n
		}
	}
	p.memLimit = pages * pageSize

	p.maxDepth = DefaultMaxCallDepth
	if s.MaxCallDepth > 0 {
		p.maxDepth = uint32(min(s.MaxCallDepth, math.MaxInt32))
	}

	// Instrumented before anything else, so that nothing compiled from
	// this module can run without its stop checks.
	// Check, run by explainCompileError, states why: the module is not
	// valid WebAssembly, or it is but cannot be made stoppable.
	code, err := interrupt.Instrument(wasm)
	if err != nil {
		return nil, p.explainCompileError(ctx, wasm, err)
	}
	p.rt = wazero.NewRuntimeWithConfig(ctx, runtimeConfig(h.cache).WithMemoryLimitPages(uint32(pages)))
	ok := false
	defer func() {
		if !ok {
			_ = p.rt.Close(ctx)
		}
	}()
	wasiFuncs, err := wasiSignatures(ctx, p.rt)
	if err != nil {
		return nil, fmt.Errorf("plugin: %s: %w", p.name, err)
	}
	if err := instantiateHostModule(ctx, p.rt); err != nil {
		return nil, fmt.Errorf("plugin: %s: host module: %w", p.name, err)
	}
	cm, err := p.rt.CompileModule(ctx, code)
	if err != nil {
		return nil, p.explainCompileError(ctx, wasm, err)
	}
	p.cm = cm
	rep := &Report{}
	inspect(cm, wasm, wasiFuncs, rep)
	if len(rep.Problems) > 0 {
		return nil, &ValidationError{Module: p.name, Problems: rep.Problems}
	}

	// No filesystem, environment or arguments unless the consumer's wasi
	// block grants them (withGrants): a handler gets its inputs from the
	// message and config_get. Real clocks and randomness because
	// wazero's deterministic defaults surprise anyone who calls time.Now or
	// generates an ID. No start functions: modules are reactors, and we call
	// _initialize ourselves under the timeout. Sleeping (WASI poll_oneoff)
	// is per instance, see Instance.nanosleep.
	p.modCfg = wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader)
	p.modCfg = withGrants(p.modCfg, s)
	// Always a client, even for a consumer without an http block: its
	// empty allow list denies, and counts, every request.
	if p.http = s.HTTPClient; p.http == nil {
		p.http, p.ownHTTP = h.newHTTPClient(s, p.log), true
	}

	p.wdPeriod = p.timeout / 4
	if p.wdPeriod > time.Second {
		p.wdPeriod = time.Second // also the cadence of the dropped-lines summary
	}
	if p.wdPeriod < 100*time.Microsecond {
		p.wdPeriod = 100 * time.Microsecond
	}
	p.wdTicks = int((p.timeout + p.wdPeriod - 1) / p.wdPeriod)
	go p.watchdog()
	ok = true
	return p, nil
}

// explainCompileError turns a wazero compile failure into a ValidationError.
// wazero refuses a module whose minimum memory exceeds the runtime's limit at
// compile time, with a message in pages; operators think in memory_limit, so
// that case is restated with both sizes. An unlimited inspection also lists
// any other problem the module has, so one round of fixes is enough.
func (p *Plugin) explainCompileError(ctx context.Context, wasm []byte, cerr error) error {
	rep, _ := Check(ctx, wasm)
	var problems []string
	if rep != nil {
		problems = append(problems, rep.Problems...)
		if rep.MemoryMinBytes > p.memLimit {
			problems = append(problems, fmt.Sprintf(
				"module needs at least %s of memory (%d pages) but memory_limit is %s (%d pages)",
				formatBytes(rep.MemoryMinBytes), rep.MemoryMinBytes/pageSize, formatBytes(p.memLimit), p.memLimit/pageSize))
		}
	}
	if len(problems) == 0 {
		problems = append(problems, "not a valid WebAssembly module: "+cerr.Error())
	}
	return &ValidationError{Module: p.name, Problems: problems}
}

// Version is a short form of Digest for logs and metrics labels.
func (p *Plugin) Version() string { return p.digest[:12] }

// Digest is the hex SHA-256 of the module bytes: it identifies exactly what
// runs, independent of file names, so hot swaps are visible in logs.
func (p *Plugin) Digest() string { return p.digest }

// LogDropped is the number of guest log lines dropped by the rate limit since
// the plugin was loaded.
func (p *Plugin) LogDropped() uint64 { return p.limiter.dropped.Load() }

// LogTruncatedBytes is the number of guest log bytes dropped since the
// plugin was loaded because a line (from log, stdout or stderr) was longer
// than the 4 KiB a line may have; each such line is logged cut, with
// truncated=true.
func (p *Plugin) LogTruncatedBytes() uint64 { return p.truncated.Load() }

// HTTPStats is a snapshot of the plugin's outbound HTTP counters.
func (p *Plugin) HTTPStats() httpout.Stats { return p.http.Stats() }

// MemoryLimit is the enforced memory limit in bytes, after page rounding.
func (p *Plugin) MemoryLimit() uint64 { return p.memLimit }

// NewInstance instantiates the module, runs _initialize and qrun_init (each
// bounded by the timeout) and returns an instance ready for Handle. ctx is
// checked once; the instance does not inherit its cancellation, since it
// lives until Close.
func (p *Plugin) NewInstance(ctx context.Context) (*Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("plugin: %s: new instance: %w", p.name, err)
	}
	in := &Instance{p: p, stack: make([]uint64, 2)}
	in.st = instanceState{p: p, in: in}
	cctx, cancel := context.WithCancel(context.Background())
	in.ctx, in.cancel = context.WithValue(cctx, stateKey{}, &in.st), cancel
	in.stdout = &lineWriter{st: &in.st, source: "stdout"}
	in.stderr = &lineWriter{st: &in.st, source: "stderr"}
	if !p.register(in) {
		cancel()
		return nil, fmt.Errorf("plugin: %s: new instance: %w", p.name, ErrClosed)
	}
	fail := func(err error) (*Instance, error) {
		_ = in.Close(context.Background())
		return nil, fmt.Errorf("plugin: %s: new instance: %w", p.name, err)
	}
	in.seq.Add(1)
	mod, err := p.rt.InstantiateModule(in.ctx, p.cm, p.modCfg.WithStdout(in.stdout).WithStderr(in.stderr).WithNanosleep(in.nanosleep))
	in.seq.Add(1)
	if err != nil {
		return fail(in.callError("instantiate", err))
	}
	in.mod = mod
	stop, _ := mod.ExportedGlobal(interrupt.StopExport).(api.MutableGlobal)
	depth, _ := mod.ExportedGlobal(interrupt.DepthExport).(api.MutableGlobal)
	fuel, _ := mod.ExportedGlobal(interrupt.FuelExport).(api.MutableGlobal)
	if stop == nil || depth == nil || fuel == nil {
		return fail(errors.New("module lost the instrumentation's globals"))
	}
	depth.Set(uint64(p.maxDepth))
	in.depth = depth
	in.setStopGlobals(stop, fuel)
	in.mem = mod.Memory()
	in.alloc = mod.ExportedFunction(abi.ExportAlloc)
	in.handle = mod.ExportedFunction(abi.ExportHandle)
	in.free = mod.ExportedFunction(abi.ExportFree)
	if in.mem == nil || in.alloc == nil || in.handle == nil {
		return fail(errors.New("module lost its exports after validation"))
	}
	// The start function, which the instrumentation moved out of
	// instantiation so that it runs with the stop flag in reach.
	for _, name := range []string{interrupt.StartExport, abi.ExportInitialize, abi.ExportInit} {
		f := mod.ExportedFunction(name)
		if f == nil {
			continue
		}
		what := name
		if name == interrupt.StartExport {
			what = "start function"
		}
		if err := in.call(f, what); err != nil {
			return fail(err)
		}
		if name == abi.ExportInit {
			if status := api.DecodeI32(in.stack[0]); status != 0 {
				return fail(fmt.Errorf("%w: qrun_init returned %d", ErrInit, status))
			}
		}
	}
	if in.timedOut.Load() {
		// The watchdog fired as the last step returned normally: the
		// instance's context is cancelled, so it could serve nothing.
		return fail(fmt.Errorf("%w: initialisation ran longer than %v", ErrTimeout, p.timeout))
	}
	return in, nil
}

// runtimeConfig is the wazero configuration of every plugin runtime and of a
// precompiling child: the two must agree for the child's compiled code to
// be found in the cache. Close-on-context-done stays off: package interrupt
// stops guests instead (see Plugin).
func runtimeConfig(cache wazero.CompilationCache) wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().WithCompilationCache(cache)
}

func (p *Plugin) register(in *Instance) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.instances[in] = struct{}{}
	return true
}

func (p *Plugin) unregister(in *Instance) {
	p.mu.Lock()
	delete(p.instances, in)
	p.mu.Unlock()
}

// watchdog stops instances whose guest call overran the timeout. One
// goroutine per plugin instead of a timer per call keeps Handle free of
// timer operations. Setting the stop flag makes the guest trap at its next
// checked loop header or function entry; cancelling the instance's context returns
// a host function that blocks (publish, extend_lease, a WASI sleep).
func (p *Plugin) watchdog() {
	defer close(p.wdDone)
	t := time.NewTicker(p.wdPeriod)
	defer t.Stop()
	for {
		select {
		case <-p.wdStop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		for in := range p.instances {
			s := in.seq.Load()
			if s&1 == 0 || s != in.wdSeq {
				in.wdSeq, in.wdTicks = s, 0
				continue
			}
			in.wdTicks++
			if in.wdTicks >= p.wdTicks {
				// Again on every tick the call still runs: the guest's own
				// fuel decrement may have overwritten the last store.
				in.timedOut.Store(true)
				in.interrupt()
			}
		}
		if p.afterSweep != nil {
			p.afterSweep()
		}
		p.mu.Unlock()
		p.limiter.summarize(time.Now(), false)
	}
}

// Close stops every instance of the plugin (a call still running ends with
// ErrTrap) and releases the runtime. Instances still held by
// callers must still be closed by them, which is then a no-op.
func (p *Plugin) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for in := range p.instances {
		// Stopping first makes running calls trap at their next check, so
		// no guest code is left running in the runtime closed below.
		in.interrupt()
	}
	p.mu.Unlock()
	close(p.wdStop)
	<-p.wdDone
	p.limiter.summarize(time.Now(), true)
	p.host.forget(p)
	if p.ownHTTP {
		p.http.Close()
	}
	if err := p.rt.Close(ctx); err != nil {
		return fmt.Errorf("plugin: %s: close: %w", p.name, err)
	}
	return nil
}
