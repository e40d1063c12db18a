//go:build !wasip1

package qrun

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/abi"
)

// kvHost is a fakeHost with one granted store, "s", and per-message state,
// answering with the ABI's codes (abi/ABI.md section 4).
type kvHost struct {
	fakeHost
	vals    map[string]string
	vers    map[string]int64
	ttl     map[string]int64
	state   *string
	noState bool
}

func newKVHost() *kvHost {
	return &kvHost{vals: map[string]string{}, vers: map[string]int64{}, ttl: map[string]int64{}}
}

func (h *kvHost) check(store, key string) int32 {
	if store != "s" {
		return abi.ErrDenied
	}
	if key == "" || len(key) > MaxKeySize {
		return abi.ErrInvalid
	}
	return 0
}

func (h *kvHost) kvGet(store, key string, buf []byte) int32 {
	if c := h.check(store, key); c < 0 {
		return c
	}
	v, ok := h.vals[key]
	if !ok {
		return abi.ErrNotFound
	}
	return h.put(v, buf)
}

func (h *kvHost) kvVersion(store, key string) int64 {
	if c := h.check(store, key); c < 0 {
		return int64(c)
	}
	return h.vers[key]
}

func (h *kvHost) kvSet(store, key string, val []byte, ttl int64) int32 {
	if c := h.check(store, key); c < 0 {
		return c
	}
	if ttl < 0 {
		return abi.ErrInvalid
	}
	h.vals[key], h.ttl[key] = string(val), ttl
	h.vers[key]++
	return 0
}

func (h *kvHost) kvCas(store, key string, version int64, val []byte, ttl int64) int32 {
	if c := h.check(store, key); c < 0 {
		return c
	}
	cur := h.vers[key]
	if _, ok := h.vals[key]; !ok {
		cur = 0
	}
	if cur != version {
		return abi.ErrConflict
	}
	return h.kvSet(store, key, val, ttl)
}

func (h *kvHost) kvDelete(store, key string) int32 {
	if c := h.check(store, key); c < 0 {
		return c
	}
	delete(h.vals, key)
	return 0
}

func (h *kvHost) kvIncr(store, key string, delta int64, result *int64) int32 {
	if c := h.check(store, key); c < 0 {
		return c
	}
	n := int64(0)
	if v, ok := h.vals[key]; ok {
		var err error
		if n, err = strconv.ParseInt(v, 10, 64); err != nil {
			return abi.ErrInvalid
		}
	}
	n += delta
	h.vals[key] = strconv.FormatInt(n, 10)
	h.vers[key]++
	*result = n
	return 0
}

// kvAdd answers as an immediate store does: the add is applied at once.
func (h *kvHost) kvAdd(store, key string, delta int64) int32 {
	var n int64
	return h.kvIncr(store, key, delta, &n)
}

func (h *kvHost) stateGet(buf []byte) int32 {
	switch {
	case h.noState:
		return abi.ErrUnsupported
	case h.state == nil:
		return abi.ErrNotFound
	}
	return h.put(*h.state, buf)
}

func (h *kvHost) stateSet(v []byte) int32 {
	if h.noState {
		return abi.ErrUnsupported
	}
	s := string(v)
	h.state = &s
	return 0
}

func useKVHost(t *testing.T) *kvHost {
	h := newKVHost()
	// scratch grows with a long value; restored so that other tests still
	// see the first read come back short.
	old, oldScratch := host, scratch
	host = h
	t.Cleanup(func() { host, scratch = old, oldScratch })
	return h
}

