package interrupt

import (
	"bytes"
	"fmt"
	"strings"
)

// Section ids.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// rank orders the known sections as the binary format requires (the tag
// section sits between memory and global); 0 for an unknown id.
func rank(id byte) int {
	switch id {
	case secType, secImport, secFunction, secTable, secMemory:
		return int(id) * 2
	case secTag:
		return 11
	case secGlobal, secExport, secStart, secElement:
		return int(id) * 2
	case secDataCount:
		return 19
	case secCode, secData:
		return int(id)*2 + 1 // 21, 23: after data count (19) and element (18)
	}
	return 0
}

type section struct {
	id      byte
	payload reader
}

type funcType struct {
	params  uint32
	results []byte // the encoded result types
	nres    uint32
}

// module is what the pass learns about a module before rewriting it.
type module struct {
	sections []section
	types    []funcType
	newTypes [][]byte // function types appended to the type section
	// blockTypes caches the wrapper block type per encoded result list.
	blockTypes map[string][]byte

	importedFuncs uint32
	funcTypes     []uint32 // type index per defined function
	globals       uint32   // imported + defined globals of the original
	memories      uint32   // imported + defined memories
	activeData    bool     // an active data segment, which needs a memory
	hasStart      bool
	start         uint32
	// refs lists the functions an element segment or a constant
	// expression names: those a table can hold.
	refs []uint32
	cs   scan // scratch for constant expressions

	count counting // test hook: see counting
}

// counting is a test hook that turns the pass into a counter: fuel,
// started high enough never to run out, then counts what it names.
type counting struct {
	// calls instruments leaf functions too, so fuel counts every call.
	calls bool
	// loops makes a loop header spend fuel as a function entry does, so
	// fuel counts loop iterations too.
	loops bool
	// entries gives every function that loops or calls its entry check,
	// as version 1 of the pass did (for BenchmarkDelivery's comparison).
	entries bool
}

// Instrument returns wasm with the stop and depth checks described in the
// package documentation. It refuses (with an *UnsupportedError, a
// *ReservedError or an error wrapping ErrMalformed) a module it cannot
// decode completely or that uses what the pass reserves.
func Instrument(wasm []byte) ([]byte, error) { return instrument(wasm, counting{}) }

func instrument(wasm []byte, count counting) ([]byte, error) {
	if len(wasm) < 8 || !bytes.Equal(wasm[:4], []byte("\x00asm")) || !bytes.Equal(wasm[4:8], []byte{1, 0, 0, 0}) {
		return nil, fmt.Errorf("%w: not a WebAssembly 1.0 binary", ErrMalformed)
	}
	m := &module{blockTypes: make(map[string][]byte), count: count}
	r := &reader{b: wasm, pos: 8}
	last := 0
	for !r.done() {
		id, err := r.byte()
		if err != nil {
			return nil, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, err
		}
		start := r.pos
		if err := r.skip(int(size)); err != nil {
			return nil, err
		}
		if id != secCustom {
			rk := rank(id)
			if rk == 0 {
				return nil, r.errf("unknown section id %d", id)
			}
			if rk <= last {
				return nil, r.errf("section %d out of order or repeated", id)
			}
			last = rk
		}
		m.sections = append(m.sections, section{id: id, payload: reader{b: wasm[start:r.pos], base: start}})
	}
	for i := range m.sections {
		if err := m.read(&m.sections[i]); err != nil {
			return nil, err
		}
	}
	return m.write(len(wasm))
}

