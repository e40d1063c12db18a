package plugin

import (
	"os"
	"path/filepath"
	"testing"
)

// Where wasi_grants.wat leaves what it saw.
const (
	offEnvErr   = 0x100
	offEnvCount = 0x104
	offEnvBytes = 0x108
	offDirErr   = 0x10c
	offOpenErr  = 0x110
	offLinkErr  = 0x118
	offEscErr   = 0x11c
	offEnv      = 0x400
	offDirName  = 0x600
)

func TestWASIDeniedByDefault(t *testing.T) {
	t.Setenv("QRUN_TEST_SECRET", "must not leak")
	h := newTestHost(t, nil)
	p := load(t, h, "wasi_grants", Spec{}, nil)
	in := newInstance(t, p)
	mustHandle(t, in, delivery("x", nil))
	if n := memI32(t, in, offEnvCount); n != 0 {
		t.Fatalf("guest sees %d environment variables, want 0", n)
	}
	if e := memI32(t, in, offDirErr); e == 0 {
		t.Fatal("guest has a preopened directory without a grant")
	}
	if e := memI32(t, in, offOpenErr); e == 0 {
		t.Fatal("path_open succeeded without a grant")
	}
}

func TestWASIGrants(t *testing.T) {
	for _, rw := range []bool{false, true} {
		dir := t.TempDir()
		h := newTestHost(t, nil)
		p := load(t, h, "wasi_grants", Spec{
			Env:  map[string]string{"B": "2", "A": "1"},
			Dirs: []Dir{{Host: dir, Guest: "/data", ReadWrite: rw}},
		}, nil)
		in := newInstance(t, p)
		mustHandle(t, in, delivery("x", nil))
		if n, b := memI32(t, in, offEnvCount), memI32(t, in, offEnvBytes); n != 2 || b != 8 {
			t.Fatalf("environment: %d variables, %d bytes; want 2, 8", n, b)
		}
		if env := memStr(t, in, offEnv, 8); env != "A=1\x00B=2\x00" {
			t.Fatalf("environment %q", env)
		}
		if e, name := memI32(t, in, offDirErr), memStr(t, in, offDirName, 5); e != 0 || name != "/data" {
			t.Fatalf("preopen 3: errno %d, name %q", e, name)
		}
		_, statErr := os.Stat(filepath.Join(dir, "new.txt"))
		e := memI32(t, in, offOpenErr)
		if rw && (e != 0 || statErr != nil) {
			t.Fatalf("read-write: path_open errno %d, file: %v", e, statErr)
		}
		if !rw && (e == 0 || statErr == nil) {
			t.Fatalf("read-only: path_open errno %d, file created: %v", e, statErr == nil)
		}
		// Neither a symbolic link nor ".." leads out of the directory.
		if _, err := os.Lstat(filepath.Join(dir, "ln")); memI32(t, in, offLinkErr) == 0 || err == nil {
			t.Fatalf("read_write=%v: path_symlink errno %d, link exists: %v", rw, memI32(t, in, offLinkErr), err == nil)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape.txt")); memI32(t, in, offEscErr) == 0 || err == nil {
			t.Fatalf("read_write=%v: path_open(../escape.txt) errno %d, created outside: %v", rw, memI32(t, in, offEscErr), err == nil)
		}
	}
}
