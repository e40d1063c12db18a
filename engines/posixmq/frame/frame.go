// Package frame is the envelope qrun puts around a message in a POSIX
// message queue so that what the kernel cannot carry (an ID, attributes,
// the enqueue time, a TTL, delivery counts) travels with the body, while a
// message without the envelope, from any program using mq_send, is still
// delivered exactly as its bytes.
//
// # Why it cannot be mistaken for a raw message
//
// A frame starts with the magic bytes F1 71 72 6E ("\xF1qrn"): 0xF1 can only
// start a four-byte UTF-8 sequence, and 'q' is not a continuation byte, so
// no valid UTF-8 text begins that way. A binary message that happens to
// begin with the magic is still raw unless its version, flags, header length
// and CRC-32C over the header all check out: one chance in about 2^64 for
// random bytes. Anything that is not a well-formed frame is delivered raw,
// byte for byte; nothing is rejected.
//
// # Layout, version 1
//
// All integers are little-endian. A C program can produce or consume frames
// by following this table; the header is followed directly by the body.
//
//	offset size  field
//	0      4     magic: F1 71 72 6E
//	4      1     version: 1
//	5      1     flags: 0 (a frame with other flags is not understood, so raw)
//	6      2     reserved: 0
//	8      4     header length H: bytes from offset 0 to the body, 40 <= H <= message length
//	12     4     CRC-32C (Castagnoli) of bytes [0, H) with this field taken as zero
//	16     4     attempts: deliveries before this copy was written (0 for a new message)
//	20     4     failures: nacks and lease expiries among those deliveries
//	24     8     enqueued at: Unix time in nanoseconds (int64)
//	32     8     expires at: Unix time in nanoseconds after which the message is dropped undelivered; 0 = never
//	40     H-40  fields, each: tag (1 byte), length (unsigned LEB128 varint), that many bytes
//	H      ...   body: the rest of the message
//
// Field tags: 1 ID, 2 content type, 3 correlation ID, 4 ordering key, 5 one
// attribute (its bytes are the key length as a varint, the key, then the
// value). A decoder skips tags it does not know, so fields can be added
// without a new version; each of tags 1 to 4 appears at most once.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"unsafe"
)

// Magic opens every frame.
const Magic = "\xF1qrn"

// Version is the layout this package writes and reads.
const Version = 1

// FixedSize is the length of the fixed part of the header.
const FixedSize = 40

// Field tags.
const (
	TagID            = 1
	TagContentType   = 2
	TagCorrelationID = 3
	TagOrderingKey   = 4
	TagAttribute     = 5
)

