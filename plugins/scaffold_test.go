package plugins_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/testenv"
	"github.com/qrun-dev/qrun/plugins"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// toolchainEnv returns the environment build.sh needs for lang and whether
// its toolchain is present. The npm-installed tools come from
// plugins/toolchains (install-toolchains.sh); the others from PATH.
func toolchainEnv(t *testing.T, lang string) ([]string, string) {
	t.Helper()
	nm, err := filepath.Abs("toolchains/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	env := os.Environ()
	var tool string
	switch lang {
	case "go":
		tool = "go"
	case "wat":
		tool = "wat2wasm"
	case "c":
		tool = "clang"
		if _, err := os.Stat("/usr/lib/wasm32-wasi/libc.a"); err != nil {
			return nil, "wasi-libc (/usr/lib/wasm32-wasi/libc.a)"
		}
	case "rust":
		tool = "/usr/bin/cargo"
		if _, err := os.Stat("/usr/lib/rustlib/wasm32-wasi"); err != nil {
			return nil, "libstd-rust-dev-wasm32 (/usr/lib/rustlib/wasm32-wasi)"
		}
		env = append(env, "CARGO_HOME="+t.TempDir())
	case "assemblyscript":
		tool = filepath.Join(nm, ".bin", "asc")
		env = append(env, "ASC="+tool)
	case "zig":
		tool = filepath.Join(nm, "@ryoppippi", "zig-linux-x64", "zig")
		// Zig's cache is content-addressed and safe to share, like Go's build
		// cache; sharing it across runs saves compiling Zig's std each time.
		cache := filepath.Join(os.TempDir(), "qrun-test-zig-cache")
		env = append(env, "ZIG="+tool, "ZIG_GLOBAL_CACHE_DIR="+cache, "ZIG_LOCAL_CACHE_DIR="+t.TempDir())
	}
	if _, err := exec.LookPath(tool); err != nil {
		return nil, tool
	}
	return env, ""
}

// skipOrFail skips loudly for a missing toolchain, or fails under
// QRUN_REQUIRE_TOOLS=1 (CI), where every toolchain must be installed.
func skipOrFail(t *testing.T, lang, missing string) {
	t.Helper()
	testenv.Missing(t, lang+": "+missing+" not found (plugins/install-toolchains.sh installs it)")
}

type sink struct {
	mu   sync.Mutex
	msgs []engines.Message
	to   []string
}

func (s *sink) Publish(_ context.Context, queue string, m engines.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.to = append(s.to, queue)
	s.msgs = append(s.msgs, m)
	return nil
}

// TestScaffoldsBuildAndRun scaffolds a handler in every language, builds it
// with the scaffold's own build.sh, checks it as `qrun plugin check` does,
// and runs two messages through it: what the template promises (greet,
// forward with greeted_by, dead-letter an empty body) must hold in each.
func TestScaffoldsBuildAndRun(t *testing.T) {
	for _, lang := range plugins.Languages() {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			env, missing := toolchainEnv(t, lang)
			if missing != "" {
				skipOrFail(t, lang, missing)
			}
			const name = "greeter-1"
			dir := filepath.Join(t.TempDir(), name)
			written, err := plugins.Scaffold(dir, lang, name)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(written, "build.sh") || !slices.Contains(written, "README.md") {
				t.Fatalf("scaffold wrote %v; want build.sh and README.md among them", written)
			}
			cmd := exec.Command(filepath.Join(dir, "build.sh"))
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build.sh: %v\n%s", err, out)
			}
			wasm, err := os.ReadFile(filepath.Join(dir, name+".wasm"))
			if err != nil {
				t.Fatalf("build.sh did not write %s.wasm: %v", name, err)
			}
			rep, err := plugin.Check(context.Background(), wasm)
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			if rep.ABIVersion != 1 {
				t.Fatalf("ABI version %d", rep.ABIVersion)
			}
			runGreeter(t, wasm, name)
		})
	}
}

