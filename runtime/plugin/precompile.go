package plugin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/qrun-dev/qrun/runtime/internal/interrupt"
	"github.com/tetratelabs/wazero"
	"go.uber.org/zap"
)

// Why compile in another process: a hot swap of a large guest (the Go
// example is 3.2 MB and takes a second of CPU to compile) on a host whose
// cores are busy delivering messages takes that second from the deliveries,
// whatever this process does with its own threads: a thread of lower
// priority that holds one of Go's Ps stalls every garbage collection until
// the kernel runs it again. A child process at low priority competes for
// CPU only with the kernel's fairness, holds no P of ours, and leaves its
// result in the shared compilation cache, from which the swap then loads
// the module in tens of milliseconds.

// DefaultPrecompileAbove is the module size from which HostOptions.Precompile
// is used when PrecompileAbove is zero.
const DefaultPrecompileAbove = 256 << 10

// PrecompileNice is the scheduling priority of a precompiling child: low
// enough that busy deliveries keep most of the CPU, high enough that the
// compile still finishes within seconds on a saturated host.
const PrecompileNice = 15

// precompile runs the host's Precompile for a large module, logging (not
// returning) a failure: the caller compiles in process either way.
func (h *Host) precompile(ctx context.Context, wasm []byte, log *zap.Logger) {
	o := h.opts
	if o.Precompile == nil || o.CacheDir == "" || len(wasm) < o.PrecompileAbove {
		return
	}
	if err := o.Precompile(ctx, o.CacheDir, wasm); err != nil {
		log.Warn("precompiling in a child process failed; compiling here", zap.Error(err))
	}
}

// Compile instruments and compiles wasm with the configuration Load uses,
// so that the machine code lands in the host's compilation cache under the
// key Load looks up, and discards the result. It is what a precompiling
// child runs.
func (h *Host) Compile(ctx context.Context, wasm []byte) error {
	code, err := interrupt.Instrument(wasm)
	if err != nil {
		return fmt.Errorf("plugin: compile: %w", err)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(h.cache))
	defer rt.Close(ctx)
	cm, err := rt.CompileModule(ctx, code)
	if err != nil {
		return fmt.Errorf("plugin: compile: %w", err)
	}
	return cm.Close(ctx)
}

// ChildPrecompiler returns a HostOptions.Precompile that runs exe with args
// plus "--cache DIR", feeding the module on standard input. qrun passes
// itself and "plugin precompile", which calls PrecompileChild.
func ChildPrecompiler(exe string, args ...string) func(ctx context.Context, cacheDir string, wasm []byte) error {
	return func(ctx context.Context, cacheDir string, wasm []byte) error {
		cmd := exec.CommandContext(ctx, exe, append(args, "--cache", cacheDir)...)
		cmd.Stdin = bytes.NewReader(wasm)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("plugin: precompile with %s: %w: %s", filepath.Base(exe), err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
}

// PrecompileChild is the child's half of ChildPrecompiler: it lowers the
// priority of this process, compiles the module read from wasm into
// cacheDir and returns.
func PrecompileChild(ctx context.Context, cacheDir string, wasm io.Reader) error {
	if err := LowerPriority(); err != nil {
		return err
	}
	b, err := io.ReadAll(wasm)
	if err != nil {
		return fmt.Errorf("plugin: precompile: read module: %w", err)
	}
	h, err := NewHost(ctx, HostOptions{CacheDir: cacheDir})
	if err != nil {
		return err
	}
	defer h.Close(ctx)
	return h.Compile(ctx, b)
}
