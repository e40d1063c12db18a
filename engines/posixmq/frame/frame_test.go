package frame_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/qrun-dev/qrun/engines/posixmq/frame"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    frame.Header
		body []byte
	}{
		{"empty", frame.Header{}, nil},
		{"body only", frame.Header{}, []byte("hello")},
		{"everything", frame.Header{
			ID: "id-1", ContentType: "application/json", CorrelationID: "c", OrderingKey: "k",
			Attributes: map[string]string{"a": "1", "empty": "", "": "empty key", "unicode": "héllo ✓"},
			Attempts:   3, Failures: 2, EnqueuedAt: 1_700_000_000_123_456_789, ExpiresAt: -1,
		}, []byte("{\"x\":1}")},
		{"body that is itself a frame", frame.Header{ID: "outer"}, frame.Append(nil, &frame.Header{ID: "inner"}, []byte("x"))},
		{"long field", frame.Header{ID: string(bytes.Repeat([]byte("i"), 300))}, bytes.Repeat([]byte{0}, 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := frame.Append(nil, &tt.h, tt.body)
			if got, want := len(msg), frame.HeaderSize(&tt.h)+len(tt.body); got != want {
				t.Fatalf("frame is %d bytes, HeaderSize+body says %d", got, want)
			}
			var h frame.Header
			body, framed, err := frame.Decode(msg, &h)
			if err != nil || !framed {
				t.Fatalf("Decode = framed %v, %v", framed, err)
			}
			if !bytes.Equal(body, tt.body) {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if !reflect.DeepEqual(h, tt.h) {
				t.Errorf("header %+v, want %+v", h, tt.h)
			}
		})
	}
}

// TestRawIsRaw checks that messages without the envelope come back as
// themselves: text, binary, and near-misses of the magic; those that begin
// with the magic but do not check out also say why, for the log.
func TestRawIsRaw(t *testing.T) {
	t.Parallel()
	good := frame.Append(nil, &frame.Header{ID: "x"}, []byte("body"))
	corrupt := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	short := binary.LittleEndian.AppendUint32([]byte(frame.Magic+"\x01\x00\x00\x00"), 1<<20)
	tests := []struct {
		name string
		msg  []byte
		err  error
	}{
		{"empty", nil, nil},
		{"text", []byte("hello from C"), nil},
		{"magic alone", []byte(frame.Magic), frame.ErrMalformed},
		{"header shorter than fixed", append([]byte(frame.Magic), make([]byte, 10)...), frame.ErrMalformed},
		{"crc mismatch in fixed part", corrupt(20), frame.ErrChecksum},
		{"crc mismatch in fields", corrupt(frame.FixedSize + 2), frame.ErrChecksum},
		{"length beyond message", append(short, make([]byte, 28)...), frame.ErrMalformed},
		{"magic not at the start", []byte{0, 0xf1, 'q', 'r', 'n', 0}, nil},
		{"unknown version", corrupt(4), frame.ErrUnknownVersion},
		{"unknown flags", corrupt(5), frame.ErrUnknownVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var h frame.Header
			body, framed, err := frame.Decode(tt.msg, &h)
			if framed || !bytes.Equal(body, tt.msg) || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("Decode = %q, framed %v, %v; want the message itself, raw, error %v", body, framed, err, tt.err)
			}
		})
	}
}

// TestMalformedWithValidChecksum is a frame whose checksum is right but
// whose fields overrun: a faulty producer, reported, delivered raw.
func TestMalformedWithValidChecksum(t *testing.T) {
	t.Parallel()
	msg := frame.Append(nil, &frame.Header{ID: "abc"}, []byte("body"))
	msg[frame.FixedSize+1] = 100 // the ID field now claims 100 bytes
	resum(msg)
	var h frame.Header
	body, framed, err := frame.Decode(msg, &h)
	if framed || !errors.Is(err, frame.ErrMalformed) || !bytes.Equal(body, msg) {
		t.Fatalf("Decode = framed %v, %v; want raw with ErrMalformed", framed, err)
	}
	// A repeated ID is malformed too.
	msg = frame.Append(nil, &frame.Header{ID: "a", ContentType: "b"}, nil)
	msg[frame.FixedSize+3] = frame.TagID
	resum(msg)
	if _, framed, err := frame.Decode(msg, &h); framed || !errors.Is(err, frame.ErrMalformed) {
		t.Fatalf("repeated ID: framed %v, %v; want ErrMalformed", framed, err)
	}
}

// TestUnknownTagsSkipped keeps the layout extensible without a new version.
func TestUnknownTagsSkipped(t *testing.T) {
	t.Parallel()
	msg := frame.Append(nil, &frame.Header{ID: "a"}, []byte("body"))
	hs := binary.LittleEndian.Uint32(msg[8:])
	ext := append(bytes.Clone(msg[:hs]), 200, 3, 'x', 'y', 'z')
	binary.LittleEndian.PutUint32(ext[8:], uint32(len(ext)))
	ext = append(ext, "body"...)
	resum(ext)
	var h frame.Header
	body, framed, err := frame.Decode(ext, &h)
	if !framed || err != nil || h.ID != "a" || string(body) != "body" {
		t.Fatalf("Decode with an unknown field = %q framed %v %v, ID %q", body, framed, err, h.ID)
	}
}

// resum recomputes a frame's checksum after a test edited its header.
func resum(msg []byte) {
	hs := binary.LittleEndian.Uint32(msg[8:])
	binary.LittleEndian.PutUint32(msg[12:], 0)
	binary.LittleEndian.PutUint32(msg[12:], crc32c(msg[:hs]))
}

// TestTextNeverFramed: the magic's first byte cannot start valid UTF-8.
func TestTextNeverFramed(t *testing.T) {
	t.Parallel()
	if utf8.ValidString(frame.Magic) {
		t.Fatal("the magic is valid UTF-8, so some text message could begin with it")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		b := make([]byte, frame.FixedSize+r.IntN(64))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		copy(b, frame.Magic)
		b[4] = frame.Version
		b[5], b[6], b[7] = 0, 0, 0
		var h frame.Header
		if _, framed, _ := frame.Decode(b, &h); framed {
			t.Fatalf("random bytes after the magic decoded as a frame: %x", b)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add(frame.Append(nil, &frame.Header{ID: "x", Attributes: map[string]string{"k": "v"}}, []byte("b")))
	f.Add([]byte(frame.Magic + "\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		orig := bytes.Clone(msg)
		var h frame.Header
		body, framed, _ := frame.Decode(msg, &h)
		if !bytes.Equal(msg, orig) {
			t.Fatal("Decode modified its input")
		}
		if !framed {
			if !bytes.Equal(body, msg) {
				t.Fatal("a message that is not a frame must come back whole")
			}
			return
		}
		// What decodes re-encodes to a frame that decodes the same.
		again := frame.Append(nil, &h, body)
		var h2 frame.Header
		body2, framed2, err := frame.Decode(again, &h2)
		if !framed2 || err != nil || !bytes.Equal(body, body2) || h2.ID != h.ID || !maps.Equal(h.Attributes, h2.Attributes) {
			t.Fatalf("re-encoding changed the frame: %v %v", framed2, err)
		}
	})
}
