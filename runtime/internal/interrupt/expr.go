package interrupt

import "fmt"

// Kinds of insertion points in a function body.
const (
	atLoop  = iota // after a loop's block type: stop check (and restore)
	atExit         // before return and tail calls: depth += 1
	atEnd          // after an inner end or delegate: restore, when the function catches
	atCatch        // after catch or catch_all: restore, when the function catches
)

// point is an insertion point: off is relative to the start of the body
// expression being scanned.
type point struct {
	off  int32
	kind uint8
}

// scan is the result of decoding one expression.
type scan struct {
	points []point
	// catches is set when the expression contains try, catch, catch_all or
	// try_table, i.e. can land in a handler after frames were unwound.
	catches bool
	// end is the offset of the expression's final end.
	end int
	// memory is set when an instruction needs a memory.
	memory bool
	// calls is set when the expression calls a function (tail calls
	// included).
	calls bool
	// callees lists the function index of every direct call and
	// return_call, once per instruction; tails those of return_call.
	callees, tails []uint32
	// indirect is set by call_indirect, call_ref and their tail forms;
	// tailIndirect by return_call_indirect and return_call_ref.
	indirect, tailIndirect bool
	// refs lists the functions named by ref.func.
	refs []uint32
}

// reset empties s for the next function body.
func (s *scan) reset() {
	s.points, s.callees, s.tails, s.refs = s.points[:0], s.callees[:0], s.tails[:0], s.refs[:0]
	s.catches, s.memory, s.calls, s.indirect, s.tailIndirect = false, false, false, false, false
}

// expr decodes instructions from r until the end that closes the
// expression, checking every global index against globals. With s nil
// (constant expressions) no points are recorded.
func expr(r *reader, globals uint32, s *scan) error {
	start := r.pos
	depth := 0
	usesMemory := func() {
		if s != nil {
			s.memory = true
		}
	}
	mark := func(kind uint8, off int) {
		if s != nil {
			s.points = append(s.points, point{off: int32(off - start), kind: kind})
		}
	}
	for {
		at := r.pos
		op, err := r.byte()
		if err != nil {
			return err
		}
		switch {
		case op == 0x00, op == 0x01, op == 0x05, op == 0x0a, op == 0x1a, op == 0x1b,
			op == 0xd1, op == 0xd4, 0x45 <= op && op <= 0xc4:
			// no immediates
		case op == 0x02, op == 0x04: // block, if
			depth++
			if err := r.blockType(); err != nil {
				return err
			}
		case op == 0x03: // loop
			depth++
			if err := r.blockType(); err != nil {
				return err
			}
			mark(atLoop, r.pos)
		case op == 0x06: // try (legacy exception handling)
			depth++
			if s != nil {
				s.catches = true
			}
			if err := r.blockType(); err != nil {
				return err
			}
		case op == 0x07: // catch tag
			if s != nil {
				s.catches = true
			}
			if _, err := r.u32(); err != nil {
				return err
			}
			mark(atCatch, r.pos)
		case op == 0x19: // catch_all
			if s != nil {
				s.catches = true
			}
			mark(atCatch, r.pos)
		case op == 0x0b, op == 0x18: // end, delegate label
			if op == 0x18 {
				if _, err := r.u32(); err != nil {
					return err
				}
			}
			if depth == 0 {
				if op != 0x0b {
					return r.errf("delegate outside a try")
				}
				if s != nil {
					s.end = at - start
				}
				return nil
			}
			depth--
			mark(atEnd, r.pos)
		case op == 0x1f: // try_table blocktype vec(catch)
			depth++
			if s != nil {
				s.catches = true
			}
			if err := r.blockType(); err != nil {
				return err
			}
			n, err := r.u32()
			if err != nil {
				return err
			}
			for i := uint32(0); i < n; i++ {
				kind, err := r.byte()
				if err != nil {
					return err
				}
				switch kind {
				case 0x00, 0x01: // catch / catch_ref: tag label
					if _, err := r.u32(); err != nil {
						return err
					}
				case 0x02, 0x03: // catch_all / catch_all_ref: label
				default:
					return r.errf("invalid catch clause kind %#x", kind)
				}
				if _, err := r.u32(); err != nil {
					return err
				}
			}
		case op == 0x0f: // return
			mark(atExit, at)
		case op == 0x12, op == 0x15: // return_call f, return_call_ref t
			mark(atExit, at)
			idx, err := r.u32()
			if err != nil {
				return err
			}
			if s != nil {
				s.calls = true
				if op == 0x12 {
					s.callees = append(s.callees, idx)
					s.tails = append(s.tails, idx)
				} else {
					s.indirect, s.tailIndirect = true, true
				}
			}
		case op == 0xd2: // ref.func f
			idx, err := r.u32()
			if err != nil {
				return err
			}
			if s != nil {
				s.refs = append(s.refs, idx)
			}
		case op == 0x10: // call f
			idx, err := r.u32()
			if err != nil {
				return err
			}
			if s != nil {
				s.calls = true
				s.callees = append(s.callees, idx)
			}
		case op == 0x13: // return_call_indirect t table
			mark(atExit, at)
			if s != nil {
				s.calls, s.indirect, s.tailIndirect = true, true, true
			}
			if err := u32s(r, 2); err != nil {
				return err
			}
		case op == 0x08, op == 0x09, op == 0x0c, op == 0x0d, op == 0x14,
			op == 0x20, op == 0x21, op == 0x22, op == 0x25, op == 0x26,
			op == 0x3f, op == 0x40, op == 0xd5, op == 0xd6:
			if op == 0x3f || op == 0x40 {
				usesMemory()
			}
			if op == 0x14 && s != nil {
				s.calls, s.indirect = true, true
			}
			// throw, rethrow, br, br_if, call_ref, local.*, table.get/set,
			// memory.size/grow, br_on_null, br_on_non_null: one index
			if _, err := r.u32(); err != nil {
				return err
			}
		case op == 0x23, op == 0x24: // global.get, global.set
			g, err := r.u32()
			if err != nil {
				return err
			}
			if g >= globals {
				return &ReservedError{Offset: r.base + at, What: fmt.Sprintf("instruction refers to global %d, past the module's %d globals", g, globals)}
			}
		case op == 0x0e: // br_table vec(label) label
			n, err := r.u32()
			if err != nil {
				return err
			}
			if err := u32s(r, int(n)+1); err != nil {
				return err
			}
		case op == 0x11: // call_indirect type table
			if s != nil {
				s.calls, s.indirect = true, true
			}
			if err := u32s(r, 2); err != nil {
				return err
			}
		case op == 0x1c: // select t*
			n, err := r.u32()
			if err != nil {
				return err
			}
			for i := uint32(0); i < n; i++ {
				if err := r.valType(); err != nil {
					return err
				}
			}
		case 0x28 <= op && op <= 0x3e: // loads and stores: memarg
			usesMemory()
			if err := u32s(r, 2); err != nil {
				return err
			}
		case op == 0x41: // i32.const
			if _, _, err := r.leb(5); err != nil {
				return err
			}
		case op == 0x42: // i64.const
			if _, _, err := r.leb(10); err != nil {
				return err
			}
		case op == 0x43:
			err = r.skip(4)
		case op == 0x44:
			err = r.skip(8)
		case op == 0xd0: // ref.null heaptype
			_, err = r.s33()
		case op == 0xfc, op == 0xfd, op == 0xfe:
			var mem bool
			switch op {
			case 0xfc:
				mem, err = misc(r, at)
			case 0xfd:
				mem, err = vector(r, at)
			default:
				mem, err = atomic(r, at)
			}
			if mem {
				usesMemory()
			}
		default:
			return &UnsupportedError{Offset: r.base + at, Opcode: fmt.Sprintf("%#02x", op)}
		}
		if err != nil {
			return err
		}
	}
}

