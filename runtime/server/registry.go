package server

import (
	"context"
	"fmt"
	"runtime"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/builtin"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/runtime/config"
)

// EngineOptions is what the server asks the registry to open: an engine
// block and where its engine lives.
type EngineOptions struct {
	// Name of the engine block.
	Name string
	// Body holds the engine's own settings (everything but `type`).
	Body hcl.Body
	// Eval evaluates expressions in Body (it knows env()).
	Eval *hcl.EvalContext
	// DataDir is the runtime's data directory; an engine that stores files
	// keeps them under DataDir/<engine name>.
	DataDir string
	Logger  *zap.Logger
	// Events counts the engine's errors and reconnects in the metrics.
	Events EngineEvents
	// Producer is set when the engine is opened only to enqueue into one
	// queue (SendDirect); see enginetype.OpenOptions.
	Producer bool
}

// Registry holds the engine types (the `type` attribute's values) a
// runtime can build. It is a value made from a list: each runtime, and
// each test, builds its own, and Builtin makes one of engines/builtin's
// list.
type Registry struct {
	types map[string]enginetype.Type
	goos  string
}

// NewRegistry returns a registry of types for the platform qrun runs on.
// A later type replaces an earlier one of the same name.
func NewRegistry(types ...enginetype.Type) *Registry {
	return NewRegistryFor(runtime.GOOS, types...)
}

// NewRegistryFor returns a registry of types as a qrun built for goos (a
// GOOS value) sees them: a type unavailable there is refused at validate.
// Tests use it to check another platform's diagnostics.
func NewRegistryFor(goos string, types ...enginetype.Type) *Registry {
	r := &Registry{types: make(map[string]enginetype.Type, len(types)), goos: goos}
	for _, t := range types {
		r.types[t.Name] = t
	}
	return r
}

// Builtin returns a registry of every engine type compiled into qrun
// (engines/builtin.Types).
func Builtin() *Registry { return NewRegistry(builtin.Types()...) }

// EngineTypes lists the registered type names, sorted.
func (r *Registry) EngineTypes() []string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// EngineAvailable implements config.EngineAvailability.
func (r *Registry) EngineAvailable(typ string) error {
	if t, ok := r.types[typ]; ok {
		return t.Available(r.goos)
	}
	return nil
}

// DecodeEngine implements config.EngineValidator: it decodes the block
// once and reads the facts off the engine's settings.
func (r *Registry) DecodeEngine(typ string, body hcl.Body, eval *hcl.EvalContext) (config.EngineFacts, hcl.Diagnostics) {
	s, diags := r.decode(typ, body, eval)
	var facts config.EngineFacts
	if diags.HasErrors() {
		return facts, diags
	}
	if t, ok := s.(enginetype.Topics); ok {
		facts.Topics = t.Topics()
	}
	if n, ok := s.(enginetype.QueueNamer); ok {
		facts.QueueNameRule = n.CheckQueueName
	}
	if c, ok := s.(enginetype.Capable); ok {
		caps := c.Capabilities()
		facts.Capabilities = &caps
	}
	if k, ok := s.(enginetype.SlotKeeping); ok {
		facts.KeepsSlots = k.KeepsSlots()
	}
	return facts, diags
}

func (r *Registry) decode(typ string, body hcl.Body, eval *hcl.EvalContext) (enginetype.Settings, hcl.Diagnostics) {
	t, ok := r.types[typ]
	if !ok {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Unknown engine type",
			Detail:   fmt.Sprintf("Engine type %q is not known; this qrun has %v.", typ, r.EngineTypes()),
		}}
	}
	if t.Decode == nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Engine type without settings",
			Detail: fmt.Sprintf("Engine type %q has no settings decoder.", typ)}}
	}
	return t.Decode(body, eval)
}

// open decodes the engine block again (validate has passed on the same
// body) and opens its engine.
func (r *Registry) open(ctx context.Context, typ string, o EngineOptions) (engines.Engine, error) {
	t, ok := r.types[typ]
	if !ok {
		return nil, fmt.Errorf("unknown engine type %q", typ)
	}
	if err := t.Available(r.goos); err != nil {
		return nil, err
	}
	s, diags := r.decode(typ, o.Body, o.Eval)
	if diags.HasErrors() {
		return nil, diags
	}
	events := o.Events
	if events == nil {
		events = engines.NopEvents{}
	}
	logger := o.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	return s.Open(ctx, enginetype.OpenOptions{Name: o.Name, DataDir: o.DataDir, Logger: logger, Events: events, Producer: o.Producer})
}
