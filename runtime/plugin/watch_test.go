package plugin

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Every way a file gets replaced triggers the watch, and by the time the
// debounced call runs the file is complete.
func TestWatcherSeesReplacements(t *testing.T) {
	t.Parallel()
	final := bytes.Repeat([]byte("new module "), 20000) // 220 KB: several writes
	tests := []struct {
		name    string
		replace func(t *testing.T, path string)
	}{
		{"rename over", func(t *testing.T, path string) {
			tmp := filepath.Join(filepath.Dir(path), ".plugin.wasm.tmp")
			if err := os.WriteFile(tmp, final, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"write in place in chunks", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < len(final); off += 4096 {
				if _, err := f.Write(final[off:min(off+4096, len(final))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"remove then create", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, final, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, err := NewWatcher(nil, 50*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = w.Close() })
			dir := t.TempDir()
			path := filepath.Join(dir, "plugin.wasm")
			if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			seen := make(chan []byte, 16)
			stop, err := w.Watch(path, func() {
				b, _ := os.ReadFile(path)
				seen <- b
			})
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			// A file next to it is not the plugin and must not count.
			if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			tt.replace(t, path)
			for {
				select {
				case b := <-seen:
					if bytes.Equal(b, final) {
						return
					}
					// An earlier trigger (the notes file's creation pokes the
					// directory) may read the old or a partial file; the
					// final state must still arrive.
				case <-time.After(10 * time.Second):
					t.Fatal("no call with the complete new file")
				}
			}
		})
	}
}

func TestWatcherStopEndsCalls(t *testing.T) {
	t.Parallel()
	w, err := NewWatcher(nil, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.wasm"), filepath.Join(dir, "b.wasm")
	calls := make(chan string, 16)
	stopA, err := w.Watch(a, func() { calls <- "a" })
	if err != nil {
		t.Fatal(err)
	}
	stopB, err := w.Watch(b, func() { calls <- "b" })
	if err != nil {
		t.Fatal(err)
	}
	defer stopB()
	stopA()
	// a is written first; if its watch were still on, its call would come
	// before b's, since both share one event stream in order.
	if err := os.WriteFile(a, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-calls:
		if got != "b" {
			t.Fatalf("first call for %q after its watch stopped", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no call for b")
	}
}
