package server

import (
	"context"
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
)

// EngineOptions is what an engine type gets to build an engine.
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
	// queue (SendDirect): an engine type may then skip what a consuming
	// runtime needs (postgres migrates nothing and starts no listener,
	// reaper or ack batching).
	Producer bool
}

// EngineType is one kind of engine the runtime can build from HCL.
type EngineType struct {
	// Validate checks an engine block's settings without opening anything,
	// reporting problems with their source ranges.
	Validate func(body hcl.Body, eval *hcl.EvalContext) hcl.Diagnostics
	// Open builds the engine; Validate has already passed.
	Open func(ctx context.Context, o EngineOptions) (engines.Engine, error)
	// Topics lists the topics an engine block declares (names that are
	// published to, never consumed); nil for a type without topics.
	Topics func(body hcl.Body, eval *hcl.EvalContext) []string
	// QueueNameRule returns, for an engine block's settings, what it
	// requires of a queue name beyond qrun's own rule (see
	// config.QueueNameChecker); nil, or a nil result, accepts every name.
	QueueNameRule func(body hcl.Body, eval *hcl.EvalContext) func(name string) error
	// Shared says that another process may open the engine while qrun
	// runs and produce into its queues (see SendDirect): its queues live
	// outside the qrun process and nothing in it assumes sole ownership.
	Shared bool
}

// Registry maps engine type names (the `type` attribute) to engine types.
// It is a value: each runtime, and each test, builds its own.
type Registry struct {
	types map[string]EngineType
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{types: make(map[string]EngineType)} }

// Register adds or replaces an engine type.
func (r *Registry) Register(name string, t EngineType) { r.types[name] = t }

// EngineTypes lists the registered type names, sorted.
func (r *Registry) EngineTypes() []string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ValidateEngine implements config.EngineValidator.
func (r *Registry) ValidateEngine(typ string, body hcl.Body, eval *hcl.EvalContext) hcl.Diagnostics {
	t, ok := r.types[typ]
	if !ok {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Unknown engine type",
			Detail:   fmt.Sprintf("Engine type %q is not known; this qrun has %v.", typ, r.EngineTypes()),
		}}
	}
	if t.Validate == nil {
		return nil
	}
	return t.Validate(body, eval)
}

// Topics implements config.TopicLister.
func (r *Registry) Topics(typ string, body hcl.Body, eval *hcl.EvalContext) []string {
	if t, ok := r.types[typ]; ok && t.Topics != nil {
		return t.Topics(body, eval)
	}
	return nil
}

// QueueNameRule implements config.QueueNameChecker.
func (r *Registry) QueueNameRule(typ string, body hcl.Body, eval *hcl.EvalContext) func(name string) error {
	if t, ok := r.types[typ]; ok && t.QueueNameRule != nil {
		return t.QueueNameRule(body, eval)
	}
	return nil
}

func (r *Registry) open(ctx context.Context, typ string, o EngineOptions) (engines.Engine, error) {
	t, ok := r.types[typ]
	if !ok {
		return nil, fmt.Errorf("unknown engine type %q", typ)
	}
	return t.Open(ctx, o)
}

// decodedType builds an EngineType from an engine's settings decoder and
// its constructor: Validate runs the decoder alone, and Open decodes again
// (the body is the same one Validate passed) and builds the engine.
func decodedType[S any](decode func(hcl.Body, *hcl.EvalContext) (S, hcl.Diagnostics), build func(context.Context, S, EngineOptions) (engines.Engine, error)) EngineType {
	return EngineType{
		Validate: func(body hcl.Body, eval *hcl.EvalContext) hcl.Diagnostics {
			_, diags := decode(body, eval)
			return diags
		},
		Open: func(ctx context.Context, o EngineOptions) (engines.Engine, error) {
			s, diags := decode(o.Body, o.Eval)
			if diags.HasErrors() {
				return nil, diags
			}
			return build(ctx, s, o)
		},
	}
}

// Builtin returns a registry with every engine compiled into qrun.
func Builtin() *Registry {
	r := NewRegistry()
	r.Register("memory", memoryType())
	r.Register("disk", diskType())
	r.Register("postgres", postgresType())
	r.Register("posixmq", posixmqType())
	r.Register("shm", shmType())
	return r
}

// memorySettings are the memory engine's HCL settings.
type memorySettings struct {
	MaxMessageSize *int `hcl:"max_message_size,optional"`
}

func memoryType() EngineType {
	decode := func(body hcl.Body, eval *hcl.EvalContext) (memorySettings, hcl.Diagnostics) {
		var s memorySettings
		diags := gohcl.DecodeBody(body, eval, &s)
		if s.MaxMessageSize != nil && *s.MaxMessageSize < 0 {
			d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid max_message_size", Detail: "max_message_size must be zero (unlimited) or positive."}
			if attrs, _ := body.JustAttributes(); attrs["max_message_size"] != nil {
				d.Subject = attrs["max_message_size"].Expr.Range().Ptr()
			}
			diags = diags.Append(d)
		}
		return s, diags
	}
	return decodedType(decode, func(_ context.Context, s memorySettings, _ EngineOptions) (engines.Engine, error) {
		var opts memory.Options
		if s.MaxMessageSize != nil {
			opts.MaxMessageSize = *s.MaxMessageSize
		}
		return memory.New(opts), nil
	})
}
