package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// jsonLines parses every line of out as a JSON object, failing the test on
// one that is not: with --log-format json nothing else may reach stderr.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stderr line is not JSON (%v): %q\nwhole stderr:\n%s", err, l, out)
		}
		lines = append(lines, m)
	}
	return lines
}

// withMsg returns the lines whose msg is msg.
func withMsg(lines []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// TestRunJSONLogsConfigDiagnostics: a config warning (a consumer timeout
// too close to its queue's lease) is a JSON log line when qrun runs with
// --log-format json, as is every other line.
func TestRunJSONLogsConfigDiagnostics(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "qrun.hcl")
	cfg := fmt.Sprintf(`
runtime {
  data_dir     = %q
  admin_listen = %q
}
engine "mem" { type = "memory" }
queue "in" {
  engine             = "mem"
  visibility_timeout = "2s"
}
consumer "ack" {
  queue   = "in"
  plugin  = %q
  timeout = "1500ms"
}
`, filepath.Join(dir, "data"), addr, repoPath(t, "plugins/examples/wat/ack/ack.wasm"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := runQrun(t, cfgPath)
	waitReady(t, &admin.Client{BaseURL: "http://" + addr})
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("qrun exited with %d\n%s", code, p.stderr)
	}
	lines := jsonLines(t, p.stderr.String())
	warn := withMsg(lines, "config warning")
	if len(warn) != 1 || warn[0]["level"] != "warn" || warn[0]["summary"] != "Timeout exceeds visibility timeout" ||
		!strings.HasPrefix(fmt.Sprint(warn[0]["position"]), cfgPath+":") {
		t.Fatalf("config warning lines %v, want one at warn level naming the summary and the position in %s", warn, cfgPath)
	}
}

// TestRunJSONInvalidConfig: an invalid config run with --log-format json
// reports each diagnostic as a JSON line and exits 2.
func TestRunJSONInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "qrun.hcl")
	cfg := fmt.Sprintf(`
runtime {
  data_dir     = %q
  admin_listen = "off"
}
queue "in" { engine = "nope" }
`, filepath.Join(dir, "data"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(qrunBin, "run", "-c", cfgPath, "--log-format", "json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("qrun run on an invalid config: %v, want exit code 2\n%s", err, stderr.String())
	}
	lines := jsonLines(t, stderr.String())
	errs := withMsg(lines, "config error")
	if len(errs) != 1 || errs[0]["level"] != "error" || errs[0]["summary"] != "Unknown engine" {
		t.Fatalf("config error lines %v, want one at error level: Unknown engine", errs)
	}
}
