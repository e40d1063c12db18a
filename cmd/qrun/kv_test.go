package main_test

import (
	"os/exec"
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
