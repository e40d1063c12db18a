package shm

import (
	"maps"
	"strings"
	"testing"

	"github.com/qrun-dev/qrun/engines"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, m := range []engines.Message{
		{},
		{ID: "id-1", Body: []byte("body")},
		{ID: strings.Repeat("i", maxEnvString), ContentType: "text/plain", CorrelationID: "c", OrderingKey: "k", Priority: 9,
			Attributes: map[string]string{"a": "1", "": "empty key", "ünï": strings.Repeat("v", 1000)}, Body: []byte{0, 1, 2}},
	} {
		env := envelope{attempt: 3, failures: 2, expires: 1 << 60}
		size, err := envelopeSize(&m)
		if err != nil {
			t.Fatal(err)
		}
		b := appendEnvelope(nil, &m, env)
		if len(b) != size {
			t.Fatalf("encoded %d bytes, envelopeSize said %d", len(b), size)
		}
		var got engines.Message
		genv, err := decodeEnvelope(b, &got)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if genv != env || got.ID != m.ID || string(got.Body) != string(m.Body) || got.ContentType != m.ContentType ||
			got.CorrelationID != m.CorrelationID || got.OrderingKey != m.OrderingKey || got.Priority != m.Priority ||
			!maps.Equal(got.Attributes, m.Attributes) {
			t.Fatalf("round trip of %+v gave %+v (%+v)", m, got, genv)
		}
	}
	if _, err := envelopeSize(&engines.Message{ID: strings.Repeat("i", maxEnvString+1)}); err == nil {
		t.Fatal("an ID longer than the format allows was accepted")
	}
}

// FuzzDecodeEnvelope feeds arbitrary records, as a foreign producer might
// write them, to the decoder: it must reject or decode, never panic, and
// whatever it decodes must encode back to the same bytes' meaning.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(appendEnvelope(nil, &engines.Message{ID: "x", Attributes: map[string]string{"k": "v"}, Body: []byte("b")}, envelope{attempt: 1}))
	f.Add([]byte{1, 0, 0, 0})
	f.Add(make([]byte, envFixed))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m engines.Message
		env, err := decodeEnvelope(b, &m)
		if err != nil {
			return
		}
		again := appendEnvelope(nil, &m, env)
		var m2 engines.Message
		env2, err := decodeEnvelope(again, &m2)
		if err != nil || env2 != env || m2.ID != m.ID || string(m2.Body) != string(m.Body) || !maps.Equal(m2.Attributes, m.Attributes) {
			t.Fatalf("re-encoding a decoded envelope changed it: %v", err)
		}
	})
}
