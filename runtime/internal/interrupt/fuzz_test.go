package interrupt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"
)

// FuzzInstrument mutates modules (the seeds are this package's test modules
// and the plugin host's) and checks the pass's promises: it never panics,
// its output compiles whenever its input does, and a module wazero refuses
// stays refused. Compilation uses the interpreter, which validates exactly as
// the compiler does and costs far less per input.
func FuzzInstrument(f *testing.F) {
	for _, dir := range []string{"testdata", "../../plugin/testdata"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.wasm"))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add(exceptionModule())
	f.Add(testModule(code(0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b)))
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().WithCoreFeatures(allFeatures))
	defer rt.Close(ctx)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		out, err := Instrument(wasm)
		before := compiles(t, rt, wasm)
		if err != nil {
			var re *ReservedError
			if before == nil && !errors.As(err, &re) {
				t.Fatalf("wazero compiles the module, Instrument refuses it: %v", err)
			}
			return
		}
		after := compiles(t, rt, out)
		if before == nil && after != nil {
			t.Fatalf("compiled before, not after: %v", after)
		}
		if before != nil && after == nil {
			t.Fatalf("refused before (%v), compiles after", before)
		}
	})
}
