package main_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKVCommands: qrun kv set, get, list and del on a memory store of a
// running qrun, through its admin API.
func TestKVCommands(t *testing.T) {
	s := startQrun(t, "s3cret", "", `engine "mem" { type = "memory" }
queue "q" { engine = "mem" }
kv "counts" { engine = "mem" }
`)
	kv := func(args ...string) (string, error) {
		cmd := exec.Command(qrunBin, append([]string{"kv"}, append(args, "-c", s.cfg)...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		return string(out) + stderr.String(), err
	}
	mustKV := func(want string, args ...string) {
		t.Helper()
		out, err := kv(args...)
		if err != nil || out != want {
			t.Errorf("qrun kv %v = %q (%v), want %q", args, out, err, want)
		}
	}
	mustKV("version 1\n", "set", "counts", "a", "1")
	mustKV("version 2\n", "set", "counts", "b", "two", "--ttl", "1h")
	mustKV("1\n", "get", "counts", "a")
	out, err := kv("list", "counts")
	if err != nil || !strings.Contains(out, "KEY") || !strings.Contains(out, "a    1        1") || !strings.Contains(out, "two") {
		t.Errorf("list:\n%s (%v)", out, err)
	}
	out, err = kv("list", "counts", "b", "--json")
	if err != nil || !strings.Contains(out, `"key": "b"`) || strings.Contains(out, `"key": "a"`) || !strings.Contains(out, "expires_at") {
		t.Errorf("list with prefix:\n%s (%v)", out, err)
	}
	mustKV("", "del", "counts", "a")
	if out, err := kv("get", "counts", "a"); err == nil || !strings.Contains(out, "404") {
		t.Errorf("get after del: %q (%v), want a 404", out, err)
	}
	if out, err := kv("get", "nope", "a"); err == nil || !strings.Contains(out, `kv "nope" is not declared`) {
		t.Errorf("unknown store: %q (%v)", out, err)
	}
}

// TestKVCommandsPostgresDirect: a postgres store is opened directly, with
// no qrun running (after qrun migrate, as qrun send needs).
func TestKVCommandsPostgresDirect(t *testing.T) {
	engine := postgresEngine(t)
	if engine == "" {
		return
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "qrun.hcl")
	src := fmt.Sprintf("runtime { admin_listen = \"off\" }\n%s\nqueue \"q\" { engine = \"e\" }\nkv \"counts\" { engine = \"e\" }\n", engine)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(qrunBin, append(args, "-c", cfg)...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("qrun %v: %v\n%s", args, err, ee.Stderr)
			}
			t.Fatalf("qrun %v: %v", args, err)
		}
		return string(out)
	}
	run("migrate")
	if out := run("kv", "set", "counts", "k", "v1"); !strings.HasPrefix(out, "version ") {
		t.Errorf("set: %q", out)
	}
	if out := run("kv", "get", "counts", "k"); out != "v1\n" {
		t.Errorf("get: %q", out)
	}
	run("kv", "del", "counts", "k")
	if out := run("kv", "list", "counts", "--json"); !strings.Contains(out, `"entries": []`) {
		t.Errorf("list after del: %q", out)
	}
}
