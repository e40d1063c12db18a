package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"

	"github.com/qrun-dev/qrun/internal/settings"

	"github.com/qrun-dev/qrun/engines"
)

// The raw structs are the schema, decoded by gohcl. Attributes are kept as
// *hcl.Attribute and evaluated by hand, so each unit and range error points
// at its own expression and absence is told apart from a zero value. Repeated
// runtime and retry blocks are slices so the duplicates can be reported with
// a hint; the engine body's remainder belongs to the engine.

type rawRoot struct {
	Runtimes  []*rawRuntime  `hcl:"runtime,block"`
	Engines   []*rawEngine   `hcl:"engine,block"`
	Queues    []*rawQueue    `hcl:"queue,block"`
	Consumers []*rawConsumer `hcl:"consumer,block"`
	Schedules []*rawSchedule `hcl:"schedule,block"` // schedule.go
	KVs       []*rawKV       `hcl:"kv,block"`       // kv.go
}

type rawRuntime struct {
	DataDir      *hcl.Attribute `hcl:"data_dir,optional"`
	AdminListen  *hcl.Attribute `hcl:"admin_listen,optional"`
	AdminToken   *hcl.Attribute `hcl:"admin_token,optional"`
	LogLevel     *hcl.Attribute `hcl:"log_level,optional"`
	LogFormat    *hcl.Attribute `hcl:"log_format,optional"`
	DrainTimeout *hcl.Attribute `hcl:"drain_timeout,optional"`
	CacheDir     *hcl.Attribute `hcl:"cache_dir,optional"`
	DefRange     hcl.Range      `hcl:",def_range"`
}

type rawEngine struct {
	Name      string         `hcl:"name,label"`
	NameRange hcl.Range      `hcl:"name,label_range"`
	Type      *hcl.Attribute `hcl:"type,optional"`
	Remain    hcl.Body       `hcl:",remain"`
	DefRange  hcl.Range      `hcl:",def_range"`
}

type rawQueue struct {
	Name              string         `hcl:"name,label"`
	NameRange         hcl.Range      `hcl:"name,label_range"`
	Engine            *hcl.Attribute `hcl:"engine,optional"`
	VisibilityTimeout *hcl.Attribute `hcl:"visibility_timeout,optional"`
	MaxAttempts       *hcl.Attribute `hcl:"max_attempts,optional"`
	DeadLetter        *hcl.Attribute `hcl:"dead_letter,optional"`
	Ordered           *hcl.Attribute `hcl:"ordered,optional"`
	Retry             []*rawRetry    `hcl:"retry,block"`
	DefRange          hcl.Range      `hcl:",def_range"`
}

type rawRetry struct {
	Initial    *hcl.Attribute `hcl:"initial,optional"`
	Max        *hcl.Attribute `hcl:"max,optional"`
	Multiplier *hcl.Attribute `hcl:"multiplier,optional"`
	Jitter     *hcl.Attribute `hcl:"jitter,optional"`
	DefRange   hcl.Range      `hcl:",def_range"`
}

type rawConsumer struct {
	Name        string         `hcl:"name,label"`
	NameRange   hcl.Range      `hcl:"name,label_range"`
	Queue       *hcl.Attribute `hcl:"queue,optional"`
	Plugin      *hcl.Attribute `hcl:"plugin,optional"`
	Concurrency *hcl.Attribute `hcl:"concurrency,optional"`
	Timeout     *hcl.Attribute `hcl:"timeout,optional"`
	MemoryLimit *hcl.Attribute `hcl:"memory_limit,optional"`
	Batch       *hcl.Attribute `hcl:"batch,optional"`
	Config      *hcl.Attribute `hcl:"config,optional"`
	Publish     *hcl.Attribute `hcl:"publish,optional"`
	LogRate     *hcl.Attribute `hcl:"log_rate,optional"`
	MaxDepth    *hcl.Attribute `hcl:"max_call_depth,optional"`
	Isolation   *hcl.Attribute `hcl:"isolation,optional"`
	// Throttling (throttle.go).
	RateLimit         *hcl.Attribute `hcl:"rate_limit,optional"`
	Burst             *hcl.Attribute `hcl:"burst,optional"`
	RateLimitKey      *hcl.Attribute `hcl:"rate_limit_key,optional"`
	RateLimitScope    *hcl.Attribute `hcl:"rate_limit_scope,optional"`
	MaxInFlightPerKey *hcl.Attribute `hcl:"max_in_flight_per_key,optional"`
	ConcurrencyKey    *hcl.Attribute `hcl:"concurrency_key,optional"`
	ConcurrencyScope  *hcl.Attribute `hcl:"concurrency_scope,optional"`
	HTTP              []*rawHTTP     `hcl:"http,block"`
	WASI              []*rawWASI     `hcl:"wasi,block"`
	KV                *hcl.Attribute `hcl:"kv,optional"` // kv.go
	DefRange          hcl.Range      `hcl:",def_range"`
}

