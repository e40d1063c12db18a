package nats

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qrun-dev/qrun/engines"
)

// hdrMeta holds a message's qrun fields as JSON: everything but the body,
// so that a bare message carries no header at all and the ones that
// have fields cannot break the header format with what their values hold.
const hdrMeta = "Qrun-Meta"

// meta is a message's fields beyond its body.
type meta struct {
	ID          string            `json:"id,omitempty"` // absent: the stream sequence is the ID
	Attrs       map[string]string `json:"a,omitempty"`
	ContentType string            `json:"ct,omitempty"`
	Correlation string            `json:"corr,omitempty"`
	OrderingKey string            `json:"key,omitempty"`
	Priority    uint8             `json:"prio,omitempty"`
	NotBefore   int64             `json:"nb,omitempty"`  // unix ns: not due before
	EnqueuedAt  int64             `json:"enq,omitempty"` // unix ns, kept by a dead letter
	// Attempt and Failures are a dead letter's history in its source queue.
	Attempt  int `json:"att,omitempty"`
	Failures int `json:"fail,omitempty"`
}

// empty reports whether m needs no header.
func (m *meta) empty() bool {
	return m.ID == "" && len(m.Attrs) == 0 && m.ContentType == "" && m.Correlation == "" && m.OrderingKey == "" &&
		m.Priority == 0 && m.NotBefore == 0 && m.EnqueuedAt == 0 && m.Attempt == 0 && m.Failures == 0
}

// encode builds the NATS message for m and body on subject.
func encode(subject string, m *meta, body []byte, dedup string) (*nats.Msg, error) {
	msg := &nats.Msg{Subject: subject, Data: body}
	if !m.empty() || dedup != "" {
		msg.Header = nats.Header{}
	}
	if !m.empty() {
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		msg.Header[hdrMeta] = []string{string(b)}
	}
	if dedup != "" {
		msg.Header[nats.MsgIdHdr] = []string{dedup}
	}
	return msg, nil
}

// decodeMeta reads the qrun header of h (zero without one).
func decodeMeta(h nats.Header) (meta, error) {
	var m meta
	if v := h[hdrMeta]; len(v) > 0 {
		if err := json.Unmarshal([]byte(v[0]), &m); err != nil {
			return m, err
		}
	}
	return m, nil
}

// messageOf builds the Message a delivery or a peek shows.
func messageOf(m *meta, seq uint64, body []byte) engines.Message {
	id := m.ID
	if id == "" {
		id = strconv.FormatUint(seq, 10)
	}
	return engines.Message{ID: id, Body: body, Attributes: m.Attrs, ContentType: m.ContentType,
		CorrelationID: m.Correlation, OrderingKey: m.OrderingKey, Priority: m.Priority}
}

// enqueuedAt is when the message was first enqueued: its own record for a
// dead letter, else when the stream stored it.
func enqueuedAt(m *meta, stored time.Time) time.Time {
	if m.EnqueuedAt != 0 {
		return time.Unix(0, m.EnqueuedAt)
	}
	return stored
}

// record is a message's delivery history kept in the state bucket,
// written only when a delivery ends other than in an ack.
type record struct {
	// Settled counts deliveries that ended in a settle the engine made
	// (nack, requeue, hold, a lease its own timer ended). Any other
	// delivery before the current one ran out its ack wait in a process
	// that died.
	Settled int `json:"s,omitempty"`
	// Failures counts nacks and expired leases.
	Failures int `json:"f,omitempty"`
	// Holds counts deliveries that were no attempt: taken back at once
	// because the message was not due.
	Holds int `json:"h,omitempty"`
	// Until is when the message is due again (unix ns), for Stats.
	Until int64 `json:"u,omitempty"`
	// Back: the engine handed the message back and nobody has received
	// it since, so Stats counts it ready or delayed, not in flight,
	// although the server counts it pending an ack.
	Back bool `json:"b,omitempty"`
}
