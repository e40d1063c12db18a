package repocheck

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the repository this package is in; go test runs in the
// package's directory.
const repoRoot = "../.."

// guestDirs hold WebAssembly guests (built for wasip1, outside the host's
// package graph); docs/architecture.md maps them as the one row `plugins`.
var guestDirs = []string{"plugins/sdk", "plugins/examples", "plugins/conformance", "plugins/templates"}

// TestArchitectureDoc: every path docs/architecture.md names exists, every
// path.go:Name it names is declared there, and its package map names every
// host package.
func TestArchitectureDoc(t *testing.T) {
	const doc = "docs/architecture.md"
	src, err := os.ReadFile(filepath.Join(repoRoot, doc))
	if err != nil {
		t.Fatal(err)
	}
	named := 0
	for _, r := range Refs(src) {
		if r.Name != "" {
			named++
		}
	}
	if named < 40 { // the message's path alone names more; fewer means the syntax stopped matching
		t.Errorf("%s: only %d file:name references recognised", doc, named)
	}
	probs, err := CheckRefs(repoRoot, doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("%s", p)
	}
	missing, err := Unmapped(repoRoot, doc, guestDirs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range missing {
		t.Errorf("%s: package map does not name `%s`", doc, p)
	}
}

// TestREADMELayout: every directory the README's layout block names exists.
func TestREADMELayout(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	dirs := LayoutDirs(src)
	if len(dirs) < 20 {
		t.Fatalf("README layout block: only %d directories recognised: %q", len(dirs), dirs)
	}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(repoRoot, d)); err != nil || !st.IsDir() {
			t.Errorf("README layout names %s/, which is not a directory", d)
		}
	}
}

// TestCheckRefsCatches builds a small repository whose document gets a path,
// a function and a method wrong, and expects exactly those three problems.
func TestCheckRefsCatches(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("engines/heap/heap.go", `package heap
type Heap[T any] struct{}
func (h *Heap[T]) Push(x T) {}
func (h Heap[T]) Len() int { return 0 }
func New() *Heap[int] { return nil }
const Max = 1
var errEmpty error
`)
	write("engines/heap/heap_test.go", "package heap\n")
	write("runtime/only_test/x_test.go", "package x\n")
	write("engines/heap/testdata/fixture.go", "package fixture\n")
	write("plugins/sdk/go/sdk.go", "package sdk\n")
	write("runtime/newpkg/newpkg.go", "package newpkg\n")
	write("docs/a.md", "The heap (`engines/heap`, `engines/heap/`) is in\n"+
		"`engines/heap/heap.go:New`, `engines/heap/heap.go:Heap.Push`, `engines/heap/heap.go:Heap.Len`,\n"+
		"`engines/heap/heap.go:Heap`, `engines/heap/heap.go:Max`, `engines/heap/heap.go:errEmpty`.\n"+
		"Prose: `qrun send`, `engines.Queue`, `Heap.Push`, `/v1/queues/{name}`, `engines/<engine>`.\n"+
		"Wrong: `engines/hep`, `engines/heap/heap.go:Pop`,\n"+
		"`engines/heap/heap.go:Heap.Pop`, `docs/a.md:Title`.\n")
	probs, err := CheckRefs(root, "docs/a.md")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range probs {
		got = append(got, p.String())
	}
	want := []string{
		"docs/a.md:5: engines/hep does not exist",
		"docs/a.md:5: engines/heap/heap.go declares no Pop",
		"docs/a.md:6: engines/heap/heap.go declares no Heap.Pop",
		"docs/a.md:6: docs/a.md:Title names a declaration in a file that is not Go",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	missing, err := Unmapped(root, "docs/a.md", "plugins/sdk")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(missing, []string{"runtime/newpkg"}) {
		t.Errorf("unmapped packages %q, want [runtime/newpkg]", missing)
	}
}

// TestLayoutDirs reads directories out of a layout block as a README
// writes it: top-level lines, words relative to them, indented lines.
func TestLayoutDirs(t *testing.T) {
	readme := "# x\n\n## Layout\n\n```\n" +
		"cmd/qrun/          the binary\n" +
		"engines/           engine.go (contract), enginetest/ (suite), memory/ disk/\n" +
		"                   each engine owns settings.go; sub-packages: shm/ring/,\n" +
		"runtime/internal/  what only the runtime imports:\n" +
		"  dispatch/        workers: receive -> invoke\n" +
		"Makefile           not a directory\n" +
		"```\n\n## Next\n\n```\nnot/ the layout\n```\n"
	got := LayoutDirs([]byte(readme))
	want := []string{"cmd/qrun", "engines", "engines/enginetest", "engines/memory", "engines/disk",
		"engines/shm/ring", "runtime/internal", "runtime/internal/dispatch"}
	if !slices.Equal(got, want) {
		t.Errorf("LayoutDirs = %q, want %q", got, want)
	}
}
