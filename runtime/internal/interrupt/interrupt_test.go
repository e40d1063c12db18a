package interrupt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// allFeatures is everything wazero 1.12 can be asked to accept.
const allFeatures = api.CoreFeaturesV2 | experimental.CoreFeaturesThreads |
	experimental.CoreFeaturesTailCall | experimental.CoreFeaturesExtendedConst |
	experimental.CoreFeaturesExceptionHandling | experimental.CoreFeaturesTypedFunctionReferences

func newRuntime(tb testing.TB) wazero.Runtime {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCoreFeatures(allFeatures))
	tb.Cleanup(func() { rt.Close(ctx) })
	return rt
}

func compiles(tb testing.TB, rt wazero.Runtime, wasm []byte) error {
	cm, err := rt.CompileModule(context.Background(), wasm)
	if err == nil {
		cm.Close(context.Background())
	}
	return err
}

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".wasm"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustInstrument(tb testing.TB, wasm []byte) []byte {
	tb.Helper()
	out, err := Instrument(wasm)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// repoModules lists every committed .wasm file of the repository.
func repoModules(tb testing.TB) []string {
	tb.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		tb.Fatal(err)
	}
	var files []string
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules" || d.Name() == "target" || d.Name() == "zig-cache" || d.Name() == ".zig-cache") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".wasm") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) < 40 {
		tb.Fatalf("found only %d .wasm files under %s", len(files), root)
	}
	return files
}

// TestRepositoryModulesCompile instruments every module in the repository:
// each one wazero compiles must still compile, and each one it refuses must
// stay refused.
func TestRepositoryModulesCompile(t *testing.T) {
	rt := newRuntime(t)
	for _, f := range repoModules(t) {
		wasm, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if testing.Short() && len(wasm) > 1<<20 {
			continue // the Go modules compile in a second each; the plugin tests cover them
		}
		before := compiles(t, rt, wasm)
		out, err := Instrument(wasm)
		var re *ReservedError
		if errors.As(err, &re) && strings.HasPrefix(filepath.Base(f), "reserved_") {
			continue // refused on purpose
		}
		if err != nil {
			if before == nil {
				t.Errorf("%s: wazero compiles it, Instrument refuses it: %v", f, err)
			}
			continue
		}
		if after := compiles(t, rt, out); (before == nil) != (after == nil) {
			t.Errorf("%s: compiles before: %v, after: %v", f, before, after)
		}
	}
}

func instantiate(tb testing.TB, rt wazero.Runtime, wasm []byte) api.Module {
	tb.Helper()
	ctx := context.Background()
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	_, err := rt.NewHostModuleBuilder("env").NewFunctionBuilder().
		WithFunc(func(ctx context.Context) {
			if c, ok := ctx.Value(startedKey{}).(chan struct{}); ok {
				close(c)
			}
		}).Export("started").Instantiate(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		tb.Fatal(err)
	}
	return mod
}

func call(tb testing.TB, mod api.Module, name string, args ...uint64) ([]uint64, error) {
	tb.Helper()
	f := mod.ExportedFunction(name)
	if f == nil {
		tb.Fatalf("no export %q", name)
	}
	return f.Call(context.Background(), args...)
}

func global(tb testing.TB, mod api.Module, name string) api.MutableGlobal {
	tb.Helper()
	g, ok := mod.ExportedGlobal(name).(api.MutableGlobal)
	if !ok {
		tb.Fatalf("no mutable global %q", name)
	}
	return g
}

