package repocheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/qrun-dev/qrun/internal/testenv"
)

// publicPackages are what a Go program embedding qrun imports
// (docs/library.md, "Public packages").
var publicPackages = []string{
	"github.com/qrun-dev/qrun/runtime/server",
	"github.com/qrun-dev/qrun/runtime/config",
	"github.com/qrun-dev/qrun/runtime/admin",
	"github.com/qrun-dev/qrun/runtime/plugin",
	"github.com/qrun-dev/qrun/runtime/httpout",
	"github.com/qrun-dev/qrun/engines",
	"github.com/qrun-dev/qrun/engines/memory",
	"github.com/qrun-dev/qrun/engines/disk",
	"github.com/qrun-dev/qrun/engines/postgres",
	"github.com/qrun-dev/qrun/abi",
}

// TestPublicAPIHidesInternal: no exported name of a public package has a
// type from an internal package in its signature, fields or methods, since
// a program could not name that type. (Checked on the compiler's export
// data, from `go list -export`.)
func TestPublicAPIHidesInternal(t *testing.T) {
	testenv.Tool(t, "go", "the public API is not checked")
	cmd := exec.Command("go", append([]string{"list", "-export", "-deps", "-json=ImportPath,Export"}, publicPackages...)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	exports := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct{ ImportPath, Export string }
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
	}
	imp := importer.ForCompiler(token.NewFileSet(), "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, errors.New("no export data for " + path)
		}
		return os.Open(f)
	})
	for _, path := range publicPackages {
		pkg, err := imp.Import(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, name := range pkg.Scope().Names() {
			obj := pkg.Scope().Lookup(name)
			if !obj.Exported() {
				continue
			}
			var uses []string
			check := func(what string, ty types.Type) {
				types.TypeString(ty, func(p *types.Package) string {
					if strings.Contains(p.Path(), "/internal/") || strings.HasSuffix(p.Path(), "/internal") {
						uses = append(uses, what+" uses "+p.Path())
					}
					return p.Name()
				})
			}
			check(name, obj.Type())
			if tn, ok := obj.(*types.TypeName); ok {
				if st, ok := tn.Type().Underlying().(*types.Struct); ok {
					for i := range st.NumFields() {
						if f := st.Field(i); f.Exported() {
							check(name+"."+f.Name(), f.Type())
						}
					}
				}
				mset := types.NewMethodSet(types.NewPointer(tn.Type()))
				for i := range mset.Len() {
					if m := mset.At(i).Obj(); m.Exported() {
						check(name+"."+m.Name(), m.Type())
					}
				}
			}
			for _, u := range uses {
				t.Errorf("%s: %s", path, u)
			}
		}
	}
}
