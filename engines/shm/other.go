//go:build !linux

package shm

import (
	"context"
	"fmt"

	"github.com/qrun-dev/qrun/engines"
)

// errNotLinux is what every call returns off Linux: the rings wait on
// Linux futexes in /dev/shm segments.
var errNotLinux = fmt.Errorf("shm: shared-memory rings need Linux: %w", engines.ErrUnsupported)

// Engine is unavailable off Linux.
type Engine struct{}

// New fails off Linux.
func New(Options) (*Engine, error) { return nil, errNotLinux }

// Open fails off Linux.
func (*Engine) Open(context.Context, engines.QueueSpec) (engines.Queue, error) {
	return nil, errNotLinux
}

// Capabilities is empty off Linux.
func (*Engine) Capabilities() engines.Capabilities { return engines.Capabilities{} }

// Close does nothing off Linux.
func (*Engine) Close() error { return nil }
