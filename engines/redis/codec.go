package redis

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// A message travels through Redis as one opaque string (a stream entry's m
// field, the tail of a delayed member) that only Go reads: the scripts
// move it whole. It is a version byte, then the ID, body, content type,
// correlation ID and ordering key as length-prefixed strings, the enqueue
// time in microseconds, the number of attributes and each key and value.
// A message's dedup ID, delay and TTL are not in it: they act at enqueue.
const codecVersion = 1

// errCorrupt is a stored message this engine cannot read.
var errCorrupt = errors.New("redis: stored message is corrupt")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encode appends m's stored form to b.
func encode(b []byte, m *engines.Message, enqueuedAt time.Time) []byte {
	b = append(b, codecVersion)
	b = appendString(b, m.ID)
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	b = append(b, m.Body...)
	b = appendString(b, m.ContentType)
	b = appendString(b, m.CorrelationID)
	b = appendString(b, m.OrderingKey)
	b = binary.AppendVarint(b, enqueuedAt.UnixMicro())
	b = binary.AppendUvarint(b, uint64(len(m.Attributes)))
	for k, v := range m.Attributes {
		b = appendString(b, k)
		b = appendString(b, v)
	}
	return b
}

// decoder reads a stored message, remembering the first error.
type decoder struct {
	s   string
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint([]byte(d.s[:min(len(d.s), binary.MaxVarintLen64)]))
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.s = d.s[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.s)) {
		d.err = errCorrupt
		return ""
	}
	v := d.s[:n]
	d.s = d.s[n:]
	return v
}

// decode reads a stored message into d's Message and EnqueuedAt.
func decode(s string, out *engines.Delivery) error {
	if len(s) == 0 || s[0] != codecVersion {
		return fmt.Errorf("%w: unknown version", errCorrupt)
	}
	d := decoder{s: s[1:]}
	out.ID = d.string()
	out.Body = []byte(d.string())
	out.ContentType = d.string()
	out.CorrelationID = d.string()
	out.OrderingKey = d.string()
	if d.err == nil {
		v, n := binary.Varint([]byte(d.s[:min(len(d.s), binary.MaxVarintLen64)]))
		if n <= 0 {
			d.err = errCorrupt
		} else {
			d.s = d.s[n:]
			out.EnqueuedAt = time.UnixMicro(v)
		}
	}
	if n := d.uvarint(); n > 0 && d.err == nil {
		out.Attributes = make(map[string]string, n)
		for range n {
			k := d.string()
			out.Attributes[k] = d.string()
		}
	}
	if d.err != nil {
		return d.err
	}
	if len(d.s) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.s))
	}
	return nil
}
