package interrupt

import "fmt"

// reader decodes a byte slice that starts at offset base of the module, so
// errors name offsets in the module as a whole. LEB128 numbers are read as
// leniently as wazero reads them (any encoding of at most the maximal
// length): refusing an encoding wazero accepts would refuse a valid module.
type reader struct {
	b    []byte
	pos  int
	base int
}

func (r *reader) off() int { return r.base + r.pos }

func (r *reader) errf(format string, args ...any) error {
	return fmt.Errorf("%w: %s at offset %#x", ErrMalformed, fmt.Sprintf(format, args...), r.off())
}

func (r *reader) done() bool { return r.pos >= len(r.b) }

func (r *reader) byte() (byte, error) {
	if r.pos >= len(r.b) {
		return 0, r.errf("unexpected end")
	}
	c := r.b[r.pos]
	r.pos++
	return c, nil
}

func (r *reader) skip(n int) error {
	if n < 0 || n > len(r.b)-r.pos {
		return r.errf("unexpected end")
	}
	r.pos += n
	return nil
}

// leb reads an LEB128 number of at most maxBytes bytes and returns its low
// 64 bits, unsigned; sign-extension is the caller's.
func (r *reader) leb(maxBytes int) (v uint64, shift uint, err error) {
	for i := 0; i < maxBytes; i++ {
		c, err := r.byte()
		if err != nil {
			return 0, 0, err
		}
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			return v, shift, nil
		}
	}
	return 0, 0, r.errf("LEB128 number longer than %d bytes", maxBytes)
}

func (r *reader) u32() (uint32, error) {
	v, _, err := r.leb(5)
	if err != nil {
		return 0, err
	}
	if v > 0xffffffff {
		return 0, r.errf("u32 out of range")
	}
	return uint32(v), nil
}

// s33 reads a signed 33-bit number (block types, heap types).
func (r *reader) s33() (int64, error) {
	v, shift, err := r.leb(5)
	if err != nil {
		return 0, err
	}
	if shift < 64 && v&(1<<(shift-1)) != 0 {
		v |= ^uint64(0) << shift
	}
	return int64(v), nil
}

// name reads a length-prefixed byte string.
func (r *reader) name() (string, error) {
	n, err := r.u32()
	if err != nil {
		return "", err
	}
	start := r.pos
	if err := r.skip(int(n)); err != nil {
		return "", err
	}
	return string(r.b[start:r.pos]), nil
}

// Value type encodings that need care: a reference type of the typed
// function references proposal is a prefix followed by a heap type.
const (
	refNullable    = 0x63
	refNonNullable = 0x64
)

// valType reads one value type.
func (r *reader) valType() error {
	c, err := r.byte()
	if err != nil {
		return err
	}
	switch c {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f, 0x69:
		return nil
	case refNullable, refNonNullable:
		_, err := r.s33()
		return err
	}
	return r.errf("invalid value type %#x", c)
}

// blockType reads a block type: 0x40, a value type, or a type index.
func (r *reader) blockType() error {
	v, err := r.s33()
	if err != nil {
		return err
	}
	if v == -29 || v == -28 { // 0x63, 0x64: a reference type with a heap type
		_, err = r.s33()
	}
	return err
}

func (r *reader) limits() error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if _, _, err := r.leb(10); err != nil {
		return err
	}
	if flags&1 != 0 {
		_, _, err = r.leb(10)
	}
	return err
}

// appendU32 appends v as unsigned LEB128.
func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendS64 appends v as signed LEB128.
func appendS64(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