// decoder accumulates diagnostics while turning raw blocks into File, and
// keeps the ranges validate needs for cross-reference errors.
type decoder struct {
	file  *File
	opts  Options
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics

	queueRefs    map[string]queueRefs // by queue name
	consumerRefs map[string]consumerRefs
	topics       map[string]map[string]bool      // engine name -> its topics (EngineFacts)
	nameRules    map[string]func(string) error   // engine name -> its queue name rule (EngineFacts)
	caps         map[string]engines.Capabilities // engine name -> its capabilities, where known (EngineFacts)
	queueIdx     map[string]int                  // queue name -> index in file.Queues, set by validate
	// scheduleQueues[i] is file.Schedules[i]'s queue attribute (schedule.go).
	scheduleQueues []*hcl.Attribute
	// globalRates are the consumers with a global rate limit (throttle.go).
	globalRates []globalRate
	kvRefs      map[string]kvRefs // kv store name -> its ranges (kv.go)
	// globalSlots are the consumers with a global per-key cap, and
	// slotKeepers the engines whose facts say whether they keep shared
	// slots (throttle.go).
	globalSlots []globalRate
	slotKeepers map[string]bool
}

type queueRefs struct {
	engine, deadLetter, ordered *hcl.Attribute
	name                        hcl.Range
}

type consumerRefs struct {
	queue   *hcl.Attribute
	publish []hcl.Range // one per Publish entry
	kv      []hcl.Range // one per KV entry
	timeout *hcl.Attribute
}

