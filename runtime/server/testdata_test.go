package server_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReloadModulesMatchWat keeps the committed test modules of the reload
// and shutdown tests in step with their WAT sources.
func TestReloadModulesMatchWat(t *testing.T) {
	t.Parallel()
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		if os.Getenv("QRUN_REQUIRE_TOOLS") == "1" {
			t.Fatal("wat2wasm not on PATH and QRUN_REQUIRE_TOOLS=1")
		}
		t.Skip("SKIPPING: wat2wasm (wabt) not on PATH; committed testdata/*.wasm not checked against their .wat sources")
	}
	wats, err := filepath.Glob("testdata/*.wat")
	if err != nil || len(wats) == 0 {
		t.Fatalf("no testdata/*.wat: %v", err)
	}
	dir := t.TempDir()
	for _, wat := range wats {
		base := strings.TrimSuffix(filepath.Base(wat), ".wat")
		out := filepath.Join(dir, base+".wasm")
		if b, err := exec.Command(tool, wat, "-o", out).CombinedOutput(); err != nil {
			t.Errorf("wat2wasm %s: %v\n%s", wat, err, b)
			continue
		}
		want, _ := os.ReadFile(out)
		got, err := os.ReadFile(filepath.Join("testdata", base+".wasm"))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("testdata/%s.wasm is missing or stale: run go generate ./runtime/server/", base)
		}
	}
}
