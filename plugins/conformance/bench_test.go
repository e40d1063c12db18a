package conformance_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// The benchmarks compare languages on the same work: the conformance
// module's trivial path, body "verdict:0" (parse a command, return ack),
// which is what an SDK adds to a call, and a fresh instance (what
// per-message isolation or replacing a failed instance costs). The raw
// ceilings run in the same package, so one `make bench` gives the ratios:
// BenchmarkRawCall is wazero calling the WAT module's qrun_handle with
// nothing of qrun around it, BenchmarkRawInstantiate wazero instantiating
// it.

var trivial = []byte("verdict:0")

func loadBench(b *testing.B, lang string) *plugin.Plugin {
	b.Helper()
	h, err := plugin.NewHost(context.Background(), plugin.HostOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close(context.Background()) })
	p, err := h.Load(context.Background(), spec(lang, readModule(b, lang), baseConfig), &sink{})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkHandle is the per-delivery cost of the trivial handler on a
// live instance, per language: "qrun" through qrun's Instance.Handle (the
// instrumented module, message state, verdict checks), "raw" the same
// module as built in plain wazero, its qrun_handle called on a body written
// into a qrun_alloc region with every host function stubbed, which is what
// the language's own code costs per delivery. raw over BenchmarkRawCall is
// the language's share of a delivery, qrun over raw qrun's.
func BenchmarkHandle(b *testing.B) {
	for _, lang := range languages {
		b.Run(lang+"/qrun", func(b *testing.B) {
			p := loadBench(b, lang)
			in, err := p.NewInstance(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			defer in.Close(context.Background())
			d := engines.NewDelivery(engines.Delivery{Message: engines.Message{ID: "m", Body: trivial}, Queue: "in", Attempt: 1},
				&settler{}, engines.Ticket{})
			ctx := context.Background()
			start := time.Now() // the dispatcher's clock reading, which it takes per delivery anyway
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := in.Handle(ctx, &d, start); r.Err != nil || r.Verdict != engines.Ack {
					b.Fatalf("%v %v", r.Verdict, r.Err)
				}
			}
		})
		b.Run(lang+"/raw", func(b *testing.B) {
			g := newRawGuest(b, readModule(b, lang))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				g.deliver(b)
			}
		})
	}
}

// rawGuest is a conformance module as built, in plain wazero: WASI, a stub
// for every qrun function, _initialize and qrun_init run, and one body
// region from qrun_alloc.
type rawGuest struct {
	mem    api.Memory
	handle api.Function
	stack  []uint64
	ptr    uint32
}

func newRawGuest(b *testing.B, wasm []byte) *rawGuest {
	b.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	b.Cleanup(func() { _ = rt.Close(ctx) })
	cm, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		b.Fatal(err)
	}
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	// Every qrun function returns 0: the trivial path calls none, and at
	// init an SDK reading config then sees it empty.
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
		b.Fatal(err)
	}
	mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"_initialize", "qrun_init"} {
		if f := mod.ExportedFunction(name); f != nil {
			if _, err := f.Call(ctx); err != nil {
				b.Fatalf("%s: %v", name, err)
			}
		}
	}
	res, err := mod.ExportedFunction("qrun_alloc").Call(ctx, 256)
	if err != nil || res[0] == 0 {
		b.Fatal("qrun_alloc", res, err)
	}
	return &rawGuest{mem: mod.Memory(), handle: mod.ExportedFunction("qrun_handle"), stack: make([]uint64, 2), ptr: uint32(res[0])}
}

// deliver is BenchmarkRawCall's loop body on this module.
func (g *rawGuest) deliver(b *testing.B) {
	g.mem.Write(g.ptr, trivial)
	g.stack[0], g.stack[1] = uint64(g.ptr), uint64(len(trivial))
	if err := g.handle.CallWithStack(context.Background(), g.stack); err != nil || g.stack[0] != 0 {
		b.Fatal(err, g.stack[0])
	}
}

// BenchmarkNewInstance is the cost of a fresh instance per language:
// instantiate, _initialize, qrun_init, close.
func BenchmarkNewInstance(b *testing.B) {
	for _, lang := range languages {
		b.Run(lang, func(b *testing.B) {
			p := loadBench(b, lang)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				in, err := p.NewInstance(ctx)
				if err != nil {
					b.Fatal(err)
				}
				_ = in.Close(ctx)
			}
		})
	}
}