// Header is the metadata a frame carries besides the body.
type Header struct {
	ID, ContentType, CorrelationID, OrderingKey string
	Attributes                                  map[string]string
	Attempts, Failures                          uint32
	// EnqueuedAt and ExpiresAt are Unix nanoseconds; ExpiresAt 0 is never.
	EnqueuedAt, ExpiresAt int64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrMalformed is returned for a message that claims to be a frame (it
// begins with the magic) but is too short for a header, states a header
// length the message does not have, or (its checksum matching) has fields
// that do not parse: written by a faulty producer. The caller should
// deliver it raw.
var ErrMalformed = errors.New("frame: malformed")

// ErrChecksum is returned for a message with the magic and version whose
// header checksum does not match: damaged, or raw data that happens to
// begin like a frame. The caller should deliver it raw.
var ErrChecksum = errors.New("frame: header checksum mismatch")

// ErrUnknownVersion is returned for a message with the magic but a version
// or flags this package does not understand; the caller should deliver it
// raw.
var ErrUnknownVersion = errors.New("frame: unknown version")

// HeaderSize is the header length Append writes for h.
func HeaderSize(h *Header) int {
	n := FixedSize + fieldSize(len(h.ID)) + fieldSize(len(h.ContentType)) + fieldSize(len(h.CorrelationID)) + fieldSize(len(h.OrderingKey))
	for k, v := range h.Attributes {
		n += 1 + uvarintLen(uint64(attrLen(k, v))) + attrLen(k, v)
	}
	return n
}

func attrLen(k, v string) int { return uvarintLen(uint64(len(k))) + len(k) + len(v) }

// fieldSize is the encoded size of a string field, zero for an empty one
// (empty fields are not written: absent and empty mean the same).
func fieldSize(n int) int {
	if n == 0 {
		return 0
	}
	return 1 + uvarintLen(uint64(n)) + n
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// Append appends the frame of h and body to dst.
func Append(dst []byte, h *Header, body []byte) []byte {
	start := len(dst)
	hs := HeaderSize(h)
	var fixed [FixedSize]byte
	copy(fixed[:], Magic)
	fixed[4] = Version
	binary.LittleEndian.PutUint32(fixed[8:], uint32(hs))
	binary.LittleEndian.PutUint32(fixed[16:], h.Attempts)
	binary.LittleEndian.PutUint32(fixed[20:], h.Failures)
	binary.LittleEndian.PutUint64(fixed[24:], uint64(h.EnqueuedAt))
	binary.LittleEndian.PutUint64(fixed[32:], uint64(h.ExpiresAt))
	dst = append(dst, fixed[:]...)
	dst = appendField(dst, TagID, h.ID)
	dst = appendField(dst, TagContentType, h.ContentType)
	dst = appendField(dst, TagCorrelationID, h.CorrelationID)
	dst = appendField(dst, TagOrderingKey, h.OrderingKey)
	for k, v := range h.Attributes {
		dst = append(dst, TagAttribute)
		dst = binary.AppendUvarint(dst, uint64(attrLen(k, v)))
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = append(dst, v...)
	}
	hdr := dst[start:]
	binary.LittleEndian.PutUint32(hdr[12:], crc32.Checksum(hdr, castagnoli))
	return append(dst, body...)
}

func appendField(dst []byte, tag byte, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// Decode parses msg. For a frame it fills h and returns the body and true;
// for anything else it returns msg itself and false, with a nil error for
// ordinary raw data (no magic) and ErrUnknownVersion, ErrChecksum or
// ErrMalformed (wrapped) for a message that begins with the magic but is
// not a frame qrun can read, which the caller should also treat as raw
// (and report: it is a damaged frame, or data that mimics one).
//
// To cost no allocation beyond the attribute map, the strings in h and the
// body alias msg: msg must not be modified while they are in use.
func Decode(msg []byte, h *Header) (body []byte, framed bool, err error) {
	if len(msg) < len(Magic) || string(msg[:4]) != Magic {
		return msg, false, nil
	}
	if len(msg) < FixedSize {
		return msg, false, fmt.Errorf("%w: %d bytes, shorter than a header (%d)", ErrMalformed, len(msg), FixedSize)
	}
	if msg[4] != Version || msg[5] != 0 || msg[6] != 0 || msg[7] != 0 {
		return msg, false, fmt.Errorf("%w: version %d, flags %#x", ErrUnknownVersion, msg[4], msg[5:8])
	}
	hs := binary.LittleEndian.Uint32(msg[8:])
	if hs < FixedSize || uint64(hs) > uint64(len(msg)) {
		return msg, false, fmt.Errorf("%w: header length %d in a message of %d bytes", ErrMalformed, hs, len(msg))
	}
	hdr := msg[:hs]
	want := binary.LittleEndian.Uint32(hdr[12:])
	crc := crc32.Update(0, castagnoli, hdr[:12])
	crc = crc32.Update(crc, castagnoli, zero4[:])
	crc = crc32.Update(crc, castagnoli, hdr[16:])
	if crc != want {
		return msg, false, fmt.Errorf("%w: header CRC-32C %08x, stored %08x", ErrChecksum, crc, want)
	}
	*h = Header{
		Attempts:   binary.LittleEndian.Uint32(hdr[16:]),
		Failures:   binary.LittleEndian.Uint32(hdr[20:]),
		EnqueuedAt: int64(binary.LittleEndian.Uint64(hdr[24:])),
		ExpiresAt:  int64(binary.LittleEndian.Uint64(hdr[32:])),
	}
	var seen uint8
	for p := hdr[FixedSize:]; len(p) > 0; {
		tag := p[0]
		n, w := binary.Uvarint(p[1:])
		if w <= 0 || n > uint64(len(p)-1-w) {
			return msg, false, fmt.Errorf("%w: field %d overruns the header", ErrMalformed, tag)
		}
		v := p[1+w : 1+w+int(n)]
		p = p[1+w+int(n):]
		if tag >= TagID && tag <= TagOrderingKey {
			if seen&(1<<tag) != 0 {
				return msg, false, fmt.Errorf("%w: field %d repeated", ErrMalformed, tag)
			}
			seen |= 1 << tag
		}
		switch tag {
		case TagID:
			h.ID = view(v)
		case TagContentType:
			h.ContentType = view(v)
		case TagCorrelationID:
			h.CorrelationID = view(v)
		case TagOrderingKey:
			h.OrderingKey = view(v)
		case TagAttribute:
			kl, kw := binary.Uvarint(v)
			if kw <= 0 || kl > uint64(len(v)-kw) {
				return msg, false, fmt.Errorf("%w: attribute key overruns its field", ErrMalformed)
			}
			if h.Attributes == nil {
				h.Attributes = make(map[string]string)
			}
			h.Attributes[view(v[kw:kw+int(kl)])] = view(v[kw+int(kl):])
		}
	}
	return msg[hs:], true, nil
}

var zero4 [4]byte

// view returns b as a string without copying; Decode's callers promise not
// to modify the message.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