// TestBehaviourUnchanged runs the functions of testdata/shapes.wat (branches
// to the function label, multi-value results, br_table, return inside
// blocks, loops, globals, a start function) before and after the pass.
func TestBehaviourUnchanged(t *testing.T) {
	wasm := readTestdata(t, "shapes")
	rt := newRuntime(t)
	plain := instantiate(t, rt, wasm)
	rt2 := newRuntime(t)
	inst := instantiate(t, rt2, mustInstrument(t, wasm))
	// The start function was moved: call it as the host does.
	if _, err := call(t, inst, StartExport); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fn   string
		args []uint64
	}{
		{"started", nil},
		{"brout", []uint64{0}}, {"brout", []uint64{1}}, {"brout", []uint64{7}},
		{"multi", []uint64{3}}, {"multi", []uint64{0}},
		{"table", []uint64{0}}, {"table", []uint64{1}}, {"table", []uint64{2}}, {"table", []uint64{9}},
		{"sum", []uint64{1000}},
		{"fib", []uint64{20}},
		{"counter", nil}, {"counter", nil},
	} {
		want, werr := call(t, plain, tc.fn, tc.args...)
		got, gerr := call(t, inst, tc.fn, tc.args...)
		if (werr == nil) != (gerr == nil) || len(want) != len(got) {
			t.Fatalf("%s%v: plain %v %v, instrumented %v %v", tc.fn, tc.args, want, werr, got, gerr)
		}
		for i := range want {
			if want[i] != got[i] {
				t.Fatalf("%s%v: plain %v, instrumented %v", tc.fn, tc.args, want, got)
			}
		}
	}
	// Every call balanced its depth.
	if d := global(t, inst, DepthExport).Get(); d != DefaultDepth {
		t.Fatalf("depth after balanced calls is %d, want %d", d, DefaultDepth)
	}
}

// TestStopFlag: with stop set, a loop traps within LoopPeriod iterations
// (sum, which calls nothing and so has no entry check, runs longer than
// that), a recursive call traps at entry, and clearing the flag lets the
// instance run again.
func TestStopFlag(t *testing.T) {
	rt := newRuntime(t)
	inst := instantiate(t, rt, mustInstrument(t, readTestdata(t, "shapes")))
	stop := global(t, inst, StopExport)
	stopNow(t, inst)
	for _, fn := range []string{"sum", "fib"} {
		if _, err := call(t, inst, fn, 10*LoopPeriod); err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("%s with stop set: %v, want a trap", fn, err)
		}
	}
	stop.Set(0)
	if _, err := call(t, inst, "fib", 10); err != nil {
		t.Fatal(err)
	}
}

// TestStopsRunaways sets the stop flag from another goroutine while the
// guest runs each kind of endless computation; the call must trap.
func TestStopsRunaways(t *testing.T) {
	rt := newRuntime(t)
	inst := instantiate(t, rt, mustInstrument(t, readTestdata(t, "runaway")))
	for _, fn := range []string{"spin", "tail", "mutual_tail"} {
		t.Run(fn, func(t *testing.T) {
			stop := global(t, inst, StopExport)
			stop.Set(0)
			started := make(chan struct{})
			done := make(chan error, 1)
			f := inst.ExportedFunction(fn)
			go func() {
				// The guest signals it runs by calling the host's "started"
				// import; the flag is set only after that.
				_, err := f.Call(context.WithValue(context.Background(), startedKey{}, started))
				done <- err
			}()
			<-started
			stopNow(t, inst)
			if err := <-done; err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Fatalf("%s: %v, want the stop trap", fn, err)
			}
		})
	}
}

type startedKey struct{}

// stopNow stops inst as the host's watchdog does: the stop flag, then the
// fuel to zero so that the next loop iteration or call reads it.
func stopNow(tb testing.TB, inst api.Module) {
	global(tb, inst, StopExport).Set(1)
	global(tb, inst, FuelExport).Set(0)
}

// TestSpinningGuestLetsGCRun: a guest in a tight loop must leave machine
// code now and then, or a garbage collection (which stops the world) would
// wait for it forever. Without the yield runtime.GC never returns and the
// test times out.
func TestSpinningGuestLetsGCRun(t *testing.T) {
	rt := newRuntime(t)
	inst := instantiate(t, rt, mustInstrument(t, readTestdata(t, "runaway")))
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := inst.ExportedFunction("spin").Call(context.WithValue(context.Background(), startedKey{}, started))
		done <- err
	}()
	<-started
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	stopNow(t, inst)
	if err := <-done; err == nil {
		t.Fatal("spin returned without a trap")
	}
}