func TestKVRoundTrip(t *testing.T) {
	h := useKVHost(t)
	s := Store("s")
	if _, err := s.Get("k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get absent: %v, want ErrNotFound", err)
	}
	long := strings.Repeat("v", 1000) // past the first read buffer
	if err := s.SetTTL("k", []byte(long), 1500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if h.ttl["k"] != 2 {
		t.Errorf("ttl sent as %d ms, want 2 (rounded up)", h.ttl["k"])
	}
	if v, err := s.Get("k"); err != nil || string(v) != long {
		t.Fatalf("Get = %d bytes, %v", len(v), err)
	}
	ver, err := s.Version("k")
	if err != nil || ver != 1 {
		t.Fatalf("Version = %d, %v; want 1", ver, err)
	}
	if err := s.CompareAndSet("k", ver+1, []byte("x"), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale CompareAndSet: %v, want ErrConflict", err)
	}
	if err := s.CompareAndSet("k", ver, []byte("x"), 0); err != nil {
		t.Fatalf("CompareAndSet: %v", err)
	}
	if err := s.Delete("k"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Incr("n", 5); err != nil || n != 5 {
		t.Fatalf("Incr = %d, %v; want 5", n, err)
	}
	if n, err := s.Incr("n", -7); err != nil || n != -2 {
		t.Fatalf("Incr = %d, %v; want -2", n, err)
	}
	if err := s.Add("n", 10); err != nil || h.vals["n"] != "8" {
		t.Fatalf("Add(10) = %v, value %q; want nil, 8", err, h.vals["n"])
	}
	_ = s.Set("text", []byte("abc"))
	if _, err := s.Incr("text", 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Incr on text: %v, want ErrInvalid", err)
	}
	if err := s.Add("text", 1); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `kv s: add "text"`) {
		t.Fatalf("Add on text: %v, want ErrInvalid naming the operation", err)
	}
}

func TestKVErrors(t *testing.T) {
	h := useKVHost(t)
	if err := Store("other").Set("k", nil); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "kv other: set") {
		t.Errorf("ungranted store: %v, want ErrDenied naming the store", err)
	}
	if _, err := Store("s").Get(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty key: %v, want ErrInvalid", err)
	}
	if err := Store("s").SetTTL("k", nil, -time.Second); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative TTL: %v, want ErrInvalid", err)
	}
	if _, ok := h.vals["k"]; ok {
		t.Error("a negative TTL reached the store")
	}
	host = noHost{} // restored by useKVHost's cleanup
	if _, err := Store("s").Version("k"); !errors.Is(err, ErrNoMessage) {
		t.Errorf("outside a handler: %v, want ErrNoMessage", err)
	}
	if err := Store("s").Add("k", 1); !errors.Is(err, ErrNoMessage) {
		t.Errorf("Add outside a handler: %v, want ErrNoMessage", err)
	}
}

func TestState(t *testing.T) {
	h := useKVHost(t)
	m := &Message{}
	if _, err := m.State(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("State with none: %v, want ErrNotFound", err)
	}
	if err := m.SetState([]byte("step 2")); err != nil {
		t.Fatal(err)
	}
	if v, err := m.State(); err != nil || string(v) != "step 2" {
		t.Fatalf("State = %q, %v", v, err)
	}
	h.noState = true
	if err := m.SetState(nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("SetState on an engine without state: %v, want ErrUnsupported", err)
	}
}

// codeHost answers every kv_add with code.
type codeHost struct {
	noHost
	code int32
}

func (h codeHost) kvAdd(string, string, int64) int32 { return h.code }

// TestKVAddErrors: Add's errors name the store, operation and key, and wrap
// the sentinel of the host's code (the ABI's -4 and -7 of kv_add).
func TestKVAddErrors(t *testing.T) {
	old := host
	t.Cleanup(func() { host = old })
	for code, want := range map[int32]error{abi.ErrInvalid: ErrInvalid, abi.ErrTooLarge: ErrTooLarge, abi.ErrDenied: ErrDenied, abi.ErrUnavailable: ErrUnavailable} {
		host = codeHost{code: code}
		if err := Store("s").Add("k", 1); !errors.Is(err, want) || !strings.Contains(err.Error(), `kv s: add "k"`) {
			t.Errorf("kv_add returning %d: %v, want %v naming the operation", code, err, want)
		}
	}
}
