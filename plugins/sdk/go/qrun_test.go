//go:build !wasip1

package qrun

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/abi"
)

// fakeHost answers like the real host for one current message and records
// what the guest sent it.
type fakeHost struct {
	noHost
	fields    map[int32]string
	attrs     map[string]string
	config    map[string]string
	publishRC int32
	published []publishCall
	logs      []string
	calls     int
	delay     int64
	reason    string
}

type publishCall struct {
	queue       string
	body, attrs []byte
}

func (h *fakeHost) put(v string, buf []byte) int32 {
	h.calls++
	if len(v) <= len(buf) {
		copy(buf, v)
	}
	return int32(len(v))
}

func (h *fakeHost) log(level int32, msg string) int32 {
	h.logs = append(h.logs, msg)
	return 0
}

func (h *fakeHost) msgField(f int32, buf []byte) int32 {
	v, ok := h.fields[f]
	if !ok {
		return abi.ErrInvalid
	}
	return h.put(v, buf)
}

func (h *fakeHost) msgAttr(key string, buf []byte) int32 {
	v, ok := h.attrs[key]
	if !ok {
		return abi.ErrNotFound
	}
	return h.put(v, buf)
}

func (h *fakeHost) msgAttrKey(i int32, buf []byte) int32 {
	keys := make([]string, 0, len(h.attrs))
	for k := range h.attrs {
		keys = append(keys, k)
	}
	if int(i) >= len(keys) {
		return abi.ErrNotFound
	}
	// Sorted order is the ABI's; a tiny insertion sort keeps the fake short.
	for a := 1; a < len(keys); a++ {
		for b := a; b > 0 && keys[b] < keys[b-1]; b-- {
			keys[b], keys[b-1] = keys[b-1], keys[b]
		}
	}
	return h.put(keys[i], buf)
}

func (h *fakeHost) configGet(key string, buf []byte) int32 {
	v, ok := h.config[key]
	if !ok {
		return abi.ErrNotFound
	}
	return h.put(v, buf)
}

func (h *fakeHost) publish(q string, body, attrs []byte) int32 {
	h.published = append(h.published, publishCall{q, append([]byte(nil), body...), append([]byte(nil), attrs...)})
	return h.publishRC
}

func (h *fakeHost) setDelay(ms int64) int32  { h.delay = ms; return 0 }
func (h *fakeHost) setReason(r string) int32 { h.reason = r; return 0 }

func useHost(t *testing.T, h *fakeHost) {
	old, oldHandler, oldInit := host, handler, userInit
	host, handler, userInit = h, nil, nil
	t.Cleanup(func() { host, handler, userInit = old, oldHandler, oldInit })
}

func TestReadGrowsBuffer(t *testing.T) {
	long := strings.Repeat("x", 1000)
	h := &fakeHost{fields: map[int32]string{abi.FieldID: long, abi.FieldQueue: "orders"}}
	useHost(t, h)
	m := &Message{}
	if got := m.ID(); got != long {
		t.Fatalf("ID() = %d bytes, want 1000", len(got))
	}
	if h.calls != 2 {
		t.Fatalf("host calls = %d, want 2 (one too small, one retry)", h.calls)
	}
	if got := m.Queue(); got != "orders" {
		t.Fatalf("Queue() = %q", got)
	}
	if got := m.ContentType(); got != "" {
		t.Fatalf("ContentType() = %q for an unknown field, want empty", got)
	}
}

func TestAttrs(t *testing.T) {
	h := &fakeHost{attrs: map[string]string{"b": "2", "a": strings.Repeat("1", 300)}}
	useHost(t, h)
	m := &Message{}
	got := m.Attrs()
	if len(got) != 2 || got["b"] != "2" || len(got["a"]) != 300 {
		t.Fatalf("Attrs() = %v", got)
	}
	if _, ok := m.Attr("missing"); ok {
		t.Fatal("Attr(missing) reported present")
	}
}

func TestPublishEncodingAndErrors(t *testing.T) {
	h := &fakeHost{}
	useHost(t, h)
	if err := Publish("out", []byte("hi"), map[string]string{"z": "", "k": "v"}); err != nil {
		t.Fatal(err)
	}
	want := []byte{}
	for _, kv := range [][2]string{{"k", "v"}, {"z", ""}} {
		want = binary.LittleEndian.AppendUint32(want, uint32(len(kv[0])))
		want = append(want, kv[0]...)
		want = binary.LittleEndian.AppendUint32(want, uint32(len(kv[1])))
		want = append(want, kv[1]...)
	}
	if p := h.published[0]; p.queue != "out" || string(p.body) != "hi" || string(p.attrs) != string(want) {
		t.Fatalf("published %+v, want attrs %x", p, want)
	}
	for code, want := range map[int32]error{abi.ErrDenied: ErrDenied, abi.ErrTooLarge: ErrTooLarge, abi.ErrUnavailable: ErrUnavailable} {
		h.publishRC = code
		if err := Publish("out", nil, nil); !errors.Is(err, want) {
			t.Errorf("code %d: err = %v, want %v", code, err, want)
		}
	}
	h.publishRC = -99
	if err := Publish("out", nil, nil); err == nil {
		t.Error("unknown negative code reported success")
	}
}

func TestHandleFuncVerdicts(t *testing.T) {
	h := &fakeHost{}
	useHost(t, h)
	var next error
	HandleFunc(func(*Message) error { return next })
	for _, c := range []struct {
		err  error
		want Verdict
	}{{nil, Ack}, {errors.New("boom"), Nack}, {Permanent(errors.New("bad")), DeadLetter}} {
		next = c.err
		if got := Verdict(runHandle([]byte("x"))); got != c.want {
			t.Errorf("error %v: verdict %v, want %v", c.err, got, c.want)
		}
	}
	if len(h.logs) != 2 {
		t.Errorf("logs = %q, want the two errors", h.logs)
	}
}

func TestInit(t *testing.T) {
	h := &fakeHost{config: map[string]string{"k": "v"}}
	useHost(t, h)
	if runInit() == 0 {
		t.Fatal("init without a handler succeeded")
	}
	Handle(func(*Message) Verdict { return Ack })
	Init(func() error {
		if v, _ := Config("k"); v != "v" {
			return errors.New("config not visible in init")
		}
		return nil
	})
	if runInit() != 0 {
		t.Fatalf("init failed: %q", h.logs)
	}
}

func TestSetDelayRoundsUp(t *testing.T) {
	h := &fakeHost{}
	useHost(t, h)
	SetDelay(1500 * time.Microsecond)
	if h.delay != 2 {
		t.Fatalf("delay = %d ms, want 2", h.delay)
	}
}

func TestReasonHelpers(t *testing.T) {
	h := &fakeHost{}
	useHost(t, h)
	if v := DeadLetterWith("webhook: 404 Not Found"); v != DeadLetter || h.reason != "webhook: 404 Not Found" {
		t.Fatalf("DeadLetterWith: %v, host has %q", v, h.reason)
	}
	if v := NackWith("busy"); v != Nack || h.reason != "busy" {
		t.Fatalf("NackWith: %v, host has %q", v, h.reason)
	}
	host = noHost{} // restored by useHost's cleanup
	if err := SetReason("x"); !errors.Is(err, ErrNoMessage) {
		t.Fatalf("SetReason outside a handler: %v, want ErrNoMessage", err)
	}
}