// TestDepthBound: unbounded recursion traps at the bound instead of
// growing the stack, and the bound can be set per instance.
func TestDepthBound(t *testing.T) {
	rt := newRuntime(t)
	inst := instantiate(t, rt, mustInstrument(t, readTestdata(t, "runaway")))
	depth := global(t, inst, DepthExport)
	for _, limit := range []uint64{DefaultDepth, 100} {
		depth.Set(limit)
		res, err := call(t, inst, "recurse", 0)
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("recursion under limit %d: %v %v, want a trap", limit, res, err)
		}
		if got := depth.Get(); got != 0 {
			t.Fatalf("depth left after overflow: %d", got)
		}
		// Bounded recursion within the limit works: the deepest frame
		// count is limit (recurse_to n nests n+1 frames).
		depth.Set(limit)
		if _, err := call(t, inst, "recurse_to", limit-1); err != nil {
			t.Fatalf("recursion to %d under limit %d: %v", limit-1, limit, err)
		}
		if _, err := call(t, inst, "recurse_to", limit); err == nil {
			t.Fatalf("recursion to %d under limit %d did not trap", limit, limit)
		}
	}
}

// TestDepthAfterExceptions: frames unwound by exceptions do not leak depth.
// catch_table throws from 50 frames down and catches at the top (a
// try_table catch_all branching out of a block), n times; ten thousand of
// them would exhaust the default bound if the depth those frames took were
// not given back. wabt 1.0.32 cannot write try_table, and wazero refuses the
// legacy try, so the module is assembled here.
func TestDepthAfterExceptions(t *testing.T) {
	rt := newRuntime(t)
	inst := instantiate(t, rt, mustInstrument(t, exceptionModule()))
	for _, fn := range []string{"catch_table"} {
		if _, err := call(t, inst, fn, 10000); err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		if d := global(t, inst, DepthExport).Get(); d != DefaultDepth {
			t.Fatalf("%s: depth %d after balanced calls, want %d", fn, d, DefaultDepth)
		}
	}
}

// TestRefusals: reserved export names, references to the added globals, and
// undecodable instructions are refused, with the offset named.
func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		wasm []byte
		want any
	}{
		{"reserved export", readTestdata(t, "reserved_export"), &ReservedError{}},
		{"global past count", testModule(code(0x23, 0x01, 0x1a, 0x0b)), &ReservedError{}},
		{"global.set past count", testModule(code(0x41, 0x00, 0x24, 0x05, 0x0b)), &ReservedError{}},
		{"unknown opcode", testModule(code(0xd3, 0x0b)), &UnsupportedError{}},
		{"unknown misc", testModule(code(0xfc, 0x20, 0x0b)), &UnsupportedError{}},
		{"unknown simd", testModule(code(0xfd, 0x9a, 0x0b)), &UnsupportedError{}},
		{"truncated", testModule(code(0x41)), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Instrument(tc.wasm)
			switch w := tc.want.(type) {
			case *ReservedError:
				var re *ReservedError
				if !errors.As(err, &re) {
					t.Fatalf("got %v, want a ReservedError", err)
				}
			case *UnsupportedError:
				var ue *UnsupportedError
				if !errors.As(err, &ue) || ue.Offset == 0 || ue.Opcode == "" {
					t.Fatalf("got %v, want an UnsupportedError naming opcode and offset", err)
				}
			case error:
				if !errors.Is(err, w) {
					t.Fatalf("got %v, want %v", err, w)
				}
			}
			t.Log(err)
		})
	}
	if _, err := Instrument([]byte("nope")); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
}

// testModule is a module with one global (i32, mutable) and one function of type
// [] -> [] whose body is body.
func testModule(body []byte) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, 1, 4, 1, 0x60, 0, 0)                // type [] -> []
	b = append(b, 3, 2, 1, 0)                         // function 0: type 0
	b = append(b, 6, 6, 1, 0x7f, 1, 0x41, 0x00, 0x0b) // global 0
	b = append(b, 10, byte(len(body)+1), 1)           // code section
	return append(b, body...)
}

