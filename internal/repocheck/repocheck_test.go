package repocheck

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qrun-dev/qrun/internal/testenv"
)

// TestTrackedFiles is the guard: it fails when any file git tracks in this
// repository is a native executable or an oversized non-.wasm file.
func TestTrackedFiles(t *testing.T) {
	testenv.Tool(t, "git", "tracked files are not checked for build outputs")
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout (%v): nothing is tracked", err)
	}
	probs, err := Tracked(context.Background(), strings.TrimSpace(string(root)))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("tracked file must not be committed: %s", p)
	}
}

// TestTrackedCatchesBuildOutputs commits each kind of forbidden file into a
// scratch repository and expects Tracked to name it, and nothing else.
func TestTrackedCatchesBuildOutputs(t *testing.T) {
	testenv.Tool(t, "git", "tracked files are not checked for build outputs")
	dir := t.TempDir()
	pe := make([]byte, 0x90)
	copy(pe, "MZ")
	pe[0x3c] = 0x80
	copy(pe[0x80:], "PE\x00\x00")
	dosText := []byte("MZ is how this note starts, and it is text")
	files := map[string][]byte{
		"qrun":           append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 100)...),
		"tool.exe":       pe,
		"macbin":         {0xcf, 0xfa, 0xed, 0xfe, 0, 0, 0, 0},
		"big.tar":        bytes.Repeat([]byte("x"), MaxFileSize+1),
		"big.wasm":       append([]byte("\x00asm\x01\x00\x00\x00"), bytes.Repeat([]byte{0}, MaxFileSize)...),
		"notes.txt":      dosText,
		"main.go":        []byte("package main\n"),
		"exactly5MB.dat": bytes.Repeat([]byte("y"), MaxFileSize),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	git("add", ".")
	probs, err := Tracked(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range probs {
		got[p.Path] = p.Reason
	}
	for name, want := range map[string]string{"qrun": "ELF", "tool.exe": "PE", "macbin": "Mach-O", "big.tar": "over the"} {
		if !strings.Contains(got[name], want) {
			t.Errorf("%s: reason %q, want one mentioning %q", name, got[name], want)
		}
		delete(got, name)
	}
	for name, reason := range got {
		t.Errorf("%s flagged (%s), but it may be committed", name, reason)
	}
}