// read learns from one section and checks what the pass relies on.
func (m *module) read(s *section) error {
	r := s.payload // a copy: the writer reads the section again
	var n uint32
	if s.id != secCustom && s.id != secStart && s.id != secDataCount {
		var err error
		if n, err = r.u32(); err != nil {
			return err
		}
	}
	switch s.id {
	case secType:
		for i := uint32(0); i < n; i++ {
			form, err := r.byte()
			if err != nil {
				return err
			}
			if form != 0x60 {
				return r.errf("unsupported type form %#x", form)
			}
			var ft funcType
			np, err := valTypes(&r)
			if err != nil {
				return err
			}
			ft.params = np
			if ft.nres, err = r.u32(); err != nil {
				return err
			}
			rs := r.pos
			for j := uint32(0); j < ft.nres; j++ {
				if err := r.valType(); err != nil {
					return err
				}
			}
			ft.results = r.b[rs:r.pos]
			m.types = append(m.types, ft)
		}
	case secImport:
		for i := uint32(0); i < n; i++ {
			if _, err := r.name(); err != nil {
				return err
			}
			if _, err := r.name(); err != nil {
				return err
			}
			kind, err := r.byte()
			if err != nil {
				return err
			}
			switch kind {
			case 0x00: // function
				_, err = r.u32()
				m.importedFuncs++
			case 0x01: // table
				if err = r.valType(); err == nil {
					err = r.limits()
				}
			case 0x02: // memory
				err = r.limits()
				m.memories++
			case 0x03: // global
				if err = r.valType(); err == nil {
					_, err = r.byte()
				}
				m.globals++
			case 0x04: // tag
				if _, err = r.byte(); err == nil {
					_, err = r.u32()
				}
			default:
				return r.errf("invalid import kind %#x", kind)
			}
			if err != nil {
				return err
			}
		}
	case secFunction:
		for i := uint32(0); i < n; i++ {
			t, err := r.u32()
			if err != nil {
				return err
			}
			m.funcTypes = append(m.funcTypes, t)
		}
	case secTable:
		for i := uint32(0); i < n; i++ {
			c, err := r.byte()
			if err != nil {
				return err
			}
			hasInit := c == 0x40
			if hasInit {
				if err := r.skip(1); err != nil {
					return err
				}
			} else {
				r.pos--
			}
			if err := r.valType(); err != nil {
				return err
			}
			if err := r.limits(); err != nil {
				return err
			}
			if hasInit {
				if err := m.constExpr(&r); err != nil {
					return err
				}
			}
		}
	case secMemory:
		m.memories += n
		for i := uint32(0); i < n; i++ {
			if err := r.limits(); err != nil {
				return err
			}
		}
	case secGlobal:
		// Constant expressions may name imported globals only, so counting
		// as we go would also do; the final count is what matters here.
		total := m.globals + n
		for i := uint32(0); i < n; i++ {
			if err := r.valType(); err != nil {
				return err
			}
			if err := r.skip(1); err != nil {
				return err
			}
			if err := m.constExprIn(&r, total); err != nil {
				return err
			}
		}
		m.globals = total
	case secExport:
		for i := uint32(0); i < n; i++ {
			at := r.off()
			name, err := r.name()
			if err != nil {
				return err
			}
			if strings.HasPrefix(name, ReservedPrefix) {
				return &ReservedError{Offset: at, What: fmt.Sprintf("export %q uses the reserved prefix %q", name, ReservedPrefix)}
			}
			kind, err := r.byte()
			if err != nil {
				return err
			}
			idx, err := r.u32()
			if err != nil {
				return err
			}
			if kind == 0x03 && idx >= m.globals {
				return &ReservedError{Offset: at, What: fmt.Sprintf("export %q refers to global %d, past the module's %d globals", name, idx, m.globals)}
			}
		}
	case secStart:
		idx, err := r.u32()
		if err != nil {
			return err
		}
		m.hasStart, m.start = true, idx
	case secElement:
		for i := uint32(0); i < n; i++ {
			if err := m.element(&r); err != nil {
				return err
			}
		}
	case secData:
		for i := uint32(0); i < n; i++ {
			flags, err := r.u32()
			if err != nil {
				return err
			}
			m.activeData = m.activeData || flags != 1
			switch flags {
			case 0:
				err = m.constExpr(&r)
			case 1:
			case 2:
				if _, err = r.u32(); err == nil {
					err = m.constExpr(&r)
				}
			default:
				return r.errf("invalid data segment flags %d", flags)
			}
			if err != nil {
				return err
			}
			size, err := r.u32()
			if err != nil {
				return err
			}
			if err := r.skip(int(size)); err != nil {
				return err
			}
		}
	case secCustom, secDataCount, secTag, secCode:
		return nil // kept as they are (code is read when written)
	}
	if !r.done() {
		return r.errf("section %d has %d bytes past its contents", s.id, len(r.b)-r.pos)
	}
	return nil
}

func valTypes(r *reader) (uint32, error) {
	n, err := r.u32()
	if err != nil {
		return 0, err
	}
	for i := uint32(0); i < n; i++ {
		if err := r.valType(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (m *module) constExpr(r *reader) error { return m.constExprIn(r, m.globals) }

// constExprIn reads a constant expression that may name globals below
// globals, noting the functions it names.
func (m *module) constExprIn(r *reader, globals uint32) error {
	m.cs.reset()
	err := expr(r, globals, &m.cs)
	m.refs = append(m.refs, m.cs.refs...)
	return err
}

// element reads one element segment (all eight encodings).
func (m *module) element(r *reader) error {
	flags, err := r.u32()
	if err != nil {
		return err
	}
	if flags > 7 {
		return r.errf("invalid element segment flags %d", flags)
	}
	if flags&2 != 0 && flags&1 == 0 { // active with an explicit table
		if _, err := r.u32(); err != nil {
			return err
		}
	}
	if flags&1 == 0 { // active: offset
		if err := m.constExpr(r); err != nil {
			return err
		}
	}
	if flags&3 != 0 { // elemkind or reftype
		if flags&4 != 0 {
			err = r.valType()
		} else {
			_, err = r.byte()
		}
		if err != nil {
			return err
		}
	}
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		if flags&4 != 0 {
			err = m.constExpr(r)
		} else {
			var f uint32
			f, err = r.u32()
			m.refs = append(m.refs, f)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
