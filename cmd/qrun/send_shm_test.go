package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/shm"
	"github.com/qrun-dev/qrun/internal/testenv"
)

// TestSendDirectToShm: `qrun send` produces into an shm queue from its own
// process, with no qrun running and the admin API off, and a consumer in
// another process (this test) receives exactly what was sent. A consumer
// of another queue whose plugin is not even WebAssembly does not stop it:
// send needs the target queue only.
func TestSendDirectToShm(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		testenv.Missing(t, fmt.Sprintf("no /dev/shm (%v); the shm engine needs POSIX shared memory", err))
	}
	t.Parallel()
	prefix := fmt.Sprintf("qrun-clitest-%d.", os.Getpid())
	t.Cleanup(func() {
		paths, _ := filepath.Glob("/dev/shm/" + prefix + "*")
		for _, p := range paths {
			_ = os.Remove(p)
		}
	})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "shm.hcl")
	broken := filepath.Join(dir, "broken.wasm")
	if err := os.WriteFile(broken, []byte("not a wasm module"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "fast" {
  type      = "shm"
  prefix    = %q
  slot_size = 256
  capacity  = 16
}
engine "mem" { type = "memory" }
queue "jobs" { engine = "fast" }
queue "other" { engine = "mem" }
consumer "broken" {
  queue  = "other"
  plugin = %q
}
`, prefix, broken)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, args := range [][]string{{"first"}, {"-a", "k=v", "-content-type", "text/plain", "second"}} {
		out, err := exec.Command(qrunBin, append([]string{"send", "-c", cfgPath, "-q", "jobs"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("qrun send %v: %v\n%s", args, err, out)
		}
		ids = append(ids, strings.TrimSpace(string(out)))
	}

	e, err := shm.New(shm.Options{Prefix: prefix, SlotSize: 256, Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	q, err := e.Open(context.Background(), engines.QueueSpec{Name: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds, err := engines.ReceiveN(ctx, q, 2)
	if err == nil && len(ds) < 2 {
		var more []engines.Delivery
		more, err = engines.ReceiveN(ctx, q, 2-len(ds))
		ds = append(ds, more...)
	}
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if string(ds[0].Body) != "first" || ds[0].ID != ids[0] {
		t.Errorf("first delivery %q id %q, want %q id %q", ds[0].Body, ds[0].ID, "first", ids[0])
	}
	if string(ds[1].Body) != "second" || ds[1].ID != ids[1] || ds[1].Attributes["k"] != "v" || ds[1].ContentType != "text/plain" {
		t.Errorf("second delivery %q id %q attrs %v type %q", ds[1].Body, ds[1].ID, ds[1].Attributes, ds[1].ContentType)
	}
}
