// Package plugins carries qrun's guest SDKs and handler templates inside the
// qrun binary, so that `qrun plugin new` can write a handler that builds
// anywhere: each scaffold is self-contained, with a copy of its language's
// SDK beside the handler (SDKs are single files or one small crate, with no
// dependencies beyond the language's standard library), rather than a
// reference to a qrun checkout the user may not have.
//
// The directory also holds, outside this package's Go code: sdk/<lang> (the
// SDKs), examples/<lang> and conformance/<lang> (modules built by build.sh,
// committed as .wasm), templates/<lang> (what Scaffold writes) and
// install-toolchains.sh.
package plugins

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

//go:embed all:templates
//go:embed sdk/c/qrun.h sdk/zig/qrun.zig sdk/assemblyscript/qrun.ts
//go:embed sdk/rust/Cargo.toml sdk/rust/src/lib.rs
//go:embed sdk/go/doc.go sdk/go/host_other.go sdk/go/host_wasip1.go sdk/go/qrun.go sdk/go/http.go sdk/go/kv.go
var files embed.FS

// Languages lists the languages Scaffold supports, in the order the
// documentation presents them.
func Languages() []string {
	return []string{"go", "rust", "c", "assemblyscript", "zig", "wat"}
}

// sdkFiles lists the SDK files copied into a scaffold of lang: source path
// in files, then path in the new directory.
func sdkFiles(lang string) [][2]string {
	return map[string][][2]string{
		"go": {
			{"sdk/go/doc.go", "qrun-sdk/plugins/sdk/go/doc.go"},
			{"sdk/go/host_other.go", "qrun-sdk/plugins/sdk/go/host_other.go"},
			{"sdk/go/host_wasip1.go", "qrun-sdk/plugins/sdk/go/host_wasip1.go"},
			{"sdk/go/qrun.go", "qrun-sdk/plugins/sdk/go/qrun.go"},
			{"sdk/go/http.go", "qrun-sdk/plugins/sdk/go/http.go"},
			{"sdk/go/kv.go", "qrun-sdk/plugins/sdk/go/kv.go"},
		},
		"rust": {
			{"sdk/rust/Cargo.toml", "qrun-sdk/Cargo.toml"},
			{"sdk/rust/src/lib.rs", "qrun-sdk/src/lib.rs"},
		},
		"c":              {{"sdk/c/qrun.h", "qrun.h"}},
		"assemblyscript": {{"sdk/assemblyscript/qrun.ts", "qrun.ts"}},
		"zig":            {{"sdk/zig/qrun.zig", "qrun.zig"}},
	}[lang]
}

// ErrExists is returned by Scaffold when the target directory exists and
// is not empty: a scaffold never overwrites anything.
var ErrExists = errors.New("directory exists and is not empty")

// validName keeps a handler name usable as a file name, a Go module path,
// a Rust crate name, a Zig and AssemblyScript file name and a WAT string
// (the template writes its length as one byte).
var validName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// Scaffold writes a new handler called name, in lang, into dir (created;
// it must not exist or be empty) and returns the files written, relative
// to dir, sorted. The handler builds with dir/build.sh.
func Scaffold(dir, lang, name string) ([]string, error) {
	if !slices.Contains(Languages(), lang) {
		return nil, fmt.Errorf("unknown language %q: want one of %s", lang, strings.Join(Languages(), ", "))
	}
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("invalid handler name %q: use 1 to 64 lowercase letters, digits, '-' or '_', starting with a letter", name)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s: %w", dir, ErrExists)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}

	out := map[string][]byte{}
	// Placeholders in the templates. __NAMELENHEX__ and __ATTRSLEN__ let
	// the WAT template hold the greeted_by attribute pre-encoded.
	r := strings.NewReplacer(
		"__NAME__", name,
		"__CRATE__", strings.ReplaceAll(name, "-", "_"),
		"__LANG__", lang,
		"__NAMELENHEX__", fmt.Sprintf("%02x", len(name)),
		"__ATTRSLEN__", strconv.Itoa(4+len("greeted_by")+4+len(name)),
	)
	root := "templates/" + lang
	err := fs.WalkDir(files, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		rel := r.Replace(strings.TrimSuffix(strings.TrimPrefix(p, root+"/"), ".tmpl"))
		out[rel] = []byte(r.Replace(string(b)))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("templates for %s: %w", lang, err)
	}
	for _, f := range sdkFiles(lang) {
		b, err := files.ReadFile(f[0])
		if err != nil {
			return nil, fmt.Errorf("SDK for %s: %w", lang, err)
		}
		out[f[1]] = b
	}
	if lang == "go" {
		// The Go SDK imports package abi of module github.com/qrun-dev/qrun;
		// the scaffold's go.mod replaces that module with this copy, whose
		// abi.go is templates/go/qrun-sdk/abi/abi.go.tmpl (kept equal to
		// abi/abi.go by build.sh and a test: embedding it from package abi
		// would change the bytes of every Go guest).
		out["qrun-sdk/go.mod"] = []byte("module github.com/qrun-dev/qrun\n\ngo 1.24\n")
	}

	names := make([]string, 0, len(out))
	for rel, b := range out {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		mode := os.FileMode(0o644)
		if path.Ext(rel) == ".sh" {
			mode = 0o755
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			return nil, err
		}
		names = append(names, rel)
	}
	slices.Sort(names)
	return names, nil
}
