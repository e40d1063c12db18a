package config

import (
	"io"
	"os"
	"testing"
)

// FuzzParse feeds arbitrary text to the parser: it must never panic, every
// diagnostic must render, and a file it accepts must hold together (every
// reference resolves). Run with `make fuzz`.
func FuzzParse(f *testing.F) {
	if src, err := os.ReadFile("../../config.hcl.example"); err == nil {
		f.Add(src)
	}
	f.Add([]byte("engine \"m\" { type = \"memory\" }\nqueue \"q\" { engine = \"m\" }\n"))
	f.Add([]byte("queue \"a\" {\n  engine = \"local\"\n  retry {\n    initial = \"1s\"\n  }\n}\n"))
	f.Add([]byte("runtime { admin_listen = env(\"X\", \"127.0.0.1:1\") }\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		opts := Options{Engines: fakeEngines{}, LookupEnv: func(string) (string, bool) { return "", false }}
		file, diags := Parse("fuzz.hcl", src, opts)
		if err := WriteDiagnostics(io.Discard, file, diags, false); err != nil {
			t.Fatalf("rendering diagnostics: %v", err)
		}
		if diags.HasErrors() {
			return
		}
		for _, q := range file.Queues {
			if _, ok := file.Engine(q.Engine); !ok {
				t.Fatalf("accepted queue %q on undeclared engine %q", q.Name, q.Engine)
			}
			if q.DeadLetter != "" {
				if _, ok := file.Queue(q.DeadLetter); !ok {
					t.Fatalf("accepted dead_letter %q that is not declared", q.DeadLetter)
				}
			}
		}
		for _, c := range file.Consumers {
			if _, ok := file.Queue(c.Queue); !ok {
				t.Fatalf("accepted consumer %q on undeclared queue %q", c.Name, c.Queue)
			}
			if c.Concurrency < 1 || c.Batch < 1 || c.Timeout <= 0 {
				t.Fatalf("accepted consumer %q with %+v", c.Name, c)
			}
		}
	})
}
