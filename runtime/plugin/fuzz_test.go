package plugin

import (
	"context"
	"encoding/binary"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzDecodeAttrs checks publish's attribute decoder against its encoder:
// whatever it accepts re-encodes to a form that decodes to the same map.
func FuzzDecodeAttrs(f *testing.F) {
	f.Add(encodeAttrs(map[string]string{"k": "v1", "empty": ""}))
	f.Add([]byte{5, 0, 0, 0, 'k'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := decodeAttrs(b)
		if !ok {
			return
		}
		again, ok := decodeAttrs(encodeAttrs(m))
		if !ok || !maps.Equal(m, again) {
			t.Fatalf("decode(encode(%v)) = %v, %v", m, again, ok)
		}
	})
}

func encodeAttrs(m map[string]string) []byte {
	var out []byte
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(k)))
		out = append(out, k...)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(m[k])))
		out = append(out, m[k]...)
	}
	return out
}

// FuzzCheck feeds mutated modules to the static checker that `qrun validate`
// runs on every plugin: hostile bytes must give a report or an error, never a
// panic.
func FuzzCheck(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.wasm")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, wasm []byte) {
		rep, err := Check(context.Background(), wasm)
		if err == nil && rep != nil && len(rep.Problems) > 0 {
			t.Fatalf("problems %v reported without an error", rep.Problems)
		}
	})
}

func TestScanImports(t *testing.T) {
	// Hand-made: one tag import env.e (wat2wasm needs a flag for tags).
	tag := []byte("\x00asm\x01\x00\x00\x00\x02\x0a\x01\x03env\x01e\x04\x00\x00")
	ims := scanImports(tag)
	if len(ims) != 1 || importProblem(ims[0]) != "imports tag env.e: qrun provides no tags" {
		t.Fatalf("tag import: %+v", ims)
	}
	ims = scanImports(readWasm(t, "foreign_globals"))
	if len(ims) != 2 || ims[0] != (rawImport{"env", "g", importGlobal}) || ims[1] != (rawImport{"env", "t", importTable}) {
		t.Fatalf("foreign_globals: %+v", ims)
	}
	if ims := scanImports(readWasm(t, "ok")); len(ims) != 14 {
		t.Errorf("ok: %d imports, want 14", len(ims))
	}
	// Every prefix of a module, and the tag module with each byte flipped,
	// scans without panicking.
	files, _ := filepath.Glob("testdata/*.wasm")
	for _, name := range append(files, "") {
		b := tag
		if name != "" {
			b, _ = os.ReadFile(name)
		}
		for i := range b {
			scanImports(b[:i])
			c := slices.Clone(b)
			c[i] ^= 0xff
			scanImports(c)
		}
	}
}
