package main_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/admin"
)

const startConfig = `
runtime {
  data_dir     = %q
  admin_listen = %q
  log_level    = "info"
}
engine "mem" { type = "memory" }
queue "orders"       { engine = "mem" }
queue "orders_valid" { engine = "mem" }
consumer "orders" {
  queue   = "orders"
  plugin  = %q
  config  = { forward_to = "orders_valid" }
  publish = ["orders_valid"]
}
`

// cacheState lists the compilation cache's files with size and mtime.
func cacheState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%d %d", fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSecondStartUsesCompilationCache starts qrun twice on the same data
// directory with the 3 MB Go example: the first start compiles it into
// <data_dir>/cache, the second must load it from there and compile nothing
// (the cache is left exactly as it was). The two start times, exec to
// /readyz, are logged: they are the cold and warm figures of docs/writing-handlers.md.
func TestSecondStartUsesCompilationCache(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "qrun.hcl")
	cfg := fmt.Sprintf(startConfig, filepath.Join(dir, "data"), addr, repoPath(t, "plugins/examples/go/orders/orders.wasm"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &admin.Client{BaseURL: "http://" + addr}
	start := func() time.Duration {
		began := time.Now()
		p := runQrun(t, cfgPath)
		waitReady(t, c)
		took := time.Since(began)
		p.signal(t, syscall.SIGTERM)
		if code := p.wait(t, time.Minute); code != 0 {
			t.Fatalf("qrun exited with %d\n%s", code, p.stderr)
		}
		return took
	}

	cold := start()
	cache := filepath.Join(dir, "data", "cache")
	before := cacheState(t, cache)
	if len(before) == 0 {
		t.Fatalf("the first start left nothing in %s", cache)
	}
	warm := start()
	after := cacheState(t, cache)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("the second start changed the compilation cache (it compiled again):\nbefore %v\nafter  %v", before, after)
	}
	t.Logf("qrun start to ready with the Go example: cold (compiling) %v, warm (from the cache) %v", cold.Round(time.Millisecond), warm.Round(time.Millisecond))
}
