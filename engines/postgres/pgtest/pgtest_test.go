package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestReapStale: a cluster directory whose owning test binary is gone is
// removed; one whose owner runs is left alone.
func TestReapStale(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skipf("SKIPPING: cannot run true: %v", err)
	}
	for name, pid := range map[string]int{"qrun-pg-dead": dead.Process.Pid, "qrun-pg-live": os.Getpid()} {
		dir := filepath.Join(tmp, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reapStale(BinDir)
	if _, err := os.Stat(filepath.Join(tmp, "qrun-pg-dead")); !os.IsNotExist(err) {
		t.Fatalf("stale cluster dir still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "qrun-pg-live")); err != nil {
		t.Fatalf("live cluster dir removed: %v", err)
	}
}