func (d *decoder) errorf(subject hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

func (d *decoder) warnf(subject hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

func (d *decoder) decode(body hcl.Body) {
	// No EvalContext: every attribute is an *hcl.Attribute, so gohcl only
	// checks the schema (unknown attributes and blocks, labels).
	var root rawRoot
	d.diags = append(d.diags, gohcl.DecodeBody(body, nil, &root)...)

	d.file.Runtime = d.runtime(root.Runtimes)

	engines := map[string]hcl.Range{}
	for _, re := range root.Engines {
		if !d.checkName("engine", re.Name, re.NameRange, engines) {
			continue
		}
		d.file.Engines = append(d.file.Engines, d.engine(re))
	}
	queues := map[string]hcl.Range{}
	d.queueRefs = map[string]queueRefs{}
	for _, rq := range root.Queues {
		if !d.checkName("queue", rq.Name, rq.NameRange, queues) {
			continue
		}
		d.file.Queues = append(d.file.Queues, d.queue(rq))
	}
	consumers := map[string]hcl.Range{}
	d.consumerRefs = map[string]consumerRefs{}
	for _, rc := range root.Consumers {
		if !d.checkName("consumer", rc.Name, rc.NameRange, consumers) {
			continue
		}
		d.file.Consumers = append(d.file.Consumers, d.consumer(rc))
	}
	d.schedules(root.Schedules)
	d.kvBlocks(root.KVs)
}

// validName keeps names safe to use as metric labels, URL path segments and
// file names, which engines and the admin API do with them.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// checkName reports a malformed or duplicate block name and reports whether
// the block should be kept. Duplicates are dropped so lookups are unambiguous.
func (d *decoder) checkName(kind, name string, rng hcl.Range, seen map[string]hcl.Range) bool {
	if !validName(name) {
		d.errorf(rng, "Invalid name",
			"%s name %q is not valid: use 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit, because names appear in file names, URLs and metric labels.", kind, name)
	}
	if first, dup := seen[name]; dup {
		d.errorf(rng, "Duplicate "+kind,
			"A %s named %q was already declared at %s; names must be unique.", kind, name, first)
		return false
	}
	seen[name] = rng
	return true
}

func (d *decoder) runtime(blocks []*rawRuntime) Runtime {
	rt := Runtime{
		LogLevel:     DefaultLogLevel,
		LogFormat:    DefaultLogFormat,
		DrainTimeout: DefaultDrainTimeout,
		AdminListen:  DefaultAdminListen,
	}
	for _, extra := range blocks[min(1, len(blocks)):] {
		d.errorf(extra.DefRange, "Duplicate runtime block",
			"Only one runtime block is allowed; the first is at %s. Merge the settings into it.", blocks[0].DefRange)
	}
	raw := &rawRuntime{}
	if len(blocks) > 0 {
		raw = blocks[0]
	}

	rt.DataDir = d.path(d.str(raw.DataDir, DefaultDataDir))
	if raw.DataDir != nil && rt.DataDir == "" {
		d.errorf(raw.DataDir.Expr.Range(), "Invalid data directory", "data_dir must not be empty.")
	}
	rt.CacheDir = filepath.Join(rt.DataDir, "cache")
	if raw.CacheDir != nil {
		if dir := d.str(raw.CacheDir, ""); dir != "" {
			rt.CacheDir = d.path(dir)
		} else {
			d.errorf(raw.CacheDir.Expr.Range(), "Invalid cache directory", "cache_dir must not be empty; leave it out to use %q.", rt.CacheDir)
		}
	}

	if a := raw.AdminListen; a != nil {
		rt.AdminListen = d.str(a, DefaultAdminListen)
		if rt.AdminListen == "off" {
			rt.AdminListen = ""
		}
		if rt.AdminListen != "" {
			if err := checkListenAddr(rt.AdminListen); err != nil {
				d.errorf(a.Expr.Range(), "Invalid admin address",
					"admin_listen %q is not host:port: %s. Use e.g. \"127.0.0.1:8787\", or \"off\" to disable the admin server.", rt.AdminListen, err)
				rt.AdminListen = ""
			}
		}
	}
	rt.AdminToken = d.str(raw.AdminToken, "")
	if rt.AdminListen != "" && rt.AdminToken == "" && !loopbackAddr(rt.AdminListen) {
		subject := raw.DefRange
		if raw.AdminListen != nil {
			subject = raw.AdminListen.Expr.Range()
		}
		d.warnf(subject, "Admin API exposed without a token",
			"admin_listen %q accepts connections from other machines and no admin_token is set, so anyone who can reach it can use the admin API. Set admin_token = env(\"QRUN_ADMIN_TOKEN\") or listen on 127.0.0.1.", rt.AdminListen)
	}

	rt.LogLevel = d.oneOf(raw.LogLevel, rt.LogLevel, "Invalid log level", []string{"debug", "info", "warn", "error"})
	rt.LogFormat = d.oneOf(raw.LogFormat, rt.LogFormat, "Invalid log format", []string{"auto", "console", "json"})

	rt.DrainTimeout = d.duration(raw.DrainTimeout, rt.DrainTimeout)
	if rt.DrainTimeout < 0 {
		d.errorf(raw.DrainTimeout.Expr.Range(), "Invalid drain timeout", "drain_timeout must not be negative; 0 stops without waiting for in-flight messages.")
	}
	return rt
}

func (d *decoder) engine(re *rawEngine) Engine {
	e := Engine{Name: re.Name, Body: re.Remain, Range: re.DefRange}
	if e.Type = d.required(re.Type, re.DefRange, "type", "engine"); e.Type == "" {
		return e
	}
	typeRange := re.Type.Expr.Range()
	v := d.opts.Engines
	if v == nil {
		return e
	}
	known := v.EngineTypes()
	if !slices.Contains(known, e.Type) {
		d.errorf(typeRange, "Unknown engine type", "Engine type %q is not known.%s Known types: %s.",
			e.Type, didYouMean(e.Type, known), strings.Join(slices.Sorted(slices.Values(known)), ", "))
		return e
	}
	if av, ok := v.(EngineAvailability); ok {
		if err := av.EngineAvailable(e.Type); err != nil {
			d.errorf(typeRange, "Engine type unavailable", "%s. Engines that work everywhere include \"disk\" and \"memory\".", sentence(err.Error()))
			return e
		}
	}
	facts, diags := v.DecodeEngine(e.Type, re.Remain, d.ctx)
	for _, diag := range diags {
		// Every diagnostic carries a position: one an engine could not
		// place points at its engine block.
		if diag.Subject == nil {
			diag.Subject = re.DefRange.Ptr()
		}
		d.diags = append(d.diags, diag)
	}
	if diags.HasErrors() {
		return e
	}
	if facts.QueueNameRule != nil {
		d.nameRules[e.Name] = facts.QueueNameRule
	}
	if facts.Capabilities != nil {
		d.caps[e.Name] = *facts.Capabilities
	}
	if d.slotKeepers == nil {
		d.slotKeepers = map[string]bool{}
	}
	d.slotKeepers[e.Name] = facts.KeepsSlots
	if len(facts.Topics) > 0 {
		d.topics[e.Name] = map[string]bool{}
		for _, t := range facts.Topics {
			d.topics[e.Name][t] = true
		}
	}
	return e
}

func (d *decoder) queue(rq *rawQueue) Queue {
	q := Queue{
		Name:              rq.Name,
		Range:             rq.DefRange,
		VisibilityTimeout: DefaultVisibilityTimeout,
		MaxAttempts:       DefaultMaxAttempts,
	}
	d.queueRefs[q.Name] = queueRefs{engine: rq.Engine, deadLetter: rq.DeadLetter, ordered: rq.Ordered, name: rq.NameRange}
	q.Engine = d.required(rq.Engine, rq.DefRange, "engine", "queue")
	q.VisibilityTimeout = d.duration(rq.VisibilityTimeout, q.VisibilityTimeout)
	if q.VisibilityTimeout < 0 {
		d.errorf(rq.VisibilityTimeout.Expr.Range(), "Invalid visibility timeout",
			"visibility_timeout must not be negative; 0 uses the engine's default lease.")
	}
	q.MaxAttempts = d.integer(rq.MaxAttempts, q.MaxAttempts)
	if q.MaxAttempts < 0 {
		d.errorf(rq.MaxAttempts.Expr.Range(), "Invalid max attempts",
			"max_attempts must be 0 (unlimited) or more, not %d.", q.MaxAttempts)
	}
	q.DeadLetter = d.str(rq.DeadLetter, "")
	q.Ordered = d.boolean(rq.Ordered, false)
	q.Retry = d.retry(rq.Retry)
	return q
}

func (d *decoder) retry(blocks []*rawRetry) Retry {
	r := Retry{
		Initial:    DefaultRetryInitial,
		Max:        DefaultRetryMax,
		Multiplier: DefaultRetryMultiplier,
		Jitter:     DefaultRetryJitter,
	}
	if len(blocks) == 0 {
		return r
	}
	for _, extra := range blocks[1:] {
		d.errorf(extra.DefRange, "Duplicate retry block",
			"Only one retry block is allowed per queue; the first is at %s.", blocks[0].DefRange)
	}
	rr := blocks[0]
	r.Initial = d.duration(rr.Initial, r.Initial)
	r.Max = d.duration(rr.Max, r.Max)
	r.Multiplier = d.float(rr.Multiplier, r.Multiplier)
	r.Jitter = d.float(rr.Jitter, r.Jitter)
	if r.Initial <= 0 {
		d.errorf(rr.Initial.Expr.Range(), "Invalid retry delay",
			"initial must be positive (got %s): retrying a failing message at once turns it into a hot loop.", r.Initial)
	}
	if r.Max < r.Initial && r.Initial > 0 {
		subject := hcl.Range{}
		switch {
		case rr.Max != nil:
			subject = rr.Max.Expr.Range()
		default:
			subject = rr.Initial.Expr.Range()
		}
		d.errorf(subject, "Retry initial exceeds max",
			"The first retry delay (%s) is longer than the maximum delay (%s); raise max or lower initial.", r.Initial, r.Max)
	}
	if r.Multiplier < 1 {
		d.errorf(rr.Multiplier.Expr.Range(), "Invalid retry multiplier",
			"multiplier must be at least 1 (got %g); below 1 the delays would shrink.", r.Multiplier)
	}
	if r.Jitter < 0 || r.Jitter > 1 {
		d.errorf(rr.Jitter.Expr.Range(), "Invalid retry jitter",
			"jitter is a fraction of the delay between 0 and 1 (got %g); 0.2 means ±20%%.", r.Jitter)
	}
	return r
}

func (d *decoder) consumer(rc *rawConsumer) Consumer {
	c := Consumer{
		Name:         rc.Name,
		Range:        rc.DefRange,
		Concurrency:  DefaultConcurrency,
		Timeout:      DefaultTimeout,
		MemoryLimit:  DefaultMemoryLimit,
		Batch:        DefaultBatch,
		Config:       map[string]string{},
		LogRate:      DefaultLogRate,
		MaxCallDepth: DefaultMaxCallDepth,
		Isolation:    DefaultIsolation,
	}
	refs := consumerRefs{queue: rc.Queue, timeout: rc.Timeout}
	c.Queue = d.required(rc.Queue, rc.DefRange, "queue", "consumer")
	if b, ok := d.opts.inline[rc.Name]; ok && rc.Plugin == nil {
		c.PluginWasm = b
		c.PluginRange = rc.DefRange
	} else if rc.Plugin == nil {
		d.missing(rc.DefRange, "plugin", "consumer")
	} else {
		c.PluginRange = rc.Plugin.Expr.Range()
		if p := d.str(rc.Plugin, ""); p != "" {
			c.Plugin = d.path(p)
		} else {
			d.errorf(c.PluginRange, "Plugin not found", "plugin must name a .wasm file.")
		}
	}

	c.Concurrency = d.integer(rc.Concurrency, c.Concurrency)
	if c.Concurrency < 1 {
		d.errorf(rc.Concurrency.Expr.Range(), "Invalid concurrency", "concurrency must be at least 1, not %d.", c.Concurrency)
	}
	c.Batch = d.integer(rc.Batch, c.Batch)
	if c.Batch < 1 {
		d.errorf(rc.Batch.Expr.Range(), "Invalid batch", "batch must be at least 1, not %d.", c.Batch)
	}
	c.Timeout = d.duration(rc.Timeout, c.Timeout)
	if c.Timeout <= 0 {
		d.errorf(rc.Timeout.Expr.Range(), "Invalid timeout", "timeout must be positive (got %s): it bounds every handle call.", c.Timeout)
	}
	c.LogRate = d.integer(rc.LogRate, c.LogRate)
	if c.LogRate < 0 {
		d.errorf(rc.LogRate.Expr.Range(), "Invalid log rate", "log_rate must be 0 (discard guest logs) or more lines per second, not %d.", c.LogRate)
	}
	c.MaxCallDepth = d.integer(rc.MaxDepth, c.MaxCallDepth)
	if c.MaxCallDepth < 1 || c.MaxCallDepth > MaxMaxCallDepth {
		d.errorf(rc.MaxDepth.Expr.Range(), "Invalid call depth", "max_call_depth must be between 1 and %d nested calls, not %d.", MaxMaxCallDepth, c.MaxCallDepth)
	}
	c.Isolation = d.oneOf(rc.Isolation, c.Isolation, "Invalid isolation", []string{IsolationInstance, IsolationPerMessage})

	if a := rc.MemoryLimit; a != nil {
		if n, ok := d.size(a); ok {
			pages := n/WasmPageSize + min(1, n%WasmPageSize)
			if n < WasmPageSize || n > MaxMemoryLimit {
				d.errorf(a.Expr.Range(), "Invalid memory limit",
					"memory_limit must be between 64KiB (one WebAssembly page) and 4GiB (the wasm32 address space); got %d bytes.", n)
			} else {
				c.MemoryLimit = pages * WasmPageSize
			}
		}
	}

	c.Config = d.stringMap(rc.Config)
	c.Publish, refs.publish = d.stringList(rc.Publish)
	c.HTTP = d.http(rc.HTTP, c.Timeout)
	c.WASI = d.wasi(rc.WASI)
	c.Throttle = d.throttle(rc, c.Queue, c.Concurrency)
	c.KV, refs.kv = d.stringList(rc.KV)
	d.consumerRefs[c.Name] = refs
	return c
}

// required decodes a string attribute that must be present and non-empty;
// null counts as absent.
func (d *decoder) required(a *hcl.Attribute, block hcl.Range, attr, kind string) string {
	if a == nil {
		d.missing(block, attr, kind)
		return ""
	}
	before := len(d.diags)
	s := d.str(a, "")
	if s == "" && len(d.diags) == before {
		d.errorf(a.Expr.Range(), "Missing required argument", "The argument %q of a %s block must not be null or empty.", attr, kind)
	}
	return s
}

func (d *decoder) missing(block hcl.Range, attr, kind string) {
	d.errorf(block, "Missing required argument", "The argument %q is required in a %s block, but no definition was found.", attr, kind)
}

// path resolves p against the config file's directory.
func (d *decoder) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(d.file.Dir, p)
}

// eval evaluates a present, non-null attribute.
func (d *decoder) eval(a *hcl.Attribute) (cty.Value, bool) {
	if a == nil {
		return cty.NilVal, false
	}
	v, diags := a.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || v.IsNull() || !v.IsWhollyKnown() {
		return cty.NilVal, false
	}
	return v, true
}

// decodeInto converts a present, non-null attribute into dst (a pointer to
// a Go value of type ty) and reports whether dst was set.
func (d *decoder) decodeInto(a *hcl.Attribute, ty cty.Type, dst any) bool {
	if a == nil {
		return false
	}
	return d.convert(a.Expr, a.Name, ty, dst)
}

func (d *decoder) convert(expr hcl.Expression, name string, ty cty.Type, dst any) bool {
	v, diags := expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || v.IsNull() {
		return false
	}
	cv, err := convert.Convert(v, ty)
	if err == nil {
		err = gocty.FromCtyValue(cv, dst)
	}
	if err != nil {
		d.errorf(expr.Range(), "Incorrect attribute value type", "Inappropriate value for %s: %s.", name, err)
		return false
	}
	return true
}

// valueOr decodes a as a value of type ty into a T, or returns def when a is
// absent, null or wrong (the decoder has recorded the diagnostic).
func valueOr[T any](d *decoder, a *hcl.Attribute, ty cty.Type, def T) T {
	var v T
	if d.decodeInto(a, ty, &v) {
		return v
	}
	return def
}

func (d *decoder) str(a *hcl.Attribute, def string) string     { return valueOr(d, a, cty.String, def) }
func (d *decoder) boolean(a *hcl.Attribute, def bool) bool     { return valueOr(d, a, cty.Bool, def) }
func (d *decoder) float(a *hcl.Attribute, def float64) float64 { return valueOr(d, a, cty.Number, def) }
func (d *decoder) integer(a *hcl.Attribute, def int) int       { return valueOr(d, a, cty.Number, def) }

func (d *decoder) oneOf(a *hcl.Attribute, def, summary string, allowed []string) string {
	if a == nil {
		return def
	}
	s := d.str(a, def)
	if !slices.Contains(allowed, s) {
		d.errorf(a.Expr.Range(), summary, "%s must be one of %s; got %q.%s",
			a.Name, strings.Join(allowed, ", "), s, didYouMean(s, allowed))
		return def
	}
	return s
}

// duration decodes a duration by the rules every block shares (see
// settings.Duration).
func (d *decoder) duration(a *hcl.Attribute, def time.Duration) time.Duration {
	v, ok, diags := settings.Duration(a, d.ctx)
	d.diags = append(d.diags, diags...)
	if !ok {
		return def
	}
	return v
}

// size decodes a byte size by the rules every block shares (see
// settings.Size).
func (d *decoder) size(a *hcl.Attribute) (uint64, bool) {
	n, ok, diags := settings.Size(a, d.ctx)
	d.diags = append(d.diags, diags...)
	return n, ok
}

// stringMap decodes a consumer's config map. Scalars become strings because
// the guest ABI hands config values over as strings; nested values are
// rejected rather than serialised in some format the plugin must guess.
func (d *decoder) stringMap(a *hcl.Attribute) map[string]string {
	out := map[string]string{}
	if a == nil {
		return out
	}
	pairs, diags := hcl.ExprMap(a.Expr)
	if diags.HasErrors() {
		// Not an object constructor (e.g. a function call): check the value.
		v, ok := d.eval(a)
		if !ok {
			return out
		}
		if !v.Type().IsObjectType() && !v.Type().IsMapType() {
			d.errorf(a.Expr.Range(), "Invalid config", "config must be a map of strings, such as { greeting = \"hello\" }; got a %s.", v.Type().FriendlyName())
			return out
		}
		for it := v.ElementIterator(); it.Next(); {
			k, ev := it.Element()
			if s, ok := d.scalar(ev, a.Expr.Range(), k.AsString()); ok {
				out[k.AsString()] = s
			}
		}
		return out
	}
	keys := map[string]hcl.Range{}
	for _, p := range pairs {
		var key string
		if !d.convert(p.Key, "config key", cty.String, &key) {
			continue
		}
		if first, dup := keys[key]; dup {
			d.errorf(p.Key.Range(), "Duplicate config key", "config key %q was already set at %s.", key, first)
			continue
		}
		keys[key] = p.Key.Range()
		v, diags := p.Value.Value(d.ctx)
		d.diags = append(d.diags, diags...)
		if diags.HasErrors() {
			continue
		}
		if s, ok := d.scalar(v, p.Value.Range(), key); ok {
			out[key] = s
		}
	}
	return out
}

func (d *decoder) scalar(v cty.Value, rng hcl.Range, key string) (string, bool) {
	if v.IsNull() || !v.Type().IsPrimitiveType() {
		what := "null"
		if !v.IsNull() {
			what = "a " + v.Type().FriendlyName()
		}
		d.errorf(rng, "Invalid config value", "config value %q must be a string, number or bool, not %s; encode structured values as a string, e.g. with JSON.", key, what)
		return "", false
	}
	if v.Type() == cty.Number {
		// Avoid exponent notation for large integers, which convert would keep.
		return v.AsBigFloat().Text('f', -1), true
	}
	s, err := convert.Convert(v, cty.String)
	if err != nil {
		d.errorf(rng, "Invalid config value", "config value %q: %s.", key, err)
		return "", false
	}
	return s.AsString(), true
}

// stringList decodes a list of strings and returns each element's range, so
// a dangling name in the list can be pointed at precisely.
func (d *decoder) stringList(a *hcl.Attribute) ([]string, []hcl.Range) {
	if a == nil {
		return nil, nil
	}
	exprs, diags := hcl.ExprList(a.Expr)
	if diags.HasErrors() {
		var list []string
		if !d.decodeInto(a, cty.List(cty.String), &list) {
			return nil, nil
		}
		rngs := make([]hcl.Range, len(list))
		for i := range rngs {
			rngs[i] = a.Expr.Range()
		}
		return list, rngs
	}
	var list []string
	var rngs []hcl.Range
	for _, e := range exprs {
		var s string
		if !d.convert(e, a.Name+" element", cty.String, &s) {
			continue
		}
		list = append(list, s)
		rngs = append(rngs, e.Range())
	}
	return list, rngs
}

// sentence capitalises an error message (which starts lower case, as Go's
// do) to start a diagnostic's detail.
func sentence(msg string) string {
	if msg == "" || msg[0] < 'a' || msg[0] > 'z' {
		return msg
	}
	return string(msg[0]-'a'+'A') + msg[1:]
}
