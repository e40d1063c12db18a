package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qrun-dev/qrun/internal/testenv"
)

// pluginCmd runs `qrun plugin args...` in process.
func pluginCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(append([]string{"plugin"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// TestPluginCheckAcceptsEveryCommittedModule runs the check over every
// example and conformance module: each must be reported ok, with ABI v1.
func TestPluginCheckAcceptsEveryCommittedModule(t *testing.T) {
	var files []string
	for _, pat := range []string{"../../plugins/examples/*/*/*.wasm", "../../plugins/conformance/*/*.wasm"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 7 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		t.Run(strings.TrimPrefix(f, "../../plugins/"), func(t *testing.T) {
			t.Parallel()
			code, out, errs := pluginCmd("check", f)
			if code != exitOK {
				t.Fatalf("exit %d\n%s%s", code, out, errs)
			}
			for _, want := range []string{f + ": ok\n", "  abi       v1\n", "  memory    min ", "qrun_handle (i32,i32)->i32"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestPluginCheckNamesEveryProblem checks a table of broken modules
// (testdata/check/*.wat, compiled and committed): each is refused with
// exit 2 and the problem in plain words.
func TestPluginCheckNamesEveryProblem(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"not_wasm", []string{"not a valid WebAssembly module"}},
		{"no_version", []string{`missing export "qrun_abi_v1" (the module declares no qrun ABI version)`, "abi       none declared"}},
		{"v2_only", []string{"module speaks ABI v2; this qrun supports v1", "abi       declares v2, none supported"}},
		{"missing_handle", []string{`missing export "qrun_handle"`}},
		{"alloc_signature", []string{`export "qrun_alloc" has signature (i64)->i32, want (i32)->i32`}},
		{"bad_verdict_type", []string{`export "qrun_handle" has signature (i32,i32)->i64, want (i32,i32)->i32`}},
		{"unknown_import", []string{"unknown import qrun.frobnicate"}},
		{"import_signature", []string{"qrun.log has signature (i32,i32)->i32, want (i32,i32,i32)->i32"}},
		{"env_abort", []string{"unknown import env.abort", "--use abort="}},
		{"unknown_wasi", []string{"unknown import wasi_snapshot_preview1.teleport"}},
		{"imported_memory", []string{"imports memory env.memory", "2 problems"}},
		{"no_memory", []string{`missing export "memory"`}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			f := filepath.Join("testdata", "check", tt.file+".wasm")
			code, out, _ := pluginCmd("check", f)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.HasPrefix(out, f+": refused, ") {
				t.Errorf("first line does not say refused:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPluginCheckManyFilesAndJSON(t *testing.T) {
	good := "../../plugins/conformance/wat/conformance.wasm"
	bad := filepath.Join("testdata", "check", "missing_handle.wasm")
	missing := filepath.Join(t.TempDir(), "nope.wasm")

	code, out, _ := pluginCmd("check", good, bad, missing)
	if code != exitUsage {
		t.Errorf("exit %d with a bad module among good ones, want %d", code, exitUsage)
	}
	for _, w := range []string{good + ": ok", bad + ": refused, 1 problem", missing + ": refused, 1 problem:\n  - cannot read the file: no such file or directory"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}

	code, out, errs := pluginCmd("check", "--json", good, bad)
	if code != exitUsage {
		t.Errorf("--json: exit %d, want %d (%s)", code, exitUsage, errs)
	}
	var reports []struct {
		File       string   `json:"file"`
		OK         bool     `json:"ok"`
		Size       int      `json:"size"`
		ABIVersion int      `json:"abi_version"`
		WASI       bool     `json:"wasi"`
		Problems   []string `json:"problems"`
		Exports    []struct {
			Name, Signature string
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &reports); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if len(reports) != 2 || !reports[0].OK || reports[0].ABIVersion != 1 || reports[0].Size == 0 ||
		len(reports[0].Exports) == 0 || reports[1].OK || len(reports[1].Problems) != 1 {
		t.Errorf("reports: %+v", reports)
	}
}

func TestPluginUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no subcommand", nil, "plugin needs a subcommand: check, new"},
		{"unknown subcommand", []string{"frob"}, `unknown plugin subcommand "frob"`},
		{"check without files", []string{"check"}, "name at least one .wasm file"},
		{"new without lang", []string{"new", "x"}, "missing --lang LANG"},
		{"new without name", []string{"new", "--lang", "go"}, "plugin new takes one NAME, got 0"},
		{"new unknown lang", []string{"new", "--lang", "cobol", "--dir", filepath.Join(dir, "a"), "x"}, `unknown language "cobol"`},
		{"new bad name", []string{"new", "--lang", "go", "--dir", filepath.Join(dir, "b"), "Bad Name"}, "invalid handler name"},
		{"new into a non-empty dir", []string{"new", "--lang", "wat", "--dir", ".", "x"}, "not empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := pluginCmd(tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.Contains(errs, tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, errs)
			}
		})
	}
}

// TestPluginNewBuildsAndChecks is the whole first-handler path through the
// CLI: `qrun plugin new`, the scaffold's build.sh, `qrun plugin check`. Go
// and WAT here; plugins/scaffold_test.go builds and runs all languages.
func TestPluginNewBuildsAndChecks(t *testing.T) {
	for _, tc := range []struct{ lang, tool string }{{"go", "go"}, {"wat", "wat2wasm"}} {
		t.Run(tc.lang, func(t *testing.T) {
			t.Parallel()
			testenv.Tool(t, tc.tool, "the "+tc.lang+" scaffold is not built")
			dir := filepath.Join(t.TempDir(), "hello")
			code, out, errs := pluginCmd("new", "hello", "--lang", tc.lang, "--dir", dir)
			if code != exitOK {
				t.Fatalf("new: exit %d\n%s", code, errs)
			}
			if !strings.Contains(out, filepath.Join(dir, "build.sh")) {
				t.Errorf("new did not list build.sh:\n%s", out)
			}
			b, err := exec.Command(filepath.Join(dir, "build.sh")).CombinedOutput()
			if err != nil {
				t.Fatalf("build.sh: %v\n%s", err, b)
			}
			wasm := filepath.Join(dir, "hello.wasm")
			if code, out, _ := pluginCmd("check", wasm); code != exitOK || !strings.Contains(out, wasm+": ok") {
				t.Fatalf("check: exit %d\n%s", code, out)
			}
		})
	}
}

// TestCheckTestdataMatchesWat keeps testdata/check/*.wasm in step with
// their .wat sources.
func TestCheckTestdataMatchesWat(t *testing.T) {
	testenv.CheckWatSources(t, "testdata/check", "wat2wasm X.wat -o X.wasm for each")
}
