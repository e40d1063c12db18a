// Package repocheck keeps build outputs out of git: Tracked reports every
// git-tracked file that is a native executable (ELF, Mach-O, PE) or larger
// than MaxFileSize without being a .wasm module. A 32 MB qrun binary was
// once committed by accident; TestTrackedFiles, run by `make test`, stops
// the next one before it reaches main.
//
// It also holds the documents that walk through the code to the code
// (docrefs.go): every backquoted path and path.go:Name in
// docs/architecture.md must exist, its package map must name every
// package, and the README's layout block must name real directories.
package repocheck

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// MaxFileSize is the largest tracked file allowed, .wasm modules excepted:
// the committed example and conformance modules are build outputs on
// purpose (`make check-plugins` proves they match their sources).
const MaxFileSize = 5 << 20

// Problem is one tracked file that should not be.
type Problem struct {
	Path   string // relative to the repository root
	Reason string
}

func (p Problem) String() string { return p.Path + ": " + p.Reason }

// Tracked lists the files git tracks in the repository at root and checks
// each one.
func Tracked(ctx context.Context, root string) ([]Problem, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files in %s: %w", root, err)
	}
	var probs []Problem
	for _, name := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		p, err := Check(filepath.Join(root, name))
		if err != nil {
			return nil, err
		}
		if p != "" {
			probs = append(probs, Problem{Path: name, Reason: p})
		}
	}
	return probs, nil
}

// Check says why the file at path must not be committed, or "" when it may
// be. A tracked file missing from the work tree (deleted, not yet
// committed) is fine.
func Check(path string) (string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("check %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("check %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", nil // a symlink or submodule: no content of its own
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("check %s: %w", path, err)
	}
	if kind := executable(head[:n], f); kind != "" {
		return kind + " executable (a build output; add it to .gitignore)", nil
	}
	if st.Size() > MaxFileSize && !strings.HasSuffix(path, ".wasm") {
		return fmt.Sprintf("%d bytes, over the %d-byte limit for tracked files", st.Size(), MaxFileSize), nil
	}
	return "", nil
}

// executable names the native executable format head starts with, or "".
// f is read for a PE header, which "MZ" only points to.
func executable(head []byte, f io.ReaderAt) string {
	switch {
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		return "ELF"
	case bytes.HasPrefix(head, []byte{0xfe, 0xed, 0xfa, 0xce}), bytes.HasPrefix(head, []byte{0xfe, 0xed, 0xfa, 0xcf}),
		bytes.HasPrefix(head, []byte{0xce, 0xfa, 0xed, 0xfe}), bytes.HasPrefix(head, []byte{0xcf, 0xfa, 0xed, 0xfe}),
		bytes.HasPrefix(head, []byte{0xca, 0xfe, 0xba, 0xbe}):
		return "Mach-O"
	case bytes.HasPrefix(head, []byte("MZ")) && len(head) >= 0x40:
		// A DOS stub is "MZ"; a PE file's stub points, at 0x3c, to "PE\0\0".
		off := int64(head[0x3c]) | int64(head[0x3d])<<8 | int64(head[0x3e])<<16 | int64(head[0x3f])<<24
		sig := make([]byte, 4)
		if _, err := f.ReadAt(sig, off); err == nil && bytes.Equal(sig, []byte("PE\x00\x00")) {
			return "PE"
		}
	}
	return ""
}