func u32s(r *reader, n int) error {
	for i := 0; i < n; i++ {
		if _, err := r.u32(); err != nil {
			return err
		}
	}
	return nil
}

// misc decodes the 0xfc instructions. wazero reads the sub-opcode as a u32
// and keeps its low byte; so does this.
func misc(r *reader, at int) (memory bool, err error) {
	v, err := r.u32()
	if err != nil {
		return false, err
	}
	switch sub := byte(v); {
	case sub <= 0x07: // saturating truncation
		return false, nil
	case sub == 0x09, sub == 0x0b, sub == 0x0d, sub == 0x0f, sub == 0x10, sub == 0x11:
		// data.drop, memory.fill, elem.drop, table.grow/size/fill
		return sub == 0x0b, u32s(r, 1)
	case sub == 0x08, sub == 0x0a, sub == 0x0c, sub == 0x0e:
		// memory.init, memory.copy, table.init, table.copy
		return sub == 0x08 || sub == 0x0a, u32s(r, 2)
	default:
		return false, &UnsupportedError{Offset: r.base + at, Opcode: fmt.Sprintf("0xfc %#02x", v)}
	}
}

// vector decodes the 0xfd (SIMD) instructions. wazero reads the sub-opcode
// as one byte, not as the u32 the specification says; for the opcodes at or
// above 0x80, whose second LEB128 byte is 0x01, that byte then decodes as a
// nop. Reading it the same way keeps the pass in step with the compiler.
func vector(r *reader, at int) (memory bool, err error) {
	sub, err := r.byte()
	if err != nil {
		return false, err
	}
	switch {
	case sub <= 0x0b, sub == 0x5c, sub == 0x5d: // loads, stores: memarg
		return true, u32s(r, 2)
	case sub == 0x0c, sub == 0x0d: // v128.const, i8x16.shuffle
		return false, r.skip(16)
	case 0x15 <= sub && sub <= 0x22: // extract/replace lane
		return false, r.skip(1)
	case 0x54 <= sub && sub <= 0x5b: // load/store lane: memarg lane
		if err := u32s(r, 2); err != nil {
			return true, err
		}
		return true, r.skip(1)
	case simdPlain(sub):
		return false, nil
	}
	return false, &UnsupportedError{Offset: r.base + at, Opcode: fmt.Sprintf("0xfd %#02x", sub)}
}

// simdPlain reports the SIMD opcodes without immediates that wazero 1.12
// knows (internal/wasm/instruction.go).
func simdPlain(sub byte) bool {
	switch sub {
	case 0x9a, 0xa2, 0xa5, 0xa6, 0xaf, 0xb0, 0xb2, 0xb3, 0xb4, 0xbb, 0xc2,
		0xc5, 0xc6, 0xcf, 0xd0, 0xd2, 0xd3, 0xd4, 0xe2, 0xee:
		return false
	}
	return 0x0e <= sub // all of 0x0e..0xff outside the immediates handled above
}

// atomic decodes the 0xfe (threads) instructions, sub-opcode one byte as in
// wazero.
func atomic(r *reader, at int) (memory bool, err error) {
	sub, err := r.byte()
	if err != nil {
		return false, err
	}
	switch {
	case sub == 0x03: // atomic.fence 0x00
		return false, r.skip(1)
	case sub <= 0x02, 0x10 <= sub && sub <= 0x4e:
		return true, u32s(r, 2)
	}
	return false, &UnsupportedError{Offset: r.base + at, Opcode: fmt.Sprintf("0xfe %#02x", sub)}
}
