package interrupt

import (
	"context"
	"os"
	"testing"

	"github.com/tetratelabs/wazero"
)

// goExample is the largest module in the repository, the 3 MB Go guest.
const goExample = "../../../plugins/examples/go/orders/orders.wasm"

// BenchmarkInstrumentGoExample is the pass alone over the Go example; set
// against BenchmarkCompileGoExample (wazero compiling the same module), it
// is the share of compile time the pass adds.
func BenchmarkInstrumentGoExample(b *testing.B) {
	wasm, err := os.ReadFile(goExample)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wasm)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Instrument(wasm); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompileGoExample is wazero's compile of the Go example, without
// and with the instrumentation, no cache.
func BenchmarkCompileGoExample(b *testing.B) {
	wasm, err := os.ReadFile(goExample)
	if err != nil {
		b.Fatal(err)
	}
	inst, err := Instrument(wasm)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		wasm []byte
	}{{"plain", wasm}, {"instrumented", inst}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				rt := wazero.NewRuntime(ctx)
				if _, err := rt.CompileModule(ctx, tc.wasm); err != nil {
					b.Fatal(err)
				}
				rt.Close(ctx)
			}
		})
	}
}
