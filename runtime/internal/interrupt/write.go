package interrupt

import "fmt"

// Opcodes the pass emits.
const (
	opUnreachable = 0x00
	opIf          = 0x04
	opBlock       = 0x02
	opEnd         = 0x0b
	opLocalGet    = 0x20
	opLocalSet    = 0x21
	opLocalTee    = 0x22
	opGlobalGet   = 0x23
	opGlobalSet   = 0x24
	opI32Const    = 0x41
	opI32Eqz      = 0x45
	opI32Add      = 0x6a
	opI32Sub      = 0x6b
	opI32LeS      = 0x4c
	opI32LtU      = 0x49
	opMemoryGrow  = 0x40
	opDrop        = 0x1a
	blockEmpty    = 0x40
)

// writer holds the encodings that depend on the module's global count.
type writer struct {
	m                 *module
	stop, depth, fuel []byte // global operands: the LEB128 indices
	out               []byte
	body              []byte // scratch for one function
	sc                scan
	plan              []funcPlan // per defined function
}

func (m *module) write(size int) ([]byte, error) {
	if m.memories == 0 && m.activeData {
		// The memory the pass adds would make this module valid.
		return nil, fmt.Errorf("%w: active data segment in a module without memory", ErrMalformed)
	}
	w := &writer{m: m}
	w.stop = appendU32(nil, m.globals)
	w.depth = appendU32(nil, m.globals+1)
	w.fuel = appendU32(nil, m.globals+2)

	// The code section may append types, so it is built first.
	var code []byte
	haveCode := false
	for i := range m.sections {
		if m.sections[i].id == secCode {
			var err error
			if code, err = w.code(&m.sections[i]); err != nil {
				return nil, err
			}
			haveCode = true
		}
	}
	if !haveCode && len(m.funcTypes) > 0 {
		return nil, fmt.Errorf("%w: %d functions declared but no code section", ErrMalformed, len(m.funcTypes))
	}

	w.out = make([]byte, 0, size+len(code)+64)
	w.out = append(w.out, "\x00asm\x01\x00\x00\x00"...)
	doneGlobal, doneExport := false, false
	doneMemory := m.memories > 0
	for i := range m.sections {
		s := &m.sections[i]
		if s.id != secCustom {
			if !doneMemory && rank(s.id) > rank(secMemory) {
				w.section(secMemory, oneMemory)
				doneMemory = true
			}
			if !doneGlobal && rank(s.id) > rank(secGlobal) {
				w.section(secGlobal, w.globals(nil))
				doneGlobal = true
			}
			if !doneExport && rank(s.id) > rank(secExport) {
				w.section(secExport, w.exports(nil))
				doneExport = true
			}
		}
		switch s.id {
		case secType:
			w.section(secType, w.typeSection(s))
		case secGlobal:
			w.section(secGlobal, w.globals(s))
			doneGlobal = true
		case secExport:
			w.section(secExport, w.exports(s))
			doneExport = true
		case secStart:
			// moved to StartExport
		case secMemory:
			if !doneMemory { // a section declaring no memory
				w.section(secMemory, oneMemory)
				doneMemory = true
			} else {
				w.section(s.id, s.payload.b)
			}
		case secCode:
			w.section(secCode, code)
		default:
			w.section(s.id, s.payload.b)
		}
	}
	if !doneMemory {
		w.section(secMemory, oneMemory)
	}
	if !doneGlobal {
		w.section(secGlobal, w.globals(nil))
	}
	if !doneExport {
		w.section(secExport, w.exports(nil))
	}
	var custom []byte
	custom = appendU32(custom, uint32(len(VersionSection)))
	custom = append(custom, VersionSection...)
	custom = appendU32(custom, Version)
	w.section(secCustom, custom)
	return w.out, nil
}

// oneMemory is a memory section declaring one memory of no pages, for a
// module without memory: the yield (see fuelCheck) needs memory.grow.
var oneMemory = []byte{1, 0x00, 0x00}

func (w *writer) section(id byte, payload []byte) {
	w.out = append(w.out, id)
	w.out = appendU32(w.out, uint32(len(payload)))
	w.out = append(w.out, payload...)
}

// rest returns a vector section's count and the bytes after it.
func rest(s *section) (uint32, []byte) {
	if s == nil {
		return 0, nil
	}
	r := s.payload
	n, _ := r.u32() // read before without error
	return n, r.b[r.pos:]
}

