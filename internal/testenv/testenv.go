// Package testenv holds what tests need from the machine they run on, and
// the one policy for when it is missing: a test that needs a tool, a server
// or a kernel facility the machine lacks skips with a loud reason, unless
// QRUN_REQUIRE_TOOLS=1 (set by .ci/run), in which case it fails, so CI can
// never pass by skipping.
package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireVar is the environment variable that turns a missing tool into a
// test failure.
const RequireVar = "QRUN_REQUIRE_TOOLS"

// Missing skips tb, or fails it when RequireVar is set, saying what is
// missing and what the test would have checked.
func Missing(tb testing.TB, what string) {
	tb.Helper()
	if os.Getenv(RequireVar) == "1" {
		tb.Fatalf("%s, and %s=1", what, RequireVar)
	}
	tb.Skipf("SKIPPING: %s", what)
}

// Tool returns the path of a program on PATH, or calls Missing naming it
// and why the test needs it.
func Tool(tb testing.TB, name, why string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, name+" not on PATH; "+why)
	}
	return p
}

// CheckWatSources recompiles every dir/*.wat with wat2wasm and fails for
// each committed .wasm beside it that is missing or differs, naming regen,
// the command that rebuilds them.
func CheckWatSources(t *testing.T, dir, regen string) {
	t.Helper()
	tool := Tool(t, "wat2wasm", "committed "+dir+"/*.wasm not checked against their .wat sources (wabt installs it)")
	wats, err := filepath.Glob(filepath.Join(dir, "*.wat"))
	if err != nil || len(wats) == 0 {
		t.Fatalf("no %s/*.wat: %v", dir, err)
	}
	out := t.TempDir()
	for _, wat := range wats {
		base := strings.TrimSuffix(filepath.Base(wat), ".wat")
		built := filepath.Join(out, base+".wasm")
		if b, err := exec.Command(tool, wat, "-o", built).CombinedOutput(); err != nil {
			t.Errorf("wat2wasm %s: %v\n%s", wat, err, b)
			continue
		}
		want, _ := os.ReadFile(built)
		got, err := os.ReadFile(filepath.Join(dir, base+".wasm"))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s/%s.wasm is missing or differs from %s: run %s", dir, base, wat, regen)
		}
	}
}
