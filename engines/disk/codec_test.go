package disk

import (
	"bytes"
	"maps"
	"testing"

	"github.com/qrun-dev/qrun/engines"
)

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []engines.Message{
		{},
		{ID: "x", Body: []byte("b"), Attributes: map[string]string{"k": "v", "": ""}, ContentType: "c", CorrelationID: "r", OrderingKey: "o", DedupID: "d", Priority: 255},
		{ID: "big", Body: bytes.Repeat([]byte{0xff}, 1<<16)},
	}
	for _, m := range tests {
		b := encodePayload(&m, 1, 2, 3)
		var h header
		var got engines.Message
		if err := decodePayload(b, &h, &got, true); err != nil {
			t.Fatalf("decode %q: %v", m.ID, err)
		}
		if h.enq != 1 || h.due != 2 || h.expire != 3 || h.prio != m.Priority || h.id != m.ID {
			t.Fatalf("header %+v", h)
		}
		if got.ID != m.ID || !bytes.Equal(got.Body, m.Body) || !maps.Equal(got.Attributes, m.Attributes) || got.ContentType != m.ContentType ||
			got.CorrelationID != m.CorrelationID || got.OrderingKey != m.OrderingKey || got.DedupID != m.DedupID || got.Priority != m.Priority {
			t.Fatalf("round trip of %+v gave %+v", m, got)
		}
		// Every truncation is an error, never a panic.
		for i := range min(len(b), 200) {
			if err := decodePayload(b[:i], &h, &got, true); err == nil {
				t.Fatalf("%q truncated to %d bytes decoded without error", m.ID, i)
			}
		}
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder: errors are fine,
// panics are not.
func FuzzDecode(f *testing.F) {
	m := engines.Message{ID: "x", Body: []byte("b"), Attributes: map[string]string{"k": "v"}}
	f.Add(encodePayload(&m, 1, 2, 3))
	f.Add(encodeState(state{leased: true, attempt: 1}))
	f.Add(encodeSpec(spec{vt: 1, deadLetter: "d"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h header
		var m engines.Message
		_ = decodePayload(b, &h, &m, true)
		_, _ = decodeState(b)
		_, _ = decodeSpec(b)
		var s engines.Stats
		_ = decodeStats(b, &s)
		_, _, _ = decodeDedup(b)
	})
}