func (w *writer) typeSection(s *section) []byte {
	n, entries := rest(s)
	if len(w.m.newTypes) == 0 {
		return s.payload.b
	}
	b := appendU32(nil, n+uint32(len(w.m.newTypes)))
	b = append(b, entries...)
	for _, t := range w.m.newTypes {
		b = append(b, t...)
	}
	return b
}

func (w *writer) globals(s *section) []byte {
	n, entries := rest(s)
	b := appendU32(nil, n+3)
	b = append(b, entries...)
	b = append(b, 0x7f, 0x01, opI32Const, 0x00, opEnd)
	b = append(b, 0x7f, 0x01, opI32Const)
	b = appendS64(b, DefaultDepth)
	b = append(b, opEnd, 0x7f, 0x01, opI32Const)
	b = appendS64(b, FuelPeriod)
	return append(b, opEnd)
}

func (w *writer) exports(s *section) []byte {
	n, entries := rest(s)
	add := uint32(3)
	if w.m.hasStart {
		add++
	}
	b := appendU32(nil, n+add)
	b = append(b, entries...)
	export := func(name string, kind byte, idx uint32) {
		b = appendU32(b, uint32(len(name)))
		b = append(b, name...)
		b = append(b, kind)
		b = appendU32(b, idx)
	}
	export(StopExport, 0x03, w.m.globals)
	export(DepthExport, 0x03, w.m.globals+1)
	export(FuelExport, 0x03, w.m.globals+2)
	if w.m.hasStart {
		export(StartExport, 0x00, w.m.start)
	}
	return b
}

// blockType returns the encoded block type producing results, appending a
// function type [] -> results when a multi-value block needs one.
func (m *module) blockType(ft *funcType) []byte {
	switch ft.nres {
	case 0:
		return []byte{blockEmpty}
	case 1:
		return ft.results
	}
	key := string(ft.results)
	if bt, ok := m.blockTypes[key]; ok {
		return bt
	}
	idx := -1
	for i, t := range m.types {
		if t.params == 0 && string(t.results) == key {
			idx = i
			break
		}
	}
	if idx < 0 {
		idx = len(m.types) + len(m.newTypes)
		t := appendU32([]byte{0x60, 0x00}, ft.nres)
		t = append(t, ft.results...)
		m.newTypes = append(m.newTypes, t)
	}
	bt := appendS64(nil, int64(idx))
	m.blockTypes[key] = bt
	return bt
}

func (w *writer) code(s *section) ([]byte, error) {
	r := s.payload
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if int(n) != len(w.m.funcTypes) {
		return nil, r.errf("code section has %d bodies for %d functions", n, len(w.m.funcTypes))
	}
	// Two passes: the first learns every body's calls and loops, for the
	// plan (callgraph.go); the second rewrites.
	bodies := make([]reader, n)
	infos := make([]funcInfo, n)
	for i := uint32(0); i < n; i++ {
		size, err := r.u32()
		if err != nil {
			return nil, err
		}
		start := r.pos
		if err := r.skip(int(size)); err != nil {
			return nil, err
		}
		bodies[i] = reader{b: r.b[start:r.pos], base: r.base + start}
		body := bodies[i]
		if _, err := w.scanBody(&body, w.m.funcTypes[i]); err != nil {
			return nil, err
		}
		for _, c := range w.sc.callees {
			if uint64(c) >= uint64(w.m.importedFuncs)+uint64(n) {
				return nil, body.errf("call to function %d, past the module's %d functions", c, uint64(w.m.importedFuncs)+uint64(n))
			}
		}
		w.m.refs = append(w.m.refs, w.sc.refs...)
		infos[i] = funcInfo{
			loops: w.sc.loops(), catches: w.sc.catches, calls: w.sc.calls,
			callees: append([]uint32(nil), w.sc.callees...), tails: append([]uint32(nil), w.sc.tails...),
			indirect: w.sc.indirect, tailIndirect: w.sc.tailIndirect,
		}
	}
	if !r.done() {
		return nil, r.errf("trailing bytes in the code section")
	}
	w.plan = plan(infos, w.m.importedFuncs, w.m.refs, w.m.count.calls, w.m.count.entries)
	out := make([]byte, 0, len(r.b)+len(r.b)/4)
	out = appendU32(out, n)
	for i := range bodies {
		if err := w.function(&bodies[i], w.m.funcTypes[i], w.plan[i]); err != nil {
			return nil, err
		}
		out = appendU32(out, uint32(len(w.body)))
		out = append(out, w.body...)
	}
	return out, nil
}

