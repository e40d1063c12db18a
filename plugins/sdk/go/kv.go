package qrun

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/qrun-dev/qrun/abi"
)

// Errors of key-value stores and per-message state, besides ErrDenied (the
// store is not in the consumer's kv list), ErrInvalid (empty or too long
// key, negative TTL, a value Incr or Add cannot add to), ErrTooLarge (value over
// the store's max_value_size), ErrUnavailable and ErrNoMessage (called
// outside a handler call: every store and state function belongs to a
// delivery).
var (
	// ErrNotFound: the key, or the message's state, is absent.
	ErrNotFound = errors.New("qrun: not found")
	// ErrConflict: CompareAndSet found another version of the key.
	ErrConflict = errors.New("qrun: version conflict")
	// ErrUnsupported: the queue's engine keeps no per-message state.
	ErrUnsupported = errors.New("qrun: not supported by the engine")
)

// MaxKeySize is the longest key, in bytes; keys are 1..MaxKeySize bytes.
const MaxKeySize = 512

// KV is a key-value store the consumer is granted (its `kv` list). On an
// engine with transactions, when the store lives in the same engine as the
// consumer's queue, writes are applied together with the ack or not at all
// (a nack, a trap or a timeout drops them), and reads see the delivery's own
// writes; see docs/state.md.
type KV struct{ name string }

// Store returns the store called name. It makes no host call: a name the
// consumer is not granted fails at the first operation with ErrDenied.
func Store(name string) KV { return KV{name} }

// Name returns the store's name.
func (s KV) Name() string { return s.name }

func (s KV) err(op, key string, code int32) error {
	return fmt.Errorf("kv %s: %s %q: %w", s.name, op, key, kvError(code))
}

// kvError is codeError plus the codes only stores and state return.
func kvError(code int32) error {
	switch code {
	case abi.ErrNotFound:
		return ErrNotFound
	case abi.ErrConflict:
		return ErrConflict
	case abi.ErrUnsupported:
		return ErrUnsupported
	}
	return codeError(code)
}

// ttlMillis converts a TTL for the ABI: 0 is no expiry, and a positive TTL
// under a millisecond rounds up rather than becoming "forever".
func ttlMillis(ttl time.Duration) (int64, error) {
	if ttl < 0 {
		return 0, ErrInvalid
	}
	return millis(ttl), nil
}

// Get returns the value of key; the error wraps ErrNotFound when the key is
// absent (or expired).
func (s KV) Get(key string) ([]byte, error) {
	v, code := readValue(func(buf []byte) int32 { return hostKVGet(s.name, key, buf) })
	if code < 0 {
		return nil, s.err("get", key, code)
	}
	return v, nil
}

// Version returns the key's version as this delivery sees it, 0 when the key
// is absent: what CompareAndSet compares against.
func (s KV) Version(key string) (uint64, error) {
	v := hostKVVersion(s.name, key)
	if v < 0 {
		return 0, s.err("version", key, int32(v))
	}
	return uint64(v), nil
}

// Set stores value under key, with no expiry.
func (s KV) Set(key string, value []byte) error { return s.SetTTL(key, value, 0) }

// SetTTL stores value under key; the key disappears ttl later (0: never).
func (s KV) SetTTL(key string, value []byte, ttl time.Duration) error {
	ms, err := ttlMillis(ttl)
	if err != nil {
		return s.err("set", key, abi.ErrInvalid)
	}
	if code := hostKVSet(s.name, key, value, ms); code < 0 {
		return s.err("set", key, code)
	}
	return nil
}

// CompareAndSet stores value under key (expiring after ttl, 0: never) only
// if the key's version is still version, as Version reported it (0: only if
// the key is absent); otherwise the error wraps ErrConflict and nothing is
// written.
func (s KV) CompareAndSet(key string, version uint64, value []byte, ttl time.Duration) error {
	ms, err := ttlMillis(ttl)
	if err != nil {
		return s.err("compare-and-set", key, abi.ErrInvalid)
	}
	if code := hostKVCas(s.name, key, int64(version), value, ms); code < 0 {
		return s.err("compare-and-set", key, code)
	}
	return nil
}

// Delete removes key; deleting an absent key is not an error.
func (s KV) Delete(key string) error {
	if code := hostKVDelete(s.name, key); code < 0 {
		return s.err("delete", key, code)
	}
	return nil
}

// Incr adds delta to the decimal integer stored under key (absent counts as
// 0), stores the sum as decimal text and returns it. The error wraps
// ErrInvalid when the value is not a decimal int64 or the sum overflows.
func (s KV) Incr(key string, delta int64) (int64, error) {
	var n int64
	if code := hostKVIncr(s.name, key, delta, &n); code < 0 {
		return 0, s.err("incr", key, code)
	}
	return n, nil
}

// Add adds delta to the decimal integer stored under key (absent counts as
// 0) without returning the sum, and without reading the key: the counter a
// handler does not need to read. On a transactional store (one in the same
// engine as the queue: memory, disk, postgres) the add is held and applied at
// commit to whatever value the key has then, so deliveries adding to one key
// never conflict and the call costs no round trip to the store; if at commit
// the value is not a decimal int64 or the sum overflows, nothing of the
// delivery is applied and the delivery fails. A later Get, Version, Incr or
// CompareAndSet of the key in the same delivery sees the value with its adds
// applied. The error wraps ErrInvalid when the value is known at the call
// (on an immediate store always, on a transactional one once the delivery
// read or wrote the key) and is not a decimal int64 or the sum overflows,
// ErrTooLarge when the sum would exceed the store's max_value_size. Prefer
// Incr only when the handler needs the sum.
func (s KV) Add(key string, delta int64) error {
	if code := hostKVAdd(s.name, key, delta); code < 0 {
		return s.err("add", key, code)
	}
	return nil
}

// State returns the message's per-message state: what a handler stored with
// SetState during this or an earlier delivery of the same message. The error
// wraps ErrNotFound when there is none, ErrUnsupported when the queue's
// engine keeps none (only memory, disk and postgres do).
func (m *Message) State() ([]byte, error) {
	v, code := readValue(hostStateGet)
	if code < 0 {
		return nil, fmt.Errorf("state: %w", kvError(code))
	}
	return v, nil
}

// SetState replaces the message's per-message state, at most 1 MiB. It is
// written through at once, so it survives a nack, a trap, a timeout and a
// crash of qrun, and the engine deletes it when the message is acked or
// dead-lettered: the place for a multi-step handler's progress.
func (m *Message) SetState(value []byte) error {
	if code := hostStateSet(value); code < 0 {
		return fmt.Errorf("set state: %w", kvError(code))
	}
	return nil
}

// readValue is readString for binary values, keeping the code so that -2
// (absent) is told from the other errors: it returns a copy the caller owns,
// never the shared scratch buffer.
func readValue(call func(buf []byte) int32) ([]byte, int32) {
	buf := scratch
	for {
		n := call(buf)
		if n < 0 {
			return nil, n
		}
		if int(n) <= len(buf) {
			v := bytes.Clone(buf[:n])
			if len(buf) > len(scratch) && len(buf) <= scratchKeep {
				scratch = buf
			}
			return v, n
		}
		buf = make([]byte, n)
	}
}
