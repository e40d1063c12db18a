package plugin

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// precompileChild is the argument that makes this test binary act as the
// precompiling child (what `qrun plugin precompile` is in the real binary).
const precompileChild = "precompile-child"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == precompileChild {
		os.Exit(runPrecompileChild(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func runPrecompileChild(args []string) int {
	if len(args) != 2 || args[0] != "--cache" {
		fmt.Fprintln(os.Stderr, "want --cache DIR")
		return 2
	}
	if err := PrecompileChild(context.Background(), args[1], os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// countFiles counts the regular files below dir.
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	var walk func(string)
	walk = func(d string) {
		es, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.IsDir() {
				walk(d + "/" + e.Name())
			} else {
				n++
			}
		}
	}
	walk(dir)
	return n
}

// TestSwapPrecompilesInAChild checks that a hot swap of a large module is
// compiled by a child process into the shared cache before it is loaded,
// that the loaded version then serves, and that a failing child only costs
// a warning: the version is compiled in process instead.
func TestSwapPrecompilesInAChild(t *testing.T) {
	t.Parallel()
	for _, childFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("child_fails=%v", childFails), func(t *testing.T) {
			t.Parallel()
			cache := t.TempDir()
			core, logs := observedLogger(zapcore.WarnLevel)
			var calls atomic.Int32
			var filled atomic.Bool
			var afterChild atomic.Int64
			child := ChildPrecompiler(os.Args[0], precompileChild)
			if childFails {
				child = ChildPrecompiler(os.Args[0], precompileChild, "--unexpected")
			}
			h, err := NewHost(context.Background(), HostOptions{
				CacheDir: cache, Logger: core,
				PrecompileAbove: 1, // every module, so the test's small ones qualify
				Precompile: func(ctx context.Context, dir string, wasm []byte) error {
					calls.Add(1)
					before := countFiles(t, dir)
					err := child(ctx, dir, wasm)
					n := countFiles(t, dir)
					filled.Store(n > before)
					afterChild.Store(int64(n))
					return err
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.Close(context.Background()) })
			l, _ := loadLive(t, h, "ok", LiveOptions{})
			if calls.Load() != 0 {
				t.Fatalf("the first load precompiled %d times; only swaps should", calls.Load())
			}
			if err := l.Swap(context.Background(), readWasm(t, "ack")); err != nil {
				t.Fatalf("Swap: %v", err)
			}
			if calls.Load() != 1 {
				t.Fatalf("Precompile called %d times for one swap, want 1", calls.Load())
			}
			warned := logs.FilterMessage("precompiling in a child process failed; compiling here").Len() == 1
			if childFails {
				if !warned || filled.Load() {
					t.Fatalf("failing child: warned=%v, cache filled=%v; want a warning and no cache entry from it", warned, filled.Load())
				}
			} else if warned || !filled.Load() {
				t.Fatalf("child: warned=%v, cache filled=%v; want the child to add the module to the cache", warned, filled.Load())
			} else if n := countFiles(t, cache); int64(n) != afterChild.Load() {
				// The load found the child's entry: it compiled nothing and
				// so wrote nothing. A key mismatch would add a second entry.
				t.Fatalf("the cache grew from %d to %d files after the child: the load compiled again instead of using the child's result", afterChild.Load(), n)
			}
			li := liveInstance(t, l)
			if r := li.Handle(context.Background(), delivery("x", nil), time.Now()); r.Err != nil {
				t.Fatalf("the swapped-in version does not serve: %v", r.Err)
			}
		})
	}
}
