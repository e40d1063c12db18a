package plugin

import "fmt"

// Import kinds in the WebAssembly binary format's import section.
const (
	importFunc   = 0
	importTable  = 1
	importMemory = 2
	importGlobal = 3
	importTag    = 4
)

// rawImport is one entry of a module's import section.
type rawImport struct {
	module, name string
	kind         byte
}

// scanImports reads the import section of a WebAssembly binary. wazero's
// CompiledModule describes imported functions and memories only, and qrun
// must also refuse imported globals, tables and tags, which it cannot
// provide. The bytes may be hostile (Check runs on anything): every read is
// bounds-checked, and scanning stops, keeping what it found, at the first
// thing it does not understand or that runs past the end.
func scanImports(wasm []byte) []rawImport {
	r := wasmReader{b: wasm}
	if string(r.bytes(4)) != "\x00asm" || r.bytes(4) == nil {
		return nil
	}
	for !r.bad && len(r.b) > 0 {
		id := r.byte()
		size := r.u32()
		body := r.bytes(size)
		if r.bad {
			return nil
		}
		if id == 2 {
			return parseImportSection(body)
		}
	}
	return nil
}

func parseImportSection(b []byte) []rawImport {
	r := wasmReader{b: b}
	n := r.u32()
	var out []rawImport
	for i := uint64(0); i < n && !r.bad; i++ {
		mod := r.name()
		name := r.name()
		kind := r.byte()
		switch kind {
		case importFunc:
			r.leb()
		case importTable:
			r.byte() // reference type
			r.limits()
		case importMemory:
			r.limits()
		case importGlobal:
			r.byte() // value type
			r.byte() // mutability
		case importTag:
			r.byte() // attribute
			r.leb()
		default:
			return out
		}
		if r.bad {
			return out
		}
		out = append(out, rawImport{module: mod, name: name, kind: kind})
	}
	return out
}

// wasmReader reads the binary format; a read past the end sets bad and
// returns zero values, so callers check bad once after a group of reads.
type wasmReader struct {
	b   []byte
	bad bool
}

func (r *wasmReader) byte() byte {
	if len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wasmReader) bytes(n uint64) []byte {
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

// leb reads an unsigned LEB128 of up to 64 bits.
func (r *wasmReader) leb() uint64 {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		c := r.byte()
		if r.bad {
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
	}
	r.bad = true
	return 0
}

// u32 reads a LEB128 that must fit 32 bits, as sizes and counts do.
func (r *wasmReader) u32() uint64 {
	v := r.leb()
	if v > 1<<32-1 {
		r.bad = true
		return 0
	}
	return v
}

func (r *wasmReader) name() string {
	return string(r.bytes(r.u32()))
}

// limits reads a table or memory type's limits: a flags byte whose bit 0
// says a maximum follows (the other bits, shared and 64-bit, change neither
// the layout nor what qrun thinks of the import).
func (r *wasmReader) limits() {
	flags := r.byte()
	r.leb()
	if flags&1 != 0 {
		r.leb()
	}
}

// importProblem explains why qrun refuses an import that is not a function
// or a memory (those are checked with their signatures in inspect), or ""
// when it is one of those.
func importProblem(im rawImport) string {
	var what string
	switch im.kind {
	case importTable:
		what = "table"
	case importGlobal:
		what = "global"
	case importTag:
		what = "tag"
	default:
		return ""
	}
	return fmt.Sprintf("imports %s %s.%s: qrun provides no %ss", what, im.module, im.name, what)
}
