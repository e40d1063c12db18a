package plugin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

var body64 = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

// BenchmarkHandle is the hot path: a warm instance of the trivial ack module
// handling a 64-byte body, everything included (region reuse, body write,
// watchdog bookkeeping, verdict check).
func BenchmarkHandle(b *testing.B) {
	h := newTestHost(b, nil)
	p := load(b, h, "ack", Spec{}, nil)
	in := newInstance(b, p)
	d := delivery(string(body64), nil)
	ctx := context.Background()
	start := time.Now() // the dispatcher's clock reading, which it takes per delivery anyway
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := in.Handle(ctx, d, start); r.Err != nil || r.Verdict != engines.Ack {
			b.Fatal(r)
		}
	}
}

// BenchmarkHandleParallel runs one instance per goroutine, as the dispatcher
// does with concurrency > 1.
func BenchmarkHandleParallel(b *testing.B) {
	h := newTestHost(b, nil)
	p := load(b, h, "ack", Spec{}, nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		in, err := p.NewInstance(ctx)
		if err != nil {
			b.Error(err)
			return
		}
		defer in.Close(ctx)
		d := delivery(string(body64), nil)
		start := time.Now()
		for pb.Next() {
			if r := in.Handle(ctx, d, start); r.Err != nil {
				b.Error(r.Err)
				return
			}
		}
	})
}

// rawInstance is the ceiling the project compares against: wazero with
// nothing of qrun around it.
func rawInstance(tb testing.TB, closeOnDone bool) (api.Module, api.Function) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(closeOnDone))
	tb.Cleanup(func() { rt.Close(ctx) })
	mod, err := rt.Instantiate(ctx, readWasm(tb, "ack"))
	if err != nil {
		tb.Fatal(err)
	}
	return mod, mod.ExportedFunction("qrun_handle")
}

func benchRaw(b *testing.B, closeOnDone bool) {
	mod, fn := rawInstance(b, closeOnDone)
	mem := mod.Memory()
	stack := make([]uint64, 2)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mem.Write(1024, body64)
		stack[0], stack[1] = 1024, uint64(len(body64))
		if err := fn.CallWithStack(ctx, stack); err != nil || stack[0] != 0 {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawCall is the raw ceiling: a plain wazero runtime without
// CloseOnContextDone, 64 bytes written and qrun_handle called on a live
// instance of the uninstrumented module.
func BenchmarkRawCall(b *testing.B) { benchRaw(b, false) }

// BenchmarkRawCallCloseOnContextDone is what wazero's own termination
// support would cost per call (it starts a watcher goroutine for every
// call); qrun does not use it (package interrupt), and keeps the figure to
// show what that saves.
func BenchmarkRawCallCloseOnContextDone(b *testing.B) { benchRaw(b, true) }

// BenchmarkNewInstance measures the per-instance cost (instantiate,
// qrun_init, registration with the watchdog) that per-message isolation and
// instance replacement pay.
func BenchmarkNewInstance(b *testing.B) {
	for _, name := range []string{"ack", "ok"} {
		b.Run(name, func(b *testing.B) {
			h := newTestHost(b, nil)
			p := load(b, h, name, Spec{}, nil)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				in, err := p.NewInstance(ctx)
				if err != nil {
					b.Fatal(err)
				}
				in.Close(ctx)
			}
		})
	}
}

// TestHandleAddsNoAllocations pins the hot path: Handle allocates nothing.
// (Before the instrumentation, wazero's WithCloseOnContextDone cost 3
// allocations per call.)
func TestHandleAddsNoAllocations(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ack", Spec{}, nil)
	in := newInstance(t, p)
	d := delivery(string(body64), nil)
	ctx := context.Background()
	start := time.Now()
	in.Handle(ctx, d, start) // first call allocates the body region
	if n := testing.AllocsPerRun(1000, func() { in.Handle(ctx, d, start) }); n != 0 {
		t.Errorf("Handle allocates %.1f per call, want 0", n)
	}
}

// BenchmarkHTTPRequest compares a request made by a guest (http.wasm: POST
// "ping" with one header, then reading status, body and headers) with the
// same request from a Go client in this process, to one local keep-alive
// server. The two alternate, one of each per iteration, so that the load
// of a shared machine falls on both alike; it reports each one's time per
// request and their ratio. The guest's figure includes the delivery around
// the request: writing the body, calling qrun_handle, the verdict.
func BenchmarkHTTPRequest(b *testing.B) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Reply", "pong")
		_, _ = io.WriteString(w, "created it")
	}))
	defer s.Close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer c.CloseIdleConnections()
	goRequest := func() {
		req, _ := http.NewRequest("POST", s.URL, strings.NewReader("ping"))
		req.Header.Set("X-Guest", "yes")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(body) != 10 || resp.Header.Get("X-Reply") != "pong" {
			b.Fatal(resp.Status)
		}
	}
	h := newTestHost(b, nil)
	r, err := httpout.ParseRule("http://127.0.0.1:*")
	if err != nil {
		b.Fatal(err)
	}
	p := load(b, h, "http", Spec{HTTP: httpout.Policy{Allow: []httpout.Rule{r}}}, nil)
	in := newInstance(b, p)
	d := delivery(s.URL, nil)
	guestRequest := func() {
		if res := in.Handle(context.Background(), d, time.Now()); res.Err != nil || res.Verdict != 0 {
			b.Fatalf("%+v", res)
		}
	}
	goRequest() // both connections open before timing
	guestRequest()
	var goTime, guestTime time.Duration
	for b.Loop() {
		t0 := time.Now()
		goRequest()
		t1 := time.Now()
		guestRequest()
		t2 := time.Now()
		goTime += t1.Sub(t0)
		guestTime += t2.Sub(t1)
	}
	n := float64(b.N)
	b.ReportMetric(float64(goTime.Nanoseconds())/n, "go-ns/req")
	b.ReportMetric(float64(guestTime.Nanoseconds())/n, "guest-ns/req")
	b.ReportMetric(float64(guestTime)/float64(goTime), "guest/go")
}

// BenchmarkLoopGuest is what a CPU-bound handler costs under qrun: a
// 200,000-iteration hashing loop (runaway.wat, body "c") through qrun's instance,
// which counts down its loop counter at every iteration, against the same module in
// plain wazero with no check at all.
func BenchmarkLoopGuest(b *testing.B) {
	b.Run("qrun", func(b *testing.B) {
		h := newTestHost(b, nil)
		p := load(b, h, "runaway", Spec{}, nil)
		in := newInstance(b, p)
		d := delivery("c", nil)
		ctx := context.Background()
		start := time.Now()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if r := in.Handle(ctx, d, start); r.Err != nil || r.Verdict != engines.Ack {
				b.Fatal(r)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		ctx := context.Background()
		rt := wazero.NewRuntime(ctx)
		b.Cleanup(func() { rt.Close(ctx) })
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		mod, err := rt.Instantiate(ctx, readWasm(b, "runaway"))
		if err != nil {
			b.Fatal(err)
		}
		fn := mod.ExportedFunction("qrun_handle")
		mod.Memory().Write(1024, []byte("c"))
		stack := make([]uint64, 2)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			stack[0], stack[1] = 1024, 1
			if err := fn.CallWithStack(ctx, stack); err != nil || stack[0] != 0 {
				b.Fatal(err)
			}
		}
	})
}
