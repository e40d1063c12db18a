package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/qrun-dev/qrun/engines"
)

// Envelope layout (version 1), the record of a slot whose flags have bit 0
// set. Little-endian; strings are UTF-8 bytes without terminators.
//
//	 0  u8   envelope version (1)
//	 1  u8   priority (carried, not used for ordering)
//	 2  u16  reserved, 0
//	 4  u32  attempts so far (deliveries before this one)
//	 8  u32  failures so far
//	12  u32  attribute count
//	16  i64  expires, Unix nanoseconds (0: never): the TTL deadline
//	24  u16  ID length          26  u16  content type length
//	28  u16  correlation length 30  u16  ordering key length
//	32  ...  ID, content type, correlation ID, ordering key bytes
//	    then per attribute: u32 key length, u32 value length, key, value
//	    then the body: every remaining byte of the record
//
// A record without the flag is a bare body: what a foreign producer that
// knows nothing of qrun writes.
const (
	envVersion    = 1
	envFixed      = 32
	maxEnvString  = 1<<16 - 1
	attrFixedSize = 8
)

var errMalformed = errors.New("malformed envelope")

// needsEnvelope reports whether m carries anything besides a body, which a
// bare record cannot hold.
func needsEnvelope(m *engines.Message) bool {
	return m.ID != "" || len(m.Attributes) > 0 || m.ContentType != "" || m.CorrelationID != "" ||
		m.OrderingKey != "" || m.Priority != 0 || m.TTL != 0
}

// envelope holds what travels with a message beyond the slot header.
type envelope struct {
	attempt, failures uint32
	expires           int64
}

// envelopeSize is the encoded size of m, or an error naming the field that
// is too long for the format.
func envelopeSize(m *engines.Message) (int, error) {
	for _, f := range [...]struct {
		name string
		v    string
	}{{"ID", m.ID}, {"content type", m.ContentType}, {"correlation ID", m.CorrelationID}, {"ordering key", m.OrderingKey}} {
		if len(f.v) > maxEnvString {
			return 0, fmt.Errorf("%s is %d bytes, the limit is %d: %w", f.name, len(f.v), maxEnvString, engines.ErrTooLarge)
		}
	}
	n := envFixed + len(m.ID) + len(m.ContentType) + len(m.CorrelationID) + len(m.OrderingKey) + len(m.Body)
	for k, v := range m.Attributes {
		n += attrFixedSize + len(k) + len(v)
	}
	return n, nil
}

// appendEnvelope encodes m after dst.
func appendEnvelope(dst []byte, m *engines.Message, env envelope) []byte {
	le := binary.LittleEndian
	var fixed [envFixed]byte
	fixed[0] = envVersion
	fixed[1] = m.Priority
	le.PutUint32(fixed[4:], env.attempt)
	le.PutUint32(fixed[8:], env.failures)
	le.PutUint32(fixed[12:], uint32(len(m.Attributes)))
	le.PutUint64(fixed[16:], uint64(env.expires))
	le.PutUint16(fixed[24:], uint16(len(m.ID)))
	le.PutUint16(fixed[26:], uint16(len(m.ContentType)))
	le.PutUint16(fixed[28:], uint16(len(m.CorrelationID)))
	le.PutUint16(fixed[30:], uint16(len(m.OrderingKey)))
	dst = append(dst, fixed[:]...)
	dst = append(dst, m.ID...)
	dst = append(dst, m.ContentType...)
	dst = append(dst, m.CorrelationID...)
	dst = append(dst, m.OrderingKey...)
	for k, v := range m.Attributes {
		dst = le.AppendUint32(dst, uint32(len(k)))
		dst = le.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, k...)
		dst = append(dst, v...)
	}
	return append(dst, m.Body...)
}

// decodeEnvelope fills m from b. The strings and the body alias b, which
// the caller owns and never modifies, so decoding copies nothing.
func decodeEnvelope(b []byte, m *engines.Message) (envelope, error) {
	le := binary.LittleEndian
	if len(b) < envFixed {
		return envelope{}, fmt.Errorf("%w: %d bytes, shorter than its %d-byte fixed part", errMalformed, len(b), envFixed)
	}
	if b[0] != envVersion {
		return envelope{}, fmt.Errorf("%w: version %d, want %d", errMalformed, b[0], envVersion)
	}
	env := envelope{attempt: le.Uint32(b[4:]), failures: le.Uint32(b[8:]), expires: int64(le.Uint64(b[16:]))}
	m.Priority = b[1]
	nattrs := le.Uint32(b[12:])
	rest := b[envFixed:]
	take := func(n int) (string, bool) {
		if n > len(rest) {
			return "", false
		}
		s := bytesString(rest[:n])
		rest = rest[n:]
		return s, true
	}
	var ok [4]bool
	m.ID, ok[0] = take(int(le.Uint16(b[24:])))
	m.ContentType, ok[1] = take(int(le.Uint16(b[26:])))
	m.CorrelationID, ok[2] = take(int(le.Uint16(b[28:])))
	m.OrderingKey, ok[3] = take(int(le.Uint16(b[30:])))
	if !ok[0] || !ok[1] || !ok[2] || !ok[3] {
		return envelope{}, fmt.Errorf("%w: string lengths run past the record", errMalformed)
	}
	if nattrs > uint32(len(rest)/attrFixedSize) {
		return envelope{}, fmt.Errorf("%w: %d attributes cannot fit in %d bytes", errMalformed, nattrs, len(rest))
	}
	if nattrs > 0 {
		m.Attributes = make(map[string]string, nattrs)
		for i := uint32(0); i < nattrs; i++ {
			if len(rest) < attrFixedSize {
				return envelope{}, fmt.Errorf("%w: attribute %d runs past the record", errMalformed, i)
			}
			kl, vl := le.Uint32(rest), le.Uint32(rest[4:])
			rest = rest[attrFixedSize:]
			if uint64(kl)+uint64(vl) > uint64(len(rest)) {
				return envelope{}, fmt.Errorf("%w: attribute %d runs past the record", errMalformed, i)
			}
			k, _ := take(int(kl))
			v, _ := take(int(vl))
			m.Attributes[k] = v
		}
	}
	m.Body = rest[:len(rest):len(rest)]
	return env, nil
}

// bytesString views b as a string without copying; b must never change.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