// rawWat instantiates the WAT conformance module in a bare wazero runtime
// with stub host functions: the mechanism without qrun.
func rawWat(b *testing.B, closeOnDone bool) (wazero.Runtime, wazero.CompiledModule) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(closeOnDone))
	b.Cleanup(func() { _ = rt.Close(ctx) })
	cm, err := rt.CompileModule(ctx, readModule(b, "wat"))
	if err != nil {
		b.Fatal(err)
	}
	// A stub for each function the module imports, with its signature:
	// each returns 0, which is all the trivial path needs.
	stub := api.GoModuleFunc(func(_ context.Context, _ api.Module, stack []uint64) {
		if len(stack) > 0 {
			stack[0] = 0
		}
	})
	hb := rt.NewHostModuleBuilder("qrun")
	for _, f := range cm.ImportedFunctions() {
		_, name, _ := f.Import()
		hb.NewFunctionBuilder().WithGoModuleFunction(stub, f.ParamTypes(), f.ResultTypes()).Export(name)
	}
	if _, err := hb.Instantiate(ctx); err != nil {
		b.Fatal(err)
	}
	return rt, cm
}

// BenchmarkRawCall is the ceiling for BenchmarkHandle: the body written
// into guest memory and qrun_handle called, in plain wazero.
func BenchmarkRawCall(b *testing.B) { benchRawCall(b, false) }

// BenchmarkRawCallCloseOnContextDone is the same with wazero's termination
// support on, which starts a watcher goroutine per call; qrun stopped using
// it (runtime/internal/interrupt), and the figure shows what that saves.
func BenchmarkRawCallCloseOnContextDone(b *testing.B) { benchRawCall(b, true) }

func benchRawCall(b *testing.B, closeOnDone bool) {
	rt, cm := rawWat(b, closeOnDone)
	ctx := context.Background()
	mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		b.Fatal(err)
	}
	fn, mem := mod.ExportedFunction("qrun_handle"), mod.Memory()
	const region = 196608 // the WAT module's heap
	stack := make([]uint64, 2)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mem.Write(region, trivial)
		stack[0], stack[1] = region, uint64(len(trivial))
		if err := fn.CallWithStack(ctx, stack); err != nil || stack[0] != 0 {
			b.Fatal(err, stack[0])
		}
	}
}

// BenchmarkRawInstantiate is the ceiling for BenchmarkNewInstance.
func BenchmarkRawInstantiate(b *testing.B) {
	rt, cm := rawWat(b, true)
	ctx := context.Background()
	cfg := wazero.NewModuleConfig().WithName("")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mod, err := rt.InstantiateModule(ctx, cm, cfg)
		if err != nil {
			b.Fatal(err)
		}
		_ = mod.Close(ctx)
	}
}

// BenchmarkStartGoExample is what qrun's start costs for the 3 MB Go
// example (plugins/examples/go/orders): a host on a compilation cache
// directory, the module loaded, one instance made. "cold" starts from an
// empty cache directory each time (the first start after install or
// upgrade); "warm" from one an earlier start filled, as every later start
// of qrun does (runtime.cache_dir, default <data_dir>/cache).
func BenchmarkStartGoExample(b *testing.B) {
	wasm, err := os.ReadFile("../examples/go/orders/orders.wasm")
	if err != nil {
		b.Fatal(err)
	}
	start := func(b *testing.B, dir string) {
		ctx := context.Background()
		h, err := plugin.NewHost(ctx, plugin.HostOptions{CacheDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		p, err := h.Load(ctx, plugin.Spec{Consumer: "orders", Wasm: wasm}, &sink{})
		if err != nil {
			b.Fatal(err)
		}
		in, err := p.NewInstance(ctx)
		if err != nil {
			b.Fatal(err)
		}
		_ = in.Close(ctx)
		_ = h.Close(ctx)
	}
	b.Run("cold", func(b *testing.B) {
		root := b.TempDir()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir, err := os.MkdirTemp(root, "cache")
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			start(b, dir)
		}
	})
	b.Run("warm", func(b *testing.B) {
		dir := filepath.Join(b.TempDir(), "cache")
		start(b, dir) // the earlier start that filled the cache
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start(b, dir)
		}
	})
}
