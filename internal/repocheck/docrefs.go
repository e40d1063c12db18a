package repocheck

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// A document names the repository in backquotes: a path (`engines/disk`,
// `docs/reload.md`), or a declaration in a Go file (`engines/disk/queue.go:handle.Enqueue`,
// `runtime/server/server.go:New`). Only spans that start with one of the
// repository's top-level directories count as paths, so `qrun send` or
// `engines.Queue` are prose, not claims.
var (
	codeSpan = regexp.MustCompile("`([^`\n]+)`")
	repoRef  = regexp.MustCompile(`^((?:\.ci|abi|cmd|docs|engines|internal|plugins|runtime)(?:/[A-Za-z0-9_.\-]+)*/?)(?::([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?))?$`)
)

// Ref is one backquoted reference of a document to the repository.
type Ref struct {
	Line int
	Path string // relative to the repository root, without a trailing slash
	Name string // a declaration in the Go file Path ("Func", "Type.Method"), or ""
}

// Refs lists the references in a Markdown document.
func Refs(doc []byte) []Ref {
	var refs []Ref
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for line := 1; sc.Scan(); line++ {
		for _, m := range codeSpan.FindAllStringSubmatch(sc.Text(), -1) {
			if r := repoRef.FindStringSubmatch(m[1]); r != nil {
				refs = append(refs, Ref{Line: line, Path: strings.TrimSuffix(r[1], "/"), Name: r[2]})
			}
		}
	}
	return refs
}

// CheckRefs reports each reference of the document at root/doc that does
// not hold: a path that does not exist, or a name its Go file does not
// declare (a function, a method as Type.Method, a type, a var or a const).
// A wrong file or function name in a document that walks through the code
// misleads every reader, so the document is checked like code.
func CheckRefs(root, doc string) ([]Problem, error) {
	src, err := os.ReadFile(filepath.Join(root, doc))
	if err != nil {
		return nil, fmt.Errorf("check references: %w", err)
	}
	decls := map[string]map[string]bool{} // Go file -> its declarations
	var probs []Problem
	for _, r := range Refs(src) {
		at := fmt.Sprintf("%s:%d", doc, r.Line)
		if _, err := os.Stat(filepath.Join(root, r.Path)); err != nil {
			probs = append(probs, Problem{Path: at, Reason: fmt.Sprintf("%s does not exist", r.Path)})
			continue
		}
		if r.Name == "" {
			continue
		}
		if !strings.HasSuffix(r.Path, ".go") {
			probs = append(probs, Problem{Path: at, Reason: fmt.Sprintf("%s:%s names a declaration in a file that is not Go", r.Path, r.Name)})
			continue
		}
		d, ok := decls[r.Path]
		if !ok {
			if d, err = declarations(filepath.Join(root, r.Path)); err != nil {
				return nil, err
			}
			decls[r.Path] = d
		}
		if !d[r.Name] {
			probs = append(probs, Problem{Path: at, Reason: fmt.Sprintf("%s declares no %s", r.Path, r.Name)})
		}
	}
	return probs, nil
}

// declarations lists the top-level names a Go file declares, methods as
// Receiver.Method.
func declarations(path string) (map[string]bool, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, fmt.Errorf("check references: %w", err)
	}
	names := map[string]bool{}
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil || len(d.Recv.List) == 0 {
				names[d.Name.Name] = true
			} else {
				names[receiverName(d.Recv.List[0].Type)+"."+d.Name.Name] = true
			}
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				switch s := spec.(type) {
				case *ast.TypeSpec:
					names[s.Name.Name] = true
				case *ast.ValueSpec:
					for _, n := range s.Names {
						names[n.Name] = true
					}
				}
			}
		}
	}
	return names, nil
}

// receiverName is the type name of a method's receiver, without pointer or
// type parameters.
func receiverName(e ast.Expr) string {
	for {
		switch t := e.(type) {
		case *ast.StarExpr:
			e = t.X
		case *ast.IndexExpr:
			e = t.X
		case *ast.IndexListExpr:
			e = t.X
		case *ast.ParenExpr:
			e = t.X
		case *ast.Ident:
			return t.Name
		default:
			return ""
		}
	}
}

// Unmapped lists the Go package directories under root (relative, with
// slashes) that the document at root/doc does not name as a backquoted
// path, so a package map stays complete as packages are added. Directories
// under any of skip, testdata and hidden directories are left out.
func Unmapped(root, doc string, skip ...string) ([]string, error) {
	src, err := os.ReadFile(filepath.Join(root, doc))
	if err != nil {
		return nil, fmt.Errorf("check package map: %w", err)
	}
	named := map[string]bool{}
	for _, r := range Refs(src) {
		named[r.Path] = true
	}
	pkgs := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules" ||
				slices.ContainsFunc(skip, func(s string) bool { return rel == s || strings.HasPrefix(rel, s+"/") })) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") {
			if dir := filepath.ToSlash(filepath.Dir(rel)); dir != "." {
				pkgs[dir] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check package map: %w", err)
	}
	var missing []string
	for p := range pkgs {
		if !named[p] {
			missing = append(missing, p)
		}
	}
	slices.Sort(missing)
	return missing, nil
}

// LayoutDirs lists the directories a README's layout block names: the
// fenced block after the heading "## Layout". A line that starts in column
// one names a directory relative to the root as its first word; every word
// of it ending in "/" after that, and every such word of the indented
// lines below it, is relative to that directory.
func LayoutDirs(readme []byte) []string {
	_, after, ok := bytes.Cut(readme, []byte("\n## Layout\n"))
	if !ok {
		return nil
	}
	_, block, ok := bytes.Cut(after, []byte("```\n"))
	if !ok {
		return nil
	}
	block, _, _ = bytes.Cut(block, []byte("```"))
	var dirs []string
	base := ""
	for _, line := range strings.Split(string(block), "\n") {
		words := strings.Fields(line)
		if len(words) == 0 {
			continue
		}
		if line[0] != ' ' {
			if !strings.HasSuffix(words[0], "/") {
				base = ""
				continue
			}
			base = strings.TrimSuffix(words[0], "/")
			dirs = append(dirs, base)
			words = words[1:]
		}
		for _, w := range words {
			w = strings.Trim(w, ",;()")
			if strings.HasSuffix(w, "/") && base != "" {
				dirs = append(dirs, base+"/"+strings.TrimSuffix(w, "/"))
			}
		}
	}
	return dirs
}
