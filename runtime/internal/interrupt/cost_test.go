package interrupt

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// The conformance modules' trivial delivery (body "verdict:0", as
// plugins/conformance BenchmarkHandle sends it) run in plain wazero with
// the qrun imports stubbed, before and after the pass: what the pass costs
// each language, apart from qrun's own work around a call.

var costLanguages = []string{"c", "assemblyscript", "rust", "zig", "wat"}

const trivialBody = "verdict:0"

func conformanceModule(tb testing.TB, lang string) []byte {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("../../../plugins/conformance/%s/conformance.wasm", lang))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// guest is a conformance module instantiated with stub host functions,
// initialised, with a buffer holding the trivial body.
type guest struct {
	mod    api.Module
	handle api.Function
	stack  []uint64
	ptr    uint32
}

func newGuest(tb testing.TB, wasm []byte) *guest {
	tb.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	tb.Cleanup(func() { rt.Close(ctx) })
	cm, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		tb.Fatal(err)
	}
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	// Every qrun function returns 0: none is called on the trivial path
	// except what an SDK asks at init (config, which is then empty).
	stub := api.GoModuleFunc(func(_ context.Context, _ api.Module, stack []uint64) {
		if len(stack) > 0 {
			stack[0] = 0
		}
	})
	hb := rt.NewHostModuleBuilder("qrun")
	for _, f := range cm.ImportedFunctions() {
		if m, name, _ := f.Import(); m == "qrun" {
			hb.NewFunctionBuilder().WithGoModuleFunction(stub, f.ParamTypes(), f.ResultTypes()).Export(name)
		}
	}
	if _, err := hb.Instantiate(ctx); err != nil {
		tb.Fatal(err)
	}
	mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		tb.Fatal(err)
	}
	for _, name := range []string{StartExport, "_start", "_initialize", "qrun_init"} {
		if f := mod.ExportedFunction(name); f != nil {
			if _, err := f.Call(ctx); err != nil {
				tb.Fatalf("%s: %v", name, err)
			}
		}
	}
	res, err := mod.ExportedFunction("qrun_alloc").Call(ctx, 256)
	if err != nil || res[0] == 0 {
		tb.Fatal("qrun_alloc", res, err)
	}
	g := &guest{mod: mod, handle: mod.ExportedFunction("qrun_handle"), stack: make([]uint64, 2), ptr: uint32(res[0])}
	if !mod.Memory().Write(g.ptr, []byte(trivialBody)) {
		tb.Fatal("write out of range")
	}
	return g
}

// deliver makes one trivial delivery, as BenchmarkRawCall does: the body
// written, qrun_handle called.
func (g *guest) deliver(tb testing.TB) {
	g.mod.Memory().Write(g.ptr, []byte(trivialBody))
	g.stack[0], g.stack[1] = uint64(g.ptr), uint64(len(trivialBody))
	if err := g.handle.CallWithStack(context.Background(), g.stack); err != nil || g.stack[0] != 0 {
		tb.Fatal(err, g.stack[0])
	}
}

// spent is how much fuel n deliveries spend, fuel started at 1<<30 so it
// never runs out (and the yield, which resets it, never happens).
func spent(tb testing.TB, g *guest, n int) uint64 {
	fuel := global(tb, g.mod, FuelExport)
	fuel.Set(1 << 30)
	for i := 0; i < n; i++ {
		g.deliver(tb)
	}
	return (1<<30 - fuel.Get()) / uint64(n)
}

// deliveryCounts is what one trivial delivery of a language executes:
// function calls (leaves included), loop iterations, and the function
// entries the pass checks.
type deliveryCounts struct{ calls, loops, checked uint64 }

func countDelivery(tb testing.TB, lang string) deliveryCounts {
	wasm := conformanceModule(tb, lang)
	run := func(c counting) uint64 {
		out, err := instrument(wasm, c)
		if err != nil {
			tb.Fatal(err)
		}
		g := newGuest(tb, out)
		g.deliver(tb) // anything done once
		return spent(tb, g, 10)
	}
	calls := run(counting{calls: true})
	return deliveryCounts{
		calls:   calls,
		loops:   run(counting{calls: true, loops: true}) - calls,
		checked: run(counting{}),
	}
}

// TestCountingHook: the counting modes count what they say, on functions
// whose counts are known: sum(1000) is one call and 1000 loop iterations,
// fib(10) is 177 calls. Without the hook, sum (a loop, no call, so no
// recursion) spends no fuel at entry.
func TestCountingHook(t *testing.T) {
	wasm := readTestdata(t, "shapes")
	count := func(c counting, fn string, arg uint64) uint64 {
		rt := newRuntime(t)
		inst := instantiate(t, rt, func() []byte {
			out, err := instrument(wasm, c)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}())
		fuel := global(t, inst, FuelExport)
		fuel.Set(1 << 30)
		if _, err := call(t, inst, fn, arg); err != nil {
			t.Fatal(err)
		}
		return 1<<30 - fuel.Get()
	}
	for _, tc := range []struct {
		c    counting
		fn   string
		arg  uint64
		want uint64
	}{
		{counting{}, "sum", 1000, 0},
		{counting{}, "fib", 10, 177},
		{counting{calls: true, loops: true}, "sum", 1000, 1001},
		{counting{calls: true}, "fib", 10, 177},
		{counting{entries: true}, "sum", 1000, 1},
	} {
		if got := count(tc.c, tc.fn, tc.arg); got != tc.want {
			t.Errorf("%+v %s(%d): fuel spent %d, want %d", tc.c, tc.fn, tc.arg, got, tc.want)
		}
	}
}

// TestDeliveryCounts logs, per language, what a trivial delivery executes.
// It asserts only what holds by construction: the pass checks no more
// entries than there are calls.
func TestDeliveryCounts(t *testing.T) {
	for _, lang := range costLanguages {
		c := countDelivery(t, lang)
		t.Logf("%-15s calls %4d  checked entries %4d  loop iterations %5d", lang, c.calls, c.checked, c.loops)
		if c.checked > c.calls {
			t.Errorf("%s: %d checked entries for %d calls", lang, c.checked, c.calls)
		}
	}
}

// BenchmarkDelivery is the trivial delivery per language in plain wazero,
// "raw" the module as built, "instrumented" after the pass, "every-entry"
// after the pass as version 1 made it, with an entry check in every
// function that loops or calls; the ratios to raw are the pass's cost for
// the language. The counts are reported as metrics (checked/op: entries
// checked by the pass as it is).
func BenchmarkDelivery(b *testing.B) {
	for _, lang := range costLanguages {
		wasm := conformanceModule(b, lang)
		inst := mustInstrument(b, wasm)
		every, err := instrument(wasm, counting{entries: true})
		if err != nil {
			b.Fatal(err)
		}
		c := countDelivery(b, lang)
		for _, tc := range []struct {
			name string
			wasm []byte
		}{{"raw", wasm}, {"instrumented", inst}, {"every-entry", every}} {
			b.Run(lang+"/"+tc.name, func(b *testing.B) {
				g := newGuest(b, tc.wasm)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					g.deliver(b)
				}
				b.ReportMetric(float64(c.calls), "calls/op")
				b.ReportMetric(float64(c.checked), "checked/op")
				b.ReportMetric(float64(c.loops), "loop-iters/op")
			})
		}
	}
}
