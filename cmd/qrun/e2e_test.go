package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// qrunBin is the qrun binary built once for the package's tests.
var qrunBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qrun-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	qrunBin = filepath.Join(dir, "qrun")
	build := exec.Command("go", "build", "-o", qrunBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building qrun:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoPath resolves a path relative to the repository root.
func repoPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer a test may read while qrun writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// liveProc is a qrun subprocess whose log can be read while it runs.
type liveProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when qrun exited, err then holds Wait's result
	err    error
}

func runQrun(t *testing.T, cfgPath string) *liveProc {
	t.Helper()
	p := &liveProc{stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(qrunBin, "run", "-c", cfgPath, "--log-format", "json")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("qrun stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

func (p *liveProc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait returns qrun's exit code, failing the test after timeout.
func (p *liveProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.err, &ee) {
			return ee.ExitCode()
		}
		if p.err != nil {
			t.Fatal(p.err)
		}
		return 0
	case <-time.After(timeout):
		t.Fatalf("qrun still running %v after the signal", timeout)
		return -1
	}
}

func waitReady(t *testing.T, c *admin.Client) {
	t.Helper()
	waitFor(t, "qrun to be ready", 60*time.Second, func() (bool, string) {
		err := c.Ready(context.Background())
		return err == nil, fmt.Sprint(err)
	})
}

// qrunServer is a qrun started by startQrun: its config file, admin
// address, process and admin client.
type qrunServer struct {
	cfg, addr string
	p         *liveProc
	c         *admin.Client
}

// startQrun writes a config whose runtime block listens for the admin API on
// a free loopback port and keeps its data in a temp dir, with the lines of
// runtime, then body, after it; starts qrun on it and waits until it is
// ready. With token set the API requires it.
func startQrun(t *testing.T, token, runtime, body string) qrunServer {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "qrun.hcl")
	if token != "" {
		runtime += fmt.Sprintf("\n  admin_token = %q", token)
	}
	src := fmt.Sprintf("runtime {\n  admin_listen = %q\n  data_dir = %q\n  %s\n}\n%s", addr, filepath.Join(dir, "data"), runtime, body)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p := runQrun(t, cfg)
	c := &admin.Client{BaseURL: "http://" + addr, Token: token}
	waitReady(t, c)
	return qrunServer{cfg: cfg, addr: addr, p: p, c: c}
}

// waitFor polls cond every 20ms until it holds or the deadline passes; the
// runtime has no event to subscribe to from outside the process.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func depths(t *testing.T, c *admin.Client) map[string]int64 {
	t.Helper()
	qs, err := c.Queues(context.Background())
	if err != nil {
		t.Fatalf("queues: %v", err)
	}
	out := map[string]int64{}
	for _, q := range qs {
		out[q.Name] = q.Depth
	}
	return out
}

const e2eConfig = `
runtime {
  data_dir      = %q
  admin_listen  = %q
  admin_token   = "s3cret"
  log_level     = "info"
  drain_timeout = "10s"
}
engine "mem" { type = "memory" }
queue "orders" {
  engine             = "mem"
  max_attempts       = 3
  dead_letter        = "orders_dead"
  visibility_timeout = "30s"
  retry {
    initial    = "10ms"
    max        = "50ms"
    multiplier = 2
  }
}
queue "orders_dead"  { engine = "mem" }
queue "orders_valid" { engine = "mem" }
queue "raw"          { engine = "mem" }
queue "raw_out"      { engine = "mem" }
consumer "orders-go" {
  queue       = "orders"
  plugin      = %q
  concurrency = 4
  config      = { forward_to = "orders_valid" }
  publish     = ["orders_valid"]
}
consumer "forward-wat" {
  queue       = "raw"
  plugin      = %q
  concurrency = 2
  config      = { forward_to = "raw_out" }
  publish     = ["raw_out"]
}
`

