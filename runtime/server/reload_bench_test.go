package server_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/plugin"
	"github.com/qrun-dev/qrun/runtime/server"
)

// benchHandlers are the two handlers the reload figures are reported for:
// the WAT example (tiny) and the Go example (a 3 MB wasip1 module), each
// with a body it acks.
var benchHandlers = []struct {
	name, path, body string
}{
	{"wat", "plugins/examples/wat/forward/forward.wasm", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	{"go", "plugins/examples/go/orders/orders.wasm", `{"id":"o-1","sku":"ABC","qty":2}`},
}

// repoFile is a path relative to the repository root, made absolute.
func repoFile(b *testing.B, rel string) string {
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func readBench(b *testing.B, rel string) []byte {
	b.Helper()
	wasm, err := os.ReadFile(repoFile(b, rel))
	if err != nil {
		b.Fatal(err)
	}
	return wasm
}

// withCustomSection returns wasm plus a custom section named name: the same
// code under a new digest, so every swap compiles afresh (no cache hit),
// as a real new version would.
func withCustomSection(wasm []byte, name string) []byte {
	payload := binary.AppendUvarint(nil, uint64(len(name)))
	payload = append(payload, name...)
	payload = append(payload, 1) // wazero misreads an empty custom section at the end of a module
	out := append([]byte(nil), wasm...)
	out = append(out, 0)
	out = binary.AppendUvarint(out, uint64(len(payload)))
	return append(out, payload...)
}

// tally is an Observer that counts settled deliveries and pings progress.
type tally struct {
	n        atomic.Int64
	progress chan struct{}
}

func newTally() *tally { return &tally{progress: make(chan struct{}, 1)} }

func (t *tally) Settled(*engines.Delivery, engines.Verdict, time.Duration) {
	t.n.Add(1)
	select {
	case t.progress <- struct{}{}:
	default:
	}
}

// waitFor blocks until t counts n, or fails after a minute.
func (t *tally) waitFor(tb testing.TB, n int64) {
	deadline := time.After(time.Minute)
	for t.n.Load() < n {
		select {
		case <-t.progress:
		case <-deadline:
			tb.Fatalf("%d of %d deliveries settled", t.n.Load(), n)
		}
	}
}

// feed keeps about backlog messages queued until stop is closed.
func feed(tb testing.TB, srv *server.Server, body []byte, t *tally, backlog int64, stop chan struct{}) chan int64 {
	sent := make(chan int64, 1)
	go func() {
		var n int64
		defer func() { sent <- n }()
		msgs := make([]engines.Message, 32)
		for {
			for n-t.n.Load() > backlog {
				select {
				case <-t.progress:
				case <-stop:
					return
				}
			}
			select {
			case <-stop:
				return
			default:
			}
			for i := range msgs {
				msgs[i] = engines.Message{Body: body}
			}
			if err := srv.Enqueue(context.Background(), "in", msgs); err != nil {
				tb.Error(err)
				return
			}
			n += int64(len(msgs))
		}
	}()
	return sent
}

// trickle sends two messages every millisecond until stop is closed.
func trickle(tb testing.TB, srv *server.Server, body []byte, stop chan struct{}) chan int64 {
	sent := make(chan int64, 1)
	go func() {
		var n int64
		defer func() { sent <- n }()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if err := srv.Enqueue(context.Background(), "in", []engines.Message{{Body: body}, {Body: body}}); err != nil {
				tb.Error(err)
				return
			}
			n += 2
		}
	}()
	return sent
}

// benchServer runs one consumer of pluginPath on a memory queue; with
// precompile, hot swaps of large modules compile in a child process.
func benchServer(b *testing.B, pluginPath string, concurrency int, isolation string, obs *tally, precompile bool) *server.Server {
	cfg := parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "m" { type = "memory" }
queue "in" { engine = "m" }
consumer "c" {
  queue       = "in"
  plugin      = %q
  concurrency = %d
  batch       = 256
  isolation   = %q
}`, pluginPath, concurrency, isolation))
	opts := server.Options{Observer: obs}
	if precompile {
		opts.Precompile = plugin.ChildPrecompiler(os.Args[0], precompileChild)
	}
	return start(b, cfg, opts)
}

// waitServing waits until the consumer's plugin serves digest and has begun
// a delivery on it.
func waitServing(b *testing.B, l *plugin.Live, digest string) plugin.Status {
	deadline := time.After(time.Minute)
	for {
		ch := l.Changed()
		st := l.Status()
		if st.Digest == digest && !st.FirstDeliveryAt.IsZero() {
			return st
		}
		select {
		case <-ch:
		case <-deadline:
			b.Fatalf("version %s never served; status %+v", digest[:12], st)
		}
	}
}

// BenchmarkSwapToFirstDelivery is the time from a new version of the
// plugin file being renamed into place to the first delivery it handles,
// under a steady load of about 2000 messages a second (well within what
// either handler sustains, as most consumers run): the file watcher's
// debounce (10 ms), reading, compiling (never cached: each version has new
// bytes), checking and warming the new version, and the switch. Compare
// ms/swap with BenchmarkRawCompile, wazero compiling the same bytes and
// nothing else. BenchmarkDeliveryDuringSwap has the saturated case.
func BenchmarkSwapToFirstDelivery(b *testing.B) {
	for _, h := range benchHandlers {
		b.Run(h.name, func(b *testing.B) {
			base := readBench(b, h.path)
			path := filepath.Join(b.TempDir(), "handler.wasm")
			if err := os.WriteFile(path, base, 0o644); err != nil {
				b.Fatal(err)
			}
			obs := newTally()
			srv := benchServer(b, path, 2, "instance", obs, false)
			live, _ := srv.Live("c")
			stop := make(chan struct{})
			sent := trickle(b, srv, []byte(h.body), stop)
			defer func() { close(stop); <-sent }()
			obs.waitFor(b, 100)

			var toFirst, toLoaded time.Duration
			b.ResetTimer()
			for i := range b.N {
				wasm := withCustomSection(base, fmt.Sprintf("qrun-bench-%d-%d", i, time.Now().UnixNano()))
				tmp := path + ".new"
				if err := os.WriteFile(tmp, wasm, 0o644); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if err := os.Rename(tmp, path); err != nil {
					b.Fatal(err)
				}
				st := waitServing(b, live, digestBytes(wasm))
				toFirst += st.FirstDeliveryAt.Sub(t0)
				toLoaded += st.LoadedAt.Sub(t0)
			}
			b.StopTimer()
			b.ReportMetric(float64(toFirst.Microseconds())/1e3/float64(b.N), "ms/swap")
			b.ReportMetric(float64(toLoaded.Microseconds())/1e3/float64(b.N), "ms-to-switch")
		})
	}
}

func digestBytes(b []byte) string { return digest(b) }

// BenchmarkRawCompile is the raw ceiling of a swap: wazero compiling the
// same module bytes (new ones each time, like a new version), with nothing
// of qrun around it.
func BenchmarkRawCompile(b *testing.B) {
	for _, h := range benchHandlers {
		b.Run(h.name, func(b *testing.B) {
			base := readBench(b, h.path)
			ctx := context.Background()
			r := wazero.NewRuntime(ctx)
			defer r.Close(ctx)
			b.ResetTimer()
			for i := range b.N {
				cm, err := r.CompileModule(ctx, withCustomSection(base, fmt.Sprintf("raw-%d-%d", i, time.Now().UnixNano())))
				if err != nil {
					b.Fatal(err)
				}
				_ = cm.Close(ctx)
			}
		})
	}
}

// BenchmarkDeliveryDuringSwap measures what a swap costs the deliveries
// around it, on a saturated consumer (two workers on two cores). Each op is
// one swap: the deliveries between the file being renamed into place and
// the new version serving, over that time ("msgs/s-swapping"), and then the
// deliveries in a quiet window of the same length right after
// ("msgs/s-steady"), the raw ceiling of the same consumer. Pairing the
// windows keeps a shared machine's background load out of the ratio
// ("swap/steady"). New versions compile with a Go P of their own, so a
// saturated consumer keeps about two thirds of its rate on two cores while
// a large module compiles, rather than half.
func BenchmarkDeliveryDuringSwap(b *testing.B) {
	for _, h := range benchHandlers {
		for _, pre := range []bool{false, true} {
			if pre && h.name != "go" {
				continue // small modules never go to a child
			}
			name := h.name
			if pre {
				name += "/precompiled"
			}
			b.Run(name, func(b *testing.B) { deliveryDuringSwap(b, h.path, h.body, pre) })
		}
	}
}

// deliveryDuringSwap measures one handler's delivery rate while new
// versions are swapped in; with precompile they compile in a child process.
func deliveryDuringSwap(b *testing.B, handlerPath, body string, precompile bool) {
	base := readBench(b, handlerPath)
	path := filepath.Join(b.TempDir(), "handler.wasm")
	if err := os.WriteFile(path, base, 0o644); err != nil {
		b.Fatal(err)
	}
	obs := newTally()
	srv := benchServer(b, path, 2, "instance", obs, precompile)
	live, _ := srv.Live("c")
	stop := make(chan struct{})
	sent := feed(b, srv, []byte(body), obs, 4096, stop)
	defer func() { close(stop); <-sent }()
	obs.waitFor(b, 1000) // warm

	var inSwap, inQuiet int64
	var during time.Duration
	b.ResetTimer()
	for i := range b.N {
		wasm := withCustomSection(base, fmt.Sprintf("during-%d-%d", i, time.Now().UnixNano()))
		if err := os.WriteFile(path+".new", wasm, 0o644); err != nil {
			b.Fatal(err)
		}
		n0, t0 := obs.n.Load(), time.Now()
		if err := os.Rename(path+".new", path); err != nil {
			b.Fatal(err)
		}
		waitServing(b, live, digestBytes(wasm))
		n1, el := obs.n.Load(), time.Since(t0)
		// The quiet window: a measurement interval, not a wait for an event.
		time.Sleep(el)
		inSwap += n1 - n0
		inQuiet += obs.n.Load() - n1
		during += el
	}
	b.StopTimer()
	swapRate, quietRate := float64(inSwap)/during.Seconds(), float64(inQuiet)/during.Seconds()
	b.ReportMetric(swapRate, "msgs/s-swapping")
	b.ReportMetric(quietRate, "msgs/s-steady")
	b.ReportMetric(swapRate/quietRate, "swap/steady")
	b.ReportMetric(during.Seconds()/float64(b.N), "s/swap")
}

// BenchmarkPerMessage is the cost of a delivery end to end with a fresh
// instance per message (isolation = "per_message", instances made ahead in
// the background) next to reused instances ("instance"), for both handlers.
// BenchmarkRawInstantiate below is the raw ceiling: wazero instantiating
// the same compiled module (and running its _initialize) and closing it,
// nothing else.
func BenchmarkPerMessage(b *testing.B) {
	for _, h := range benchHandlers {
		for _, iso := range []string{"instance", "per_message"} {
			b.Run(h.name+"/"+iso, func(b *testing.B) {
				obs := newTally()
				srv := benchServer(b, repoFile(b, h.path), 2, iso, obs, false)
				stop := make(chan struct{})
				sent := feed(b, srv, []byte(h.body), obs, 4096, stop)
				defer func() { close(stop); <-sent }()
				obs.waitFor(b, 20)
				from := obs.n.Load()
				b.ResetTimer()
				t0 := time.Now()
				obs.waitFor(b, from+int64(b.N))
				el := time.Since(t0)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkRawInstantiate is the raw ceiling of per-message isolation:
// instantiate the compiled module with stub host functions, run its
// _initialize, close it.
func BenchmarkRawInstantiate(b *testing.B) {
	for _, h := range benchHandlers {
		b.Run(h.name, func(b *testing.B) {
			wasm := readBench(b, h.path)
			ctx := context.Background()
			r := wazero.NewRuntime(ctx)
			defer r.Close(ctx)
			wasi_snapshot_preview1.MustInstantiate(ctx, r)
			cm, err := r.CompileModule(ctx, wasm)
			if err != nil {
				b.Fatal(err)
			}
			stubHostModule(b, ctx, r, cm)
			cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions()
			b.ResetTimer()
			for range b.N {
				m, err := r.InstantiateModule(ctx, cm, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if f := m.ExportedFunction("_initialize"); f != nil {
					if _, err := f.Call(ctx); err != nil {
						b.Fatal(err)
					}
				}
				_ = m.Close(ctx)
			}
		})
	}
}

// stubHostModule defines every function cm imports from "qrun" as a stub
// returning zeros, so the module instantiates without qrun's host.
func stubHostModule(b *testing.B, ctx context.Context, r wazero.Runtime, cm wazero.CompiledModule) {
	hb := r.NewHostModuleBuilder("qrun")
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		if mod != "qrun" {
			continue
		}
		hb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(context.Context, api.Module, []uint64) {}),
			f.ParamTypes(), f.ResultTypes()).Export(name)
	}
	if _, err := hb.Instantiate(ctx); err != nil {
		b.Fatal(err)
	}
}