// code is a function body: no locals, then instrs.
func code(instrs ...byte) []byte {
	return append([]byte{byte(len(instrs) + 1), 0}, instrs...)
}

func sec(id byte, payload ...byte) []byte {
	return append(appendU32([]byte{id}, uint32(len(payload))), payload...)
}

// exceptionModule: deep(n) throws tag 0 at depth n; catch_table(n) calls
// deep(50) inside try_table (catch_all -> the enclosing block), n times.
func exceptionModule() []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, sec(1, 2, 0x60, 0, 0, 0x60, 1, 0x7f, 0)...) // types: []->[], [i32]->[]
	b = append(b, sec(3, 2, 1, 1)...)                         // deep, catch_table: [i32]->[]
	b = append(b, sec(13, 1, 0, 0)...)                        // tag 0: type 0
	b = append(b, sec(7, 1, 11, 'c', 'a', 't', 'c', 'h', '_', 't', 'a', 'b', 'l', 'e', 0, 1)...)
	deep := []byte{0, // no locals
		0x20, 0, 0x45, 0x04, 0x40, 0x08, 0, 0x0b, // if n == 0 throw 0
		0x20, 0, 0x41, 1, 0x6b, 0x10, 0, 0x0b} // deep(n-1)
	catch := []byte{0,
		0x03, 0x40, // loop
		0x02, 0x40, // block
		0x1f, 0x40, 1, 0x02, 0, // try_table (catch_all 0)
		0x41, 50, 0x10, 0, // deep(50)
		0x0b,                                     // end try_table
		0x0b,                                     // end block
		0x20, 0, 0x41, 1, 0x6b, 0x22, 0, 0x0d, 0, // br_if loop (n = n-1)
		0x0b, 0x0b}
	code := []byte{2, byte(len(deep))}
	code = append(code, deep...)
	code = append(code, byte(len(catch)))
	code = append(code, catch...)
	return append(b, sec(10, code...)...)
}

// TestVersionSection: the pass's version is part of the output, so the
// compilation cache keys on it.
func TestVersionSection(t *testing.T) {
	out := mustInstrument(t, readTestdata(t, "shapes"))
	tail := appendU32(appendU32(nil, uint32(len(VersionSection))), 0)
	tail = append(tail[:len(tail)-1], VersionSection...)
	tail = appendU32(tail, Version)
	if !strings.HasSuffix(string(out), string(tail)) {
		t.Fatal("output does not end with the version section")
	}
}

// TestCommittedWasmMatchesWat keeps testdata's .wasm in step with its .wat
// when wat2wasm is installed.
func TestCommittedWasmMatchesWat(t *testing.T) {
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Skip("wat2wasm not installed")
	}
	dir := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "testdata", "OUT="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	wats, _ := filepath.Glob("testdata/*.wat")
	for _, w := range wats {
		name := strings.TrimSuffix(filepath.Base(w), ".wat")
		got, err := os.ReadFile(filepath.Join(dir, name+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(readTestdata(t, name)) {
			t.Errorf("testdata/%s.wasm is stale; run go generate ./runtime/internal/interrupt/", name)
		}
	}
}

// TestLeafUnchanged: a function that neither loops nor calls is kept byte
// for byte (it needs no check), so tiny helpers cost nothing extra.
func TestLeafUnchanged(t *testing.T) {
	out := mustInstrument(t, testModule(code(0x01, 0x0b)))
	if !bytes.Contains(out, []byte{secCode, 5, 1, 3, 0, 0x01, 0x0b}) {
		t.Fatalf("leaf body changed: % x", out)
	}
	out = mustInstrument(t, testModule(code(0x03, 0x40, 0x0b, 0x0b)))
	if bytes.Contains(out, []byte{secCode, 6, 1, 4, 0, 0x03, 0x40, 0x0b, 0x0b}) {
		t.Fatal("a function with a loop was not instrumented")
	}
}