func runGreeter(t *testing.T, wasm []byte, name string) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	h, err := plugin.NewHost(context.Background(), plugin.HostOptions{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	pub := &sink{}
	p, err := h.Load(context.Background(), plugin.Spec{
		Consumer: "greeter", Wasm: wasm,
		Config:  map[string]string{"forward_to": "greeted"},
		Publish: []string{"greeted"},
	}, pub)
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.NewInstance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close(context.Background())

	handle := func(body string) plugin.Result {
		d := engines.NewDelivery(engines.Delivery{
			Message: engines.Message{ID: "m-1", Body: []byte(body)}, Queue: "greetings", Attempt: 1,
		}, nil, engines.Ticket{})
		return in.Handle(context.Background(), &d, time.Now())
	}
	if r := handle("world"); r.Err != nil || r.Verdict != engines.Ack {
		t.Fatalf("handle(world) = %v, %v; want ack", r.Verdict, r.Err)
	}
	if len(pub.msgs) != 1 || pub.to[0] != "greeted" || string(pub.msgs[0].Body) != "world" ||
		pub.msgs[0].Attributes["greeted_by"] != name {
		t.Errorf("published %v to %v; want world to greeted with greeted_by=%s", pub.msgs, pub.to, name)
	}
	if logs.FilterMessage("hello, world").Len() != 1 {
		t.Errorf("want log line \"hello, world\"; got %v", logs.All())
	}
	if r := handle(""); r.Err != nil || r.Verdict != engines.DeadLetter {
		t.Errorf("handle(empty) = %v, %v; want dead-letter", r.Verdict, r.Err)
	}
}

func TestScaffoldRefusesBadInput(t *testing.T) {
	t.Parallel()
	occupied := t.TempDir()
	if err := os.WriteFile(filepath.Join(occupied, "keep.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, lang, handler string
		want                     error // nil: any error
	}{
		{"unknown language", filepath.Join(t.TempDir(), "x"), "cobol", "x", nil},
		{"uppercase name", filepath.Join(t.TempDir(), "x"), "go", "Hello", nil},
		{"name with a slash", filepath.Join(t.TempDir(), "x"), "go", "a/b", nil},
		{"empty name", filepath.Join(t.TempDir(), "x"), "go", "", nil},
		{"name too long", filepath.Join(t.TempDir(), "x"), "wat", "a" + string(make([]byte, 64)), nil},
		{"non-empty directory", occupied, "go", "x", plugins.ErrExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := plugins.Scaffold(tt.dir, tt.lang, tt.handler)
			if err == nil {
				t.Fatalf("Scaffold succeeded, wrote %v", files)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
	// Nothing was lost or added in the occupied directory.
	entries, _ := os.ReadDir(occupied)
	if b, _ := os.ReadFile(filepath.Join(occupied, "keep.txt")); len(entries) != 1 || string(b) != "mine" {
		t.Errorf("occupied directory changed: %v", entries)
	}
}

// TestGoScaffoldABICopyIsCurrent: the Go scaffold's copy of package abi
// must be abi/abi.go itself (plugins/build.sh refreshes it).
func TestGoScaffoldABICopyIsCurrent(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile("../abi/abi.go")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("templates/go/qrun-sdk/abi/abi.go.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("templates/go/qrun-sdk/abi/abi.go.tmpl differs from abi/abi.go: run `make plugins`")
	}
}

// TestGoScaffoldCopiesEverySDKFile: a Go scaffold builds against a copy of
// the SDK, which must hold every file of it (a new one, like http.go, is
// easy to forget in the embed list).
func TestGoScaffoldCopiesEverySDKFile(t *testing.T) {
	t.Parallel()
	srcs, err := filepath.Glob("sdk/go/*.go")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "h")
	if _, err := plugins.Scaffold(dir, "go", "h"); err != nil {
		t.Fatal(err)
	}
	for _, src := range srcs {
		if strings.HasSuffix(src, "_test.go") {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "qrun-sdk", "plugins", src)); err != nil {
			t.Errorf("%s is not copied into Go scaffolds: add it to sdkFiles and the embed list (%v)", src, err)
		}
	}
}
