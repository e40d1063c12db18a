package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
)

// Spec is a configuration written in Go, the typed route to a File for a
// program embedding qrun; HCL (Load, Parse) is the other. Its fields
// mirror the blocks and attributes of the HCL schema (docs in README.md),
// and a zero field means the attribute's default, so only what differs
// needs saying. Where zero is a meaningful setting in HCL, a negative
// value asks for it (Unlimited, NoDrain, NoGuestLogs). Unlike HCL, the
// admin API is off unless Runtime.AdminListen names an address.
//
// Build validates a Spec exactly as Parse validates a file, because it is
// checked by the same code: Build writes the Spec as HCL (hclwrite) and
// parses that. Errors name the block they are about instead of a line.
type Spec struct {
	// Dir is the directory relative paths (data_dir, cache_dir, plugin
	// paths) resolve against; "" means the working directory.
	Dir       string
	Runtime   RuntimeSpec
	Engines   []EngineSpec
	Queues    []QueueSpec
	Consumers []ConsumerSpec
	// Schedules are schedule blocks (typed_schedule.go).
	Schedules []ScheduleSpec
	// KV are the key-value stores (kv blocks; docs/state.md).
	KV []KVSpec
}

// KVSpec is a kv block.
type KVSpec struct {
	Name, Engine string
	MaxValueSize uint64 // bytes; 0 is the default (1 MiB)
}

// RuntimeSpec is the runtime block. LogLevel and LogFormat are left out:
// a program embedding qrun passes its own logger (server.Options.Logger).
type RuntimeSpec struct {
	DataDir string
	// AdminListen is the admin API's host:port; "" leaves it off.
	AdminListen  string
	AdminToken   string
	DrainTimeout time.Duration // NoDrain stops without waiting
	CacheDir     string
}

// EngineSpec is an engine block. Settings are the engine type's own
// attributes (see docs/*.md of each engine), with values of type string,
// bool, int, int64, uint64, float64, time.Duration (written as a duration
// string) or []string; e.g. {"dsn": "postgres://..."} for postgres.
type EngineSpec struct {
	Name, Type string
	Settings   map[string]any
}

// QueueSpec is a queue block.
type QueueSpec struct {
	Name, Engine      string
	VisibilityTimeout time.Duration
	MaxAttempts       int // Unlimited never dead-letters for failures
	DeadLetter        string
	Ordered           bool
	Retry             RetrySpec
}

// RetrySpec is a queue's retry block.
type RetrySpec struct {
	Initial, Max time.Duration
	Multiplier   float64
	Jitter       float64 // negative for none
}

// ConsumerSpec is a consumer block. The plugin is given either as a file
// (Plugin, which is then watched for hot swaps as with HCL) or as the
// module's bytes (PluginWasm, e.g. from go:embed), not both.
type ConsumerSpec struct {
	Name, Queue string
	Plugin      string
	PluginWasm  []byte
	Concurrency int
	Timeout     time.Duration
	MemoryLimit uint64 // bytes
	Batch       int
	Config      map[string]string
	Publish     []string
	// KV lists the key-value stores the plugin may use.
	KV           []string
	LogRate      int // NoGuestLogs discards the guest's log lines
	MaxCallDepth int
	Isolation    string
	// HTTP is the http block, the guest's outbound HTTP grant; nil
	// denies every request.
	HTTP *HTTPSpec
	// WASI is the wasi block; the zero value grants nothing.
	WASI WASISpec
	// Throttle is rate_limit, burst, rate_limit_key,
	// max_in_flight_per_key and concurrency_key (typed_schedule.go).
	Throttle ThrottleSpec
}

// HTTPSpec is a consumer's http block.
type HTTPSpec struct {
	// Allow lists [scheme://]host[:port] patterns, as in HCL.
	Allow             []string
	Timeout           time.Duration
	MaxResponseSize   uint64 // bytes
	MaxRequests       int
	MaxConnections    int
	Headers           map[string]string
	IdempotencyHeader string
}

// WASISpec is a consumer's wasi block.
type WASISpec struct {
	// Env is the guest's whole environment.
	Env map[string]string
	// Dirs are preopened directories.
	Dirs []DirSpec
}

// DirSpec is a wasi block's dir block.
type DirSpec struct {
	Guest, Host string
	ReadWrite   bool
}

// Sentinels for the settings whose zero value in HCL means something other
// than the default.
const (
	// Unlimited is QueueSpec.MaxAttempts for max_attempts = 0.
	Unlimited = -1
	// NoDrain is RuntimeSpec.DrainTimeout for drain_timeout = "0s".
	NoDrain time.Duration = -1
	// NoGuestLogs is ConsumerSpec.LogRate for log_rate = 0.
	NoGuestLogs = -1
)

// Error is a configuration that failed validation: every problem found,
// each naming its block.
type Error struct {
	Problems []string
}