// bodyHeader is where a function body's local declarations end.
type bodyHeader struct {
	groups               uint32
	groupsEnd, localsEnd int
	locals               uint64
}

// scanBody reads one body's locals and decodes its expression into w.sc.
func (w *writer) scanBody(r *reader, typeIdx uint32) (bodyHeader, error) {
	var h bodyHeader
	if int(typeIdx) >= len(w.m.types) {
		return h, r.errf("function type %d out of range", typeIdx)
	}
	ft := &w.m.types[typeIdx]
	var err error
	if h.groups, err = r.u32(); err != nil {
		return h, err
	}
	h.groupsEnd = r.pos
	h.locals = uint64(ft.params)
	for g := uint32(0); g < h.groups; g++ {
		c, err := r.u32()
		if err != nil {
			return h, err
		}
		h.locals += uint64(c)
		if err := r.valType(); err != nil {
			return h, err
		}
	}
	h.localsEnd = r.pos
	w.sc.reset()
	if err := expr(r, w.m.globals, &w.sc); err != nil {
		return h, err
	}
	if w.sc.memory && w.m.memories == 0 {
		// The memory the pass adds would make this module valid.
		return h, r.errf("memory instruction in a module without memory")
	}
	if !r.done() {
		return h, r.errf("bytes after the end of a function body")
	}
	return h, nil
}

// loops reports whether the scanned expression has a loop.
func (s *scan) loops() bool {
	for _, p := range s.points {
		if p.kind == atLoop {
			return true
		}
	}
	return false
}

// function rewrites one body into w.body, as fp says.
func (w *writer) function(r *reader, typeIdx uint32, fp funcPlan) error {
	h, err := w.scanBody(r, typeIdx)
	if err != nil {
		return err
	}
	ft := &w.m.types[typeIdx]
	groups, groupsEnd, localsEnd, locals := h.groups, h.groupsEnd, h.localsEnd, h.locals
	exprStart := localsEnd
	loops := w.sc.loops()
	if fp.kind == kindLeaf {
		// A leaf: no loop, no call, so it runs in time bounded by its size
		// and adds one frame at most beyond the depth bound. It is kept as
		// it is, which spares the small helpers that call-heavy code calls
		// most (getters, arithmetic) every check.
		w.body = append(w.body[:0], r.b...)
		return nil
	}
	checked := fp.kind == kindChecked
	catches := w.sc.catches && checked // an unchecked function never catches
	// Added i32 locals, after all others: the loop counter when the
	// function loops, the saved depth when it catches.
	var added uint32
	counter := appendU32(nil, uint32(locals))
	if loops {
		added++
	}
	saved := appendU32(nil, uint32(locals)+added)
	if catches {
		added++
	}
	if locals+uint64(added) > 1<<32-1 {
		return r.errf("too many locals")
	}

	b := w.body[:0]
	if added > 0 {
		b = appendU32(b, groups+1)
		b = append(b, r.b[groupsEnd:localsEnd]...)
		b = appendU32(b, added)
		b = append(b, 0x7f)
	} else {
		b = append(b, r.b[:localsEnd]...)
	}
	weight := appendS64(nil, int64(fp.weight))
	if checked {
		// Entry: trap when out of depth, take weight levels, spend fuel.
		b = append(b, opGlobalGet)
		b = append(b, w.depth...)
		if fp.weight == 1 {
			b = append(b, opI32Eqz, opIf, blockEmpty, opUnreachable, opEnd)
		} else {
			// Fewer levels left than the weight: trap, leaving depth at
			// 0, which is how the host tells a depth trap.
			b = append(b, opI32Const)
			b = append(b, weight...)
			b = append(b, opI32LtU, opIf, blockEmpty, opI32Const, 0x00, opGlobalSet)
			b = append(b, w.depth...)
			b = append(b, opUnreachable, opEnd)
		}
		b = append(b, opGlobalGet)
		b = append(b, w.depth...)
		b = append(b, opI32Const)
		b = append(b, weight...)
		b = append(b, opI32Sub, opGlobalSet)
		b = append(b, w.depth...)
		b = w.fuelCheck(b)
	}
	if loops {
		b = append(b, opI32Const)
		b = appendS64(b, LoopPeriod)
		b = append(b, opLocalSet)
		b = append(b, counter...)
	}
	if catches {
		b = append(b, opGlobalGet)
		b = append(b, w.depth...)
		b = append(b, opLocalSet)
		b = append(b, saved...)
	}
	if !checked {
		// No entry check, so no exit: only the loops are checked.
		src := r.b[exprStart:]
		prev := 0
		for _, p := range w.sc.points {
			if p.kind == atLoop {
				off := int(p.off)
				b = append(b, src[prev:off]...)
				b = w.loopCheck(b, counter)
				prev = off
			}
		}
		b = append(b, src[prev:w.sc.end]...)
		w.body = append(b, opEnd)
		return nil
	}
	b = append(b, opBlock)
	b = append(b, w.m.blockType(ft)...)

	exit := func(b []byte) []byte {
		if catches {
			b = append(b, opLocalGet)
			b = append(b, saved...)
		} else {
			b = append(b, opGlobalGet)
			b = append(b, w.depth...)
		}
		b = append(b, opI32Const)
		b = append(b, weight...)
		b = append(b, opI32Add, opGlobalSet)
		return append(b, w.depth...)
	}
	restore := func(b []byte) []byte {
		b = append(b, opLocalGet)
		b = append(b, saved...)
		b = append(b, opGlobalSet)
		return append(b, w.depth...)
	}
	src := r.b[exprStart:]
	prev := 0
	for _, p := range w.sc.points {
		off := int(p.off)
		switch p.kind {
		case atLoop:
			b = append(b, src[prev:off]...)
			b = w.loopCheck(b, counter)
			if catches {
				b = restore(b)
			}
		case atExit:
			b = append(b, src[prev:off]...)
			b = exit(b)
		case atEnd, atCatch:
			if !catches {
				continue
			}
			b = append(b, src[prev:off]...)
			b = restore(b)
		}
		prev = off
	}
	b = append(b, src[prev:w.sc.end]...)
	b = append(b, opEnd) // the added block
	b = exit(b)
	b = append(b, opEnd) // the function
	w.body = b
	return nil
}

