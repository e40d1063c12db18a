package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/internal/lease"
)

// On-disk encodings. Every value starts with a format byte so a later
// version can read what an earlier one wrote; every decoder checks bounds
// and returns errCorrupt rather than panicking on a damaged value.
const (
	payloadV1 = 1
	stateV1   = 1
	specV1    = 1
	specV2    = 2 // adds the retry policy
	statsV1   = 1
)

// errCorrupt marks a stored value that cannot be decoded.
var errCorrupt = errors.New("corrupt record")

// seqKey is the bbolt key of a message: its engine-wide sequence number,
// big-endian so that key order is enqueue order.
func seqKey(b *[8]byte, seq uint64) []byte {
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

// formatID is the ID the engine gives a message enqueued without one. The
// sequence is never reused (its high-water mark is stored), so neither is
// the ID, even across restarts.
func formatID(seq uint64) string { return strconv.FormatUint(seq, 32) }

// payload is the immutable part of a message as stored under its sequence
// number: everything the consumer sees, plus the times that decide when it
// becomes visible and when it expires if never delivered.
//
//	format(1) priority(1) enq(8) due(8) expire(8)
//	id ctype corr okey dedup (uvarint length + bytes each)
//	nattrs(uvarint) then key, value pairs (uvarint length + bytes each)
//	body (uvarint length + bytes)
func encodePayload(m *engines.Message, enq, due, expire int64) []byte {
	n := 26 + 5*binary.MaxVarintLen32 + len(m.ID) + len(m.ContentType) + len(m.CorrelationID) + len(m.OrderingKey) + len(m.DedupID) +
		2*binary.MaxVarintLen32 + len(m.Body)
	for k, v := range m.Attributes {
		n += 2*binary.MaxVarintLen32 + len(k) + len(v)
	}
	b := make([]byte, 26, n)
	b[0] = payloadV1
	b[1] = m.Priority
	binary.BigEndian.PutUint64(b[2:], uint64(enq))
	binary.BigEndian.PutUint64(b[10:], uint64(due))
	binary.BigEndian.PutUint64(b[18:], uint64(expire))
	for _, s := range [...]string{m.ID, m.ContentType, m.CorrelationID, m.OrderingKey, m.DedupID} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Attributes)))
	for k, v := range m.Attributes {
		b = appendString(b, k)
		b = appendString(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	return append(b, m.Body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// header is what the engine keeps in memory about a stored message: enough
// to schedule it without its body.
type header struct {
	prio        uint8
	enq, due    int64
	expire      int64
	id, okey    string
	dedup       string
	deadLetterQ string // AttrDeadLetterSource, when the message is a dead letter
}

// reader walks an encoded value with bounds checks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes() []byte {
	if r.err != nil {
		return nil
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(len(r.b)-k) {
		r.err = errCorrupt
		return nil
	}
	v := r.b[k : k+int(n)]
	r.b = r.b[k+int(n):]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[k:]
	return n
}

// decodePayload decodes a stored message. With full set it fills m (copying
// out of b, which bbolt owns); otherwise it only fills h, for the index.
func decodePayload(b []byte, h *header, m *engines.Message, full bool) error {
	if len(b) < 26 || b[0] != payloadV1 {
		return errCorrupt
	}
	h.prio = b[1]
	h.enq = int64(binary.BigEndian.Uint64(b[2:]))
	h.due = int64(binary.BigEndian.Uint64(b[10:]))
	h.expire = int64(binary.BigEndian.Uint64(b[18:]))
	r := reader{b: b[26:]}
	id, ctype, corr, okey, dedup := r.bytes(), r.bytes(), r.bytes(), r.bytes(), r.bytes()
	nattrs := r.uvarint()
	if r.err != nil || nattrs > uint64(len(r.b)) {
		return errCorrupt
	}
	h.id, h.okey, h.dedup = string(id), string(okey), string(dedup)
	h.deadLetterQ = ""
	if full {
		m.ID, m.ContentType, m.CorrelationID, m.OrderingKey, m.DedupID = h.id, string(ctype), string(corr), h.okey, h.dedup
		m.Priority = h.prio
		m.Attributes = nil
		if nattrs > 0 {
			m.Attributes = make(map[string]string, nattrs)
		}
	}
	for range nattrs {
		k, v := r.bytes(), r.bytes()
		if r.err != nil {
			return errCorrupt
		}
		if string(k) == engines.AttrDeadLetterSource {
			h.deadLetterQ = string(v)
		}
		if full {
			m.Attributes[string(k)] = string(v)
		}
	}
	body := r.bytes()
	if r.err != nil || len(r.b) != 0 {
		return errCorrupt
	}
	if full {
		m.Body = nil
		if len(body) > 0 {
			m.Body = append([]byte(nil), body...)
		}
	}
	return nil
}

// state is the mutable part of a message, stored apart from its payload so
// that leasing or retrying a message rewrites 25 bytes, not its body. A
// message that was never delivered or retried has no state entry.
type state struct {
	leased   bool
	attempt  int32
	failures int32
	due      int64
	expire   int64
}

func encodeState(s state) []byte {
	b := make([]byte, 25)
	b[0] = stateV1 << 1
	if s.leased {
		b[0] |= 1
	}
	binary.BigEndian.PutUint32(b[1:], uint32(s.attempt))
	binary.BigEndian.PutUint32(b[5:], uint32(s.failures))
	binary.BigEndian.PutUint64(b[9:], uint64(s.due))
	binary.BigEndian.PutUint64(b[17:], uint64(s.expire))
	return b
}

func decodeState(b []byte) (state, error) {
	if len(b) != 25 || b[0]>>1 != stateV1 {
		return state{}, errCorrupt
	}
	s := state{
		leased:   b[0]&1 != 0,
		attempt:  int32(binary.BigEndian.Uint32(b[1:])),
		failures: int32(binary.BigEndian.Uint32(b[5:])),
		due:      int64(binary.BigEndian.Uint64(b[9:])),
		expire:   int64(binary.BigEndian.Uint64(b[17:])),
	}
	if s.attempt < 0 || s.failures < 0 {
		return state{}, errCorrupt
	}
	return s, nil
}

// spec is a queue's settings as stored, so that a restart (or a name-only
// Open) finds the queue configured as it was. The retry policy is among
// them because recovery, before any Open, applies it to the leases a
// stopped process left outstanding.
//
//	v1: format(1) vt(8) maxAttempts(4) ordered(1) deadLetter(uvarint length + bytes)
//	v2: v1's fields, then retry initial(8) max(8) multiplier(8) jitter(8), floats as IEEE bits
type spec struct {
	vt          int64
	maxAttempts int32
	ordered     bool
	deadLetter  string
	retry       engines.RetryPolicy
}

func encodeSpec(s spec) []byte {
	b := make([]byte, 14, 14+binary.MaxVarintLen32+len(s.deadLetter)+32)
	b[0] = specV2
	binary.BigEndian.PutUint64(b[1:], uint64(s.vt))
	binary.BigEndian.PutUint32(b[9:], uint32(s.maxAttempts))
	if s.ordered {
		b[13] = 1
	}
	b = appendString(b, s.deadLetter)
	b = binary.BigEndian.AppendUint64(b, uint64(s.retry.Initial))
	b = binary.BigEndian.AppendUint64(b, uint64(s.retry.Max))
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(s.retry.Multiplier))
	return binary.BigEndian.AppendUint64(b, math.Float64bits(s.retry.Jitter))
}

func decodeSpec(b []byte) (spec, error) {
	if len(b) < 14 || (b[0] != specV1 && b[0] != specV2) {
		return spec{}, errCorrupt
	}
	s := spec{
		vt:          int64(binary.BigEndian.Uint64(b[1:])),
		maxAttempts: int32(binary.BigEndian.Uint32(b[9:])),
		ordered:     b[13] == 1,
	}
	r := reader{b: b[14:]}
	s.deadLetter = string(r.bytes())
	if r.err == nil && b[0] == specV2 {
		if len(r.b) != 32 {
			return spec{}, errCorrupt
		}
		s.retry = engines.RetryPolicy{
			Initial:    time.Duration(binary.BigEndian.Uint64(r.b)),
			Max:        time.Duration(binary.BigEndian.Uint64(r.b[8:])),
			Multiplier: math.Float64frombits(binary.BigEndian.Uint64(r.b[16:])),
			Jitter:     math.Float64frombits(binary.BigEndian.Uint64(r.b[24:])),
		}
		r.b = r.b[32:]
	}
	if r.err != nil || len(r.b) != 0 || s.vt <= 0 || s.maxAttempts < 0 {
		return spec{}, errCorrupt
	}
	return s, nil
}

// The totals of engines.Stats, in this order, are stored per queue.
func encodeStats(s *engines.Stats) []byte {
	b := make([]byte, 1, 1+7*8)
	b[0] = statsV1
	for _, v := range [...]int64{s.EnqueuedTotal, s.AckedTotal, s.NackedTotal, s.ExpiredLeaseTotal, s.DeadLetteredTotal, s.ExpiredTotal, s.DuplicateTotal} {
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	return b
}

func decodeStats(b []byte, s *engines.Stats) error {
	if len(b) != 1+7*8 || b[0] != statsV1 {
		return errCorrupt
	}
	for i, p := range [...]*int64{&s.EnqueuedTotal, &s.AckedTotal, &s.NackedTotal, &s.ExpiredLeaseTotal, &s.DeadLetteredTotal, &s.ExpiredTotal, &s.DuplicateTotal} {
		*p = int64(binary.BigEndian.Uint64(b[1+8*i:]))
	}
	return nil
}

// dedup entries: the ID of the admitted message and when the window closes.
func encodeDedup(id string, expire int64) []byte {
	b := make([]byte, 9, 9+len(id))
	b[0] = 1
	binary.BigEndian.PutUint64(b[1:], uint64(expire))
	return append(b, id...)
}

func decodeDedup(b []byte) (id string, expire int64, err error) {
	if len(b) < 9 || b[0] != 1 {
		return "", 0, errCorrupt
	}
	return string(b[9:]), int64(binary.BigEndian.Uint64(b[1:])), nil
}

// rewriteDeadLetter re-encodes a payload for its move to a dead-letter
// queue (reason != "") or back from one (redrive, reason == ""): the
// dead-letter attributes are added or removed, delay, TTL and dedup cleared,
// and the message becomes visible at now. ID, body, priority and the
// original enqueue time are kept.
func rewriteDeadLetter(b []byte, source, reason string, now int64) ([]byte, header, error) {
	var h header
	var m engines.Message
	if err := decodePayload(b, &h, &m, true); err != nil {
		return nil, h, err
	}
	if reason != "" {
		m = lease.DeadLetter(m, source, reason)
	} else { // a redrive: the message leaves its dead-letter queue
		attrs := maps.Clone(m.Attributes)
		delete(attrs, engines.AttrDeadLetterReason)
		delete(attrs, engines.AttrDeadLetterSource)
		m.Attributes = attrs
		m.DedupID = ""
	}
	out := encodePayload(&m, h.enq, now, 0)
	var nh header
	if err := decodePayload(out, &nh, nil, false); err != nil {
		return nil, nh, fmt.Errorf("re-encoding: %w", err)
	}
	return out, nh, nil
}
