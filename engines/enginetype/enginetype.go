// Package enginetype describes a kind of engine the runtime can build from
// an HCL engine block: its name, where it is available, what it shares, its
// settings decoder and how to open it. Every engine package exports one
// Type() returning such a value, and the runtime is handed a list of them
// (package engines/builtin holds qrun's own list); there is no registry
// that engines add themselves to.
//
// It is a package of its own, rather than part of package engines, so that
// the engine contract stays free of configuration: code that implements or
// drives engines.Engine (the conformance suite, a Go program embedding an
// engine) does not pull in HCL, and the runtime's config layer can depend on
// this small package without depending on any engine.
package enginetype

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// Type is one kind of engine, named by an engine block's type attribute.
type Type struct {
	// Name is the value of the type attribute, e.g. "disk".
	Name string
	// Platforms lists the GOOS values the engine works on; empty means
	// every platform qrun builds for. A block naming the type elsewhere is
	// refused at validate (see Available), so an operator learns it from
	// `qrun validate` rather than from a failing start.
	Platforms []string
	// Shared says that another process may open the engine while qrun runs
	// and produce into its queues (qrun send): its queues live outside the
	// qrun process and nothing in it assumes sole ownership.
	Shared bool
	// Decode decodes and validates an engine block's settings (the block
	// minus its type attribute) without opening anything, reporting each
	// problem at its source range. The settings are only usable when the
	// diagnostics hold no error.
	Decode func(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics)
}

// Settings are an engine block's decoded and validated settings: enough to
// open the engine, and to answer what the config needs to know about it
// before anything is opened. A Settings value may also implement Topics
// and QueueNamer.
type Settings interface {
	// Open builds the engine.
	Open(ctx context.Context, o OpenOptions) (engines.Engine, error)
}

// OpenFunc is Settings that only open, for an engine type without settings
// of its own, such as a test's stand-in engine.
type OpenFunc func(ctx context.Context, o OpenOptions) (engines.Engine, error)

// Open implements Settings.
func (f OpenFunc) Open(ctx context.Context, o OpenOptions) (engines.Engine, error) { return f(ctx, o) }

// WithoutSettings is a Type whose blocks hold no settings (any attribute is
// an error) and whose engine open builds: for a stand-in engine in tests,
// or an embedder's engine configured in Go.
func WithoutSettings(name string, open OpenFunc) Type {
	return Type{Name: name, Decode: func(body hcl.Body, _ *hcl.EvalContext) (Settings, hcl.Diagnostics) {
		_, diags := body.Content(&hcl.BodySchema{})
		return open, diags
	}}
}

// Topics is implemented by settings that declare topics: queue names
// that are published to, never consumed (a consumer reads a topic's
// subscriptions).
type Topics interface {
	// Topics lists the topic names.
	Topics() []string
}

// QueueNamer is implemented by settings that limit queue names beyond
// qrun's own rule, such as an engine that makes a file or kernel name of a
// prefix and the queue name.
type QueueNamer interface {
	// CheckQueueName reports why the engine cannot hold a queue called
	// name, or nil. A name is never shortened or altered to fit.
	CheckQueueName(name string) error
}

// Capable is implemented by settings that know, before anything is opened,
// what an engine opened with them offers: the runtime refuses at validate a
// queue that asks for a missing capability (ordered delivery on an engine
// without Ordering), instead of failing when the queue is opened at start.
// MaxMessageSize may be zero when the limit is only known once open (a
// kernel setting, say).
type Capable interface {
	// Capabilities are those of an engine opened with these settings.
	Capabilities() engines.Capabilities
}

// OpenOptions is what the runtime hands an engine when it opens one.
type OpenOptions struct {
	// Name of the engine block.
	Name string
	// DataDir is where an engine that stores files keeps them: the
	// runtime's data directory joined with the engine's name.
	DataDir string
	// Logger receives the engine's logs; never nil.
	Logger *zap.Logger
	// Events counts the engine's errors and reconnects in the metrics;
	// nil counts nothing.
	Events engines.Events
	// Producer is set when the engine is opened only to enqueue into one
	// queue (qrun send): an engine may then skip what a consuming runtime
	// needs (postgres migrates nothing and starts no listener, reaper or
	// ack batching).
	Producer bool
}

// Opened returns what an engine's constructor returned as an
// engines.Engine: the engine, or nil and the error, so that a failed
// constructor's nil pointer never becomes a non-nil interface.
func Opened[E engines.Engine](e E, err error) (engines.Engine, error) {
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Available reports whether t works on goos (a GOOS value), as an error
// that says where it does.
func (t Type) Available(goos string) error {
	if len(t.Platforms) == 0 || slices.Contains(t.Platforms, goos) {
		return nil
	}
	names := make([]string, len(t.Platforms))
	for i, p := range t.Platforms {
		names[i] = platformName(p)
	}
	return &UnavailableError{Type: t.Name, GOOS: goos, Platforms: strings.Join(names, ", ")}
}

// UnavailableError is a type that does not work on the platform qrun runs on.
type UnavailableError struct {
	Type      string
	GOOS      string
	Platforms string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("engine type %q is available on %s only, not on %s", e.Type, e.Platforms, platformName(e.GOOS))
}

// Unwrap lets errors.Is(err, engines.ErrUnsupported) match.
func (e *UnavailableError) Unwrap() error { return engines.ErrUnsupported }

func platformName(goos string) string {
	switch goos {
	case "linux":
		return "Linux"
	case "darwin":
		return "macOS"
	case "windows":
		return "Windows"
	}
	return goos
}

// Define builds a Type's Decode from an engine's own typed decoder, so an
// engine package writes its decoder with its concrete settings type.
func Define[S Settings](name string, decode func(hcl.Body, *hcl.EvalContext) (S, hcl.Diagnostics)) Type {
	return Type{Name: name, Decode: func(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics) {
		return decode(body, ctx)
	}}
}

// SlotKeeping is implemented by settings whose engine is a
// engines.SlotKeeper, so validate can refuse concurrency_scope = "global"
// on an engine that keeps no shared slots before anything is opened.
type SlotKeeping interface {
	// KeepsSlots reports whether an engine opened with these settings
	// implements engines.SlotKeeper.
	KeepsSlots() bool
}