// loopCheck appends the check at a loop header. The counter is a local,
// i.e. a register: the common path is a decrement and a branch.
//
//	counter -= 1
//	if counter == 0 {
//	    drop(memory.grow(0))  ;; leaves machine code for Go: a preemption point
//	    if stop { unreachable }
//	    counter = LoopPeriod
//	}
func (w *writer) loopCheck(b, counter []byte) []byte {
	if w.m.count.loops {
		b = w.fuelCheck(b)
	}
	b = append(b, opLocalGet)
	b = append(b, counter...)
	b = append(b, opI32Const, 0x01, opI32Sub, opLocalTee)
	b = append(b, counter...)
	b = append(b, opI32Eqz, opIf, blockEmpty)
	b = append(b, opI32Const, 0x00, opMemoryGrow, 0x00, opDrop, opGlobalGet)
	b = append(b, w.stop...)
	b = append(b, opIf, blockEmpty, opUnreachable, opEnd, opI32Const)
	b = appendS64(b, LoopPeriod)
	b = append(b, opLocalSet)
	b = append(b, counter...)
	return append(b, opEnd)
}

// fuelCheck appends the check at a function entry:
//
//	fuel -= 1
//	if fuel <= 0 {
//	    drop(memory.grow(0))  ;; leaves machine code for Go: a preemption point
//	    if stop { unreachable }  ;; fuel stays <= 0: every later check traps too
//	    fuel = FuelPeriod
//	}
func (w *writer) fuelCheck(b []byte) []byte {
	b = append(b, opGlobalGet)
	b = append(b, w.fuel...)
	b = append(b, opI32Const, 0x01, opI32Sub, opGlobalSet)
	b = append(b, w.fuel...)
	b = append(b, opGlobalGet)
	b = append(b, w.fuel...)
	b = append(b, opI32Const, 0x00, opI32LeS, opIf, blockEmpty)
	b = append(b, opI32Const, 0x00, opMemoryGrow, 0x00, opDrop, opGlobalGet)
	b = append(b, w.stop...)
	b = append(b, opIf, blockEmpty, opUnreachable, opEnd, opI32Const)
	b = appendS64(b, FuelPeriod)
	b = append(b, opGlobalSet)
	b = append(b, w.fuel...)
	return append(b, opEnd)
}
