package main_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPluginPrecompile runs the child half of a hot swap's out-of-process
// compile the way qrun runs it: the module on stdin lands in the cache, and
// bad usage is refused.
func TestPluginPrecompile(t *testing.T) {
	t.Parallel()
	cache := t.TempDir()
	wasm, err := os.ReadFile(repoPath(t, "plugins/examples/wat/forward/forward.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(qrunBin, "plugin", "precompile", "--cache", cache)
	cmd.Stdin = bytes.NewReader(wasm)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qrun plugin precompile: %v\n%s", err, out)
	}
	n := 0
	_ = filepath.WalkDir(cache, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	if n == 0 {
		t.Fatal("qrun plugin precompile left the compilation cache empty")
	}
	bad := exec.Command(qrunBin, "plugin", "precompile")
	bad.Stdin = bytes.NewReader(wasm)
	if err := bad.Run(); err == nil || bad.ProcessState.ExitCode() != 2 {
		t.Fatalf("precompile without --cache: %v, want exit 2", err)
	}
	garbage := exec.Command(qrunBin, "plugin", "precompile", "--cache", cache)
	garbage.Stdin = strings.NewReader("not wasm")
	if err := garbage.Run(); err == nil || garbage.ProcessState.ExitCode() != 1 {
		t.Fatalf("precompile of garbage: %v, want exit 1", err)
	}
}
