// Package examples_test checks that every committed example module is what
// its source builds to, so a change to an example or to the SDK cannot land
// with a stale .wasm (CI's `make check-plugins` rebuilds them all; this
// catches the Go ones in `make test` too).
package examples_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestGoExamplesMatchSource(t *testing.T) {
	dirs, err := filepath.Glob("go/*/main.go")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no Go examples found: %v", err)
	}
	for _, main := range dirs {
		dir := filepath.Dir(main)
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), name+".wasm")
			// The same command as plugins/build.sh.
			cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-ldflags=-s", "-o", out, ".")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOFLAGS=")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("building %s: %v\n%s", dir, err, b)
			}
			built, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			committed, err := os.ReadFile(filepath.Join(dir, name+".wasm"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(built, committed) {
				t.Fatalf("%s/%s.wasm is not what its source builds to: run `make plugins` and commit it", dir, name)
			}
		})
	}
}