// Error lists the problems, one per line.
func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return "config: " + e.Problems[0]
	}
	return "config: " + fmt.Sprint(len(e.Problems)) + " problems:\n  " + strings.Join(e.Problems, "\n  ")
}

// specFile is the name a Spec's File carries in place of a file name.
const specFile = "<qrun.Spec>"

// Build checks s as Parse checks a file, with opts' engine validator and
// plugin check, and returns the File a server runs. It fails with an
// *Error listing every problem; warnings are dropped.
func (s *Spec) Build(opts Options) (*File, error) {
	src, inline, err := s.hcl()
	if err != nil {
		return nil, err
	}
	dir := s.Dir
	if dir == "" {
		if dir, err = os.Getwd(); err != nil {
			return nil, fmt.Errorf("config: working directory: %w", err)
		}
	}
	opts.inline = inline
	f, diags := Parse(filepath.Join(dir, specFile), src, opts)
	if diags.HasErrors() {
		return nil, specError(src, diags)
	}
	f.Path = "" // nothing to re-read on a reload
	return f, nil
}

// hcl writes the Spec as an HCL file, and collects the inline plugins.
func (s *Spec) hcl() ([]byte, map[string][]byte, error) {
	f := hclwrite.NewEmptyFile()
	root := f.Body()
	rt := root.AppendNewBlock("runtime", nil).Body()
	setStr(rt, "data_dir", s.Runtime.DataDir)
	rt.SetAttributeValue("admin_listen", cty.StringVal(orStr(s.Runtime.AdminListen, "off")))
	setStr(rt, "admin_token", s.Runtime.AdminToken)
	setDur(rt, "drain_timeout", s.Runtime.DrainTimeout)
	setStr(rt, "cache_dir", s.Runtime.CacheDir)

	var problems []string
	for _, e := range s.Engines {
		b := root.AppendNewBlock("engine", []string{e.Name}).Body()
		setStr(b, "type", e.Type)
		keys := make([]string, 0, len(e.Settings))
		for k := range e.Settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, err := ctyValue(e.Settings[k])
			if err != nil {
				problems = append(problems, fmt.Sprintf("engine %q: setting %q: %v", e.Name, k, err))
				continue
			}
			b.SetAttributeValue(k, v)
		}
	}
	for _, q := range s.Queues {
		b := root.AppendNewBlock("queue", []string{q.Name}).Body()
		setStr(b, "engine", q.Engine)
		setDur(b, "visibility_timeout", q.VisibilityTimeout)
		setInt(b, "max_attempts", q.MaxAttempts)
		setStr(b, "dead_letter", q.DeadLetter)
		if q.Ordered {
			b.SetAttributeValue("ordered", cty.True)
		}
		if r := q.Retry; r != (RetrySpec{}) {
			rb := b.AppendNewBlock("retry", nil).Body()
			setDur(rb, "initial", r.Initial)
			setDur(rb, "max", r.Max)
			if r.Multiplier != 0 {
				rb.SetAttributeValue("multiplier", cty.NumberFloatVal(r.Multiplier))
			}
			if r.Jitter != 0 {
				rb.SetAttributeValue("jitter", cty.NumberFloatVal(max(r.Jitter, 0)))
			}
		}
	}
	inline := map[string][]byte{}
	for _, c := range s.Consumers {
		b := root.AppendNewBlock("consumer", []string{c.Name}).Body()
		setStr(b, "queue", c.Queue)
		switch {
		case c.Plugin != "" && c.PluginWasm != nil:
			problems = append(problems, fmt.Sprintf("consumer %q: give Plugin (a file) or PluginWasm (the module's bytes), not both", c.Name))
		case c.PluginWasm != nil:
			inline[c.Name] = c.PluginWasm
		default:
			setStr(b, "plugin", c.Plugin)
		}
		setInt(b, "concurrency", c.Concurrency)
		setDur(b, "timeout", c.Timeout)
		if c.MemoryLimit != 0 {
			b.SetAttributeValue("memory_limit", cty.NumberUIntVal(c.MemoryLimit))
		}
		setInt(b, "batch", c.Batch)
		if len(c.Config) > 0 {
			b.SetAttributeValue("config", strMap(c.Config))
		}
		if len(c.Publish) > 0 {
			b.SetAttributeValue("publish", strList(c.Publish))
		}
		if len(c.KV) > 0 {
			b.SetAttributeValue("kv", strList(c.KV))
		}
		setInt(b, "log_rate", c.LogRate)
		setInt(b, "max_call_depth", c.MaxCallDepth)
		setStr(b, "isolation", c.Isolation)
		if h := c.HTTP; h != nil {
			hb := b.AppendNewBlock("http", nil).Body()
			hb.SetAttributeValue("allow", strListOrEmpty(h.Allow))
			setDur(hb, "timeout", h.Timeout)
			if h.MaxResponseSize != 0 {
				hb.SetAttributeValue("max_response_size", cty.NumberUIntVal(h.MaxResponseSize))
			}
			setInt(hb, "max_requests", h.MaxRequests)
			setInt(hb, "max_connections", h.MaxConnections)
			if len(h.Headers) > 0 {
				hb.SetAttributeValue("headers", strMap(h.Headers))
			}
			setStr(hb, "idempotency_header", h.IdempotencyHeader)
		}
		c.Throttle.write(b)
		if w := c.WASI; w.Env != nil || len(w.Dirs) > 0 {
			wb := b.AppendNewBlock("wasi", nil).Body()
			if w.Env != nil {
				wb.SetAttributeValue("env", strMap(w.Env))
			}
			for _, dir := range w.Dirs {
				db := wb.AppendNewBlock("dir", []string{dir.Guest}).Body()
				setStr(db, "host", dir.Host)
				if dir.ReadWrite {
					db.SetAttributeValue("read_write", cty.True)
				}
			}
		}
	}
	writeSchedules(root, s.Schedules)
	for _, k := range s.KV {
		b := root.AppendNewBlock("kv", []string{k.Name}).Body()
		setStr(b, "engine", k.Engine)
		if k.MaxValueSize != 0 {
			b.SetAttributeValue("max_value_size", cty.NumberUIntVal(k.MaxValueSize))
		}
	}
	if len(problems) > 0 {
		return nil, nil, &Error{Problems: problems}
	}
	return f.Bytes(), inline, nil
}

func orStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func setStr(b *hclwrite.Body, name, v string) {
	if v != "" {
		b.SetAttributeValue(name, cty.StringVal(v))
	}
}

// setInt writes a non-zero int; a negative one (a sentinel) as 0, and a
// value HCL would refuse as it is, so the parser reports it.
func setInt(b *hclwrite.Body, name string, v int) {
	switch {
	case v == -1:
		b.SetAttributeValue(name, cty.NumberIntVal(0))
	case v != 0:
		b.SetAttributeValue(name, cty.NumberIntVal(int64(v)))
	}
}

func setDur(b *hclwrite.Body, name string, d time.Duration) {
	switch {
	case d == -1:
		b.SetAttributeValue(name, cty.StringVal("0s"))
	case d != 0:
		b.SetAttributeValue(name, cty.StringVal(d.String()))
	}
}

// strMap is a map of strings as an HCL object, which the decoder reads
// as HCL's own `{ k = "v" }` (an empty one included).
func strMap(m map[string]string) cty.Value {
	vs := make(map[string]cty.Value, len(m))
	for k, v := range m {
		vs[k] = cty.StringVal(v)
	}
	return cty.ObjectVal(vs)
}

func strListOrEmpty(ss []string) cty.Value {
	if len(ss) == 0 {
		return cty.ListValEmpty(cty.String)
	}
	return strList(ss)
}

func strList(ss []string) cty.Value {
	vs := make([]cty.Value, len(ss))
	for i, s := range ss {
		vs[i] = cty.StringVal(s)
	}
	return cty.ListVal(vs)
}

// ctyValue converts an engine setting.
func ctyValue(v any) (cty.Value, error) {
	switch v := v.(type) {
	case time.Duration:
		return cty.StringVal(v.String()), nil
	case []string:
		if len(v) == 0 {
			return cty.ListValEmpty(cty.String), nil
		}
		return strList(v), nil
	case string, bool, int, int64, uint64, float64:
		ty, err := gocty.ImpliedType(v)
		if err != nil {
			return cty.NilVal, err
		}
		return gocty.ToCtyValue(v, ty)
	}
	return cty.NilVal, fmt.Errorf("unsupported type %T (use string, bool, int, int64, uint64, float64, time.Duration or []string)", v)
}

// specError turns diagnostics on the written HCL into problems that name
// their block, since the Spec has no lines to point at.
func specError(src []byte, diags hcl.Diagnostics) error {
	hf, _ := hclsyntax.ParseConfig(src, specFile, hcl.InitialPos)
	var blocks hclsyntax.Blocks
	if body, ok := hf.Body.(*hclsyntax.Body); ok {
		blocks = body.Blocks
	}
	e := &Error{}
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		where := ""
		if d.Subject != nil {
			for _, b := range blocks {
				r := b.Range()
				if r.ContainsOffset(d.Subject.Start.Byte) {
					where = b.Type
					for _, l := range b.Labels {
						where += fmt.Sprintf(" %q", l)
					}
					where += ": "
					break
				}
			}
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		e.Problems = append(e.Problems, where+msg)
	}
	if len(e.Problems) == 0 {
		return errors.New("config: invalid") // unreachable: HasErrors held
	}
	return e
}