func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "qrun.hcl")
	cfg := fmt.Sprintf(e2eConfig, filepath.Join(dir, "data"), addr,
		repoPath(t, "plugins/examples/go/orders/orders.wasm"), repoPath(t, "plugins/examples/wat/forward/forward.wasm"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := runQrun(t, cfgPath)
	c := &admin.Client{BaseURL: "http://" + addr, Token: "s3cret"}
	waitFor(t, "qrun to be ready", 60*time.Second, func() (bool, string) {
		err := c.Ready(context.Background())
		return err == nil, fmt.Sprint(err)
	})

	// Without the token, the API refuses.
	if _, err := (&admin.Client{BaseURL: c.BaseURL}).Queues(context.Background()); !isStatus(err, 401) {
		t.Fatalf("request without token: got %v, want 401", err)
	}

	const n = 1000
	orders := make([]admin.SendMessage, n)
	raw := make([]admin.SendMessage, n)
	for i := range orders {
		orders[i] = admin.SendMessage{Body: fmt.Sprintf(`{"id":"o-%d","sku":"SKU-%d","qty":%d}`, i, i%7, 1+i%3)}
		raw[i] = admin.SendMessage{Body: fmt.Sprintf("raw message %d", i)}
	}
	ctx := context.Background()
	if _, err := c.Send(ctx, "orders", admin.SendRequest{Messages: orders}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "raw", admin.SendRequest{Messages: raw}); err != nil {
		t.Fatal(err)
	}

	// Through the CLI: a literal body with an attribute, a body from a file,
	// one from stdin, a transient failure and a malformed order.
	bodyFile := filepath.Join(dir, "order.json")
	if err := os.WriteFile(bodyFile, []byte(`{"id":"from-file","sku":"F","qty":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	send := func(stdin string, args ...string) {
		t.Helper()
		cmd := exec.Command(qrunBin, append([]string{"send", "-c", cfgPath, "-q", "orders"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			t.Fatalf("qrun send %v: %v\n%s", args, err, out)
		}
	}
	send("", "-a", "source=cli", `{"id":"cli-1","sku":"C","qty":1}`)
	send("", "@"+bodyFile)
	send(`{"id":"stdin-1","sku":"S","qty":4}`, "-")
	send("", `{"id":"bad-1","sku":"X","qty":1,"fail":true}`)
	send("", `{not json`)

	waitFor(t, "every message handled", 60*time.Second, func() (bool, string) {
		d := depths(t, c)
		ok := d["orders_valid"] == n+3 && d["raw_out"] == n && d["orders_dead"] == 2 && d["orders"] == 0 && d["raw"] == 0
		return ok, fmt.Sprint(d)
	})

	// SIGTERM drains and exits 0.
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("qrun exited with %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(p.stderr.String(), `"drained"`) {
		t.Fatalf("no drain in the log:\n%s", p.stderr.String())
	}
}

func isStatus(err error, code int) bool {
	var se *admin.StatusError
	return errors.As(err, &se) && se.Status == code
}

func TestCLI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte("engine \"m\" {\n  type = \"memory\"\n}\nqueue \"q\" {\n  engine = \"nope\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := repoPath(t, "config.hcl.example")
	// Plugins run refuses, which validate must refuse too (issue 12 item 7).
	pluginConfig := func(name, wasm, extra string) string {
		path := filepath.Join(dir, name+".hcl")
		src := fmt.Sprintf("runtime {\n  admin_listen = \"off\"\n}\nengine \"m\" { type = \"memory\" }\nqueue \"q\" { engine = \"m\" }\nconsumer \"c\" {\n  queue  = \"q\"\n  plugin = %q\n  %s\n}\n",
			repoPath(t, "runtime/plugin/testdata/"+wasm+".wasm"), extra)
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// A file that once overflowed the parser's stack (issue 12 item 10).
	deep := filepath.Join(dir, "deep.hcl")
	if err := os.WriteFile(deep, []byte("x = "+strings.Repeat("[", 200000)), 0o644); err != nil {
		t.Fatal(err)
	}
	initFail := pluginConfig("init_fail", "init_fail", "")
	bigMemory := pluginConfig("big_memory", "big_memory", `memory_limit = "1MiB"`)
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"no args", nil, 2, "Usage"},
		{"unknown command", []string{"frob"}, 2, `unknown command "frob"`},
		{"version", []string{"version"}, 0, "qrun "},
		{"help of a group", []string{"dlq", "-h"}, 0, "Usage: qrun dlq COMMAND"},
		{"help of a command", []string{"send", "--help"}, 0, "--priority priority"},
		{"unknown flag", []string{"validate", "--frob"}, 2, "qrun: unknown flag: --frob\nRun 'qrun validate --help' for usage.\n"},
		{"validate example", []string{"validate", "-c", good}, 0, "ok"},
		{"validate broken", []string{"validate", "-c", bad}, 2, "bad.hcl:5:"},
		{"validate missing file", []string{"validate", "-c", filepath.Join(dir, "none.hcl")}, 2, "none.hcl"},
		{"validate without -c", []string{"validate"}, 2, "missing -c FILE"},
		{"validate 200,000 brackets", []string{"validate", "-c", deep}, 2, "deep.hcl:1:261: Error: Nesting too deep"},
		{"validate failing qrun_init", []string{"validate", "-c", initFail}, 2, "init_fail.hcl:8:12: Error: Invalid plugin"},
		{"run failing qrun_init", []string{"run", "-c", initFail}, 2, "qrun_init returned 1"},
		{"validate memory over limit", []string{"validate", "-c", bigMemory}, 2, "module needs at least 6400 KiB of memory"},
		{"run memory over limit", []string{"run", "-c", bigMemory}, 2, "but memory_limit is 1 MiB"},
		{"send without queue", []string{"send", "-c", good, "x"}, 2, "missing -q QUEUE"},
		{"send bad attribute", []string{"send", "-c", good, "-q", "orders", "-a", "novalue", "x"}, 2, "key=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command(qrunBin, tt.args...).CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(string(out), tt.contains) {
				t.Fatalf("qrun %v: exit %d, want %d; output must contain %q:\n%s", tt.args, code, tt.code, tt.contains, out)
			}
		})
	}
}

// TestReadmeTour builds the handler and runs the configuration that
// README.md's tour shows, so the first thing a user reads keeps working.
func TestReadmeTour(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(repoPath(t, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := func(fence, after string) string {
		t.Helper()
		s := string(readme)
		i := strings.Index(s, after)
		if i < 0 {
			t.Fatalf("README has no %q", after)
		}
		j := strings.Index(s[i:], "```"+fence+"\n")
		if j < 0 {
			t.Fatalf("README has no %s block after %q", fence, after)
		}
		body := s[i+j+len(fence)+4:]
		return body[:strings.Index(body, "```")]
	}
	dir := t.TempDir()
	// The handler is a module of its own, as a user's would be, pointed at
	// this checkout's SDK with a replace directive.
	src := filepath.Join(dir, "hello")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	gomod := fmt.Sprintf("module hello\n\ngo 1.24\n\nrequire github.com/qrun-dev/qrun v0.0.0\n\nreplace github.com/qrun-dev/qrun => %s\n", repoPath(t, "."))
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(block("go", "**1. Write a handler.**")), 0o644); err != nil {
		t.Fatal(err)
	}
	wasm := filepath.Join(dir, "hello.wasm")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", wasm, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the README handler: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	cfg := fmt.Sprintf("runtime {\n  admin_listen = %q\n  data_dir = %q\n}\n", addr, filepath.Join(dir, "data")) +
		block("hcl", "**2. Configure it.**")
	cfgPath := filepath.Join(dir, "qrun.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(qrunBin, "validate", "-c", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	runQrun(t, cfgPath)
	c := &admin.Client{BaseURL: "http://" + addr}
	waitFor(t, "qrun to be ready", 60*time.Second, func() (bool, string) {
		err := c.Ready(context.Background())
		return err == nil, fmt.Sprint(err)
	})
	for _, body := range []string{"world", ""} {
		if out, err := exec.Command(qrunBin, "send", "-c", cfgPath, "-q", "hello", body).CombinedOutput(); err != nil {
			t.Fatalf("send %q: %v\n%s", body, err, out)
		}
	}
	waitFor(t, "the tour's messages handled", 30*time.Second, func() (bool, string) {
		d := depths(t, c)
		return d["greetings"] == 1 && d["hello_dead"] == 1 && d["hello"] == 0, fmt.Sprint(d)
	})
}
