package qrun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/qrun-dev/qrun/abi"
)

// Verdict is a handler's answer for one message; the values are the ABI's.
type Verdict int32

// The verdicts a handler may return.
const (
	// Ack marks the message done; it is removed from the queue.
	Ack Verdict = abi.VerdictAck
	// Nack counts a failure: the message is retried after the retry delay
	// and dead-lettered once it has reached the queue's max_attempts.
	Nack Verdict = abi.VerdictNack
	// Requeue makes the message visible again after the delay set with
	// SetDelay (0 if none) without counting a failure.
	Requeue Verdict = abi.VerdictRequeue
	// DeadLetter moves the message to the queue's dead-letter queue now,
	// for messages that no retry can fix.
	DeadLetter Verdict = abi.VerdictDeadLetter
)

// String names the verdict as qrun's logs and metrics spell it.
func (v Verdict) String() string { return abi.VerdictName(int32(v)) }

// Errors returned by Publish, ExtendLease and Fetch, one per ABI error code, so that
// callers can tell with errors.Is whether trying again can help.
var (
	// ErrDenied: the consumer's configuration does not allow it: a queue
	// not in its publish list, a URL its http block does not allow. A
	// configuration mistake; retrying does not help.
	ErrDenied = errors.New("qrun: denied by the consumer's configuration")
	// ErrTooLarge: the message exceeds the target queue's size limit, or an
	// HTTP response its max_response_size.
	ErrTooLarge = errors.New("qrun: too large")
	// ErrUnavailable: the engine failed or refused; a later retry may succeed.
	ErrUnavailable = errors.New("qrun: unavailable: the engine failed or refused")
	// ErrInvalid: the host rejected an argument (e.g. a negative duration).
	ErrInvalid = errors.New("qrun: invalid argument")
	// ErrNoMessage: a message function was called outside a handler call,
	// e.g. from an Init function.
	ErrNoMessage = errors.New("qrun: no current message")
)

// codeError maps a negative ABI result to one of the sentinel errors; codes a
// newer host may add still produce an error rather than being mistaken for
// success.
func codeError(code int32) error {
	switch code {
	case abi.ErrDenied:
		return ErrDenied
	case abi.ErrTooLarge:
		return ErrTooLarge
	case abi.ErrUnavailable:
		return ErrUnavailable
	case abi.ErrInvalid:
		return ErrInvalid
	case abi.ErrNoMessage:
		return ErrNoMessage
	}
	return fmt.Errorf("qrun: host error %d", code)
}

var (
	handler  func(*Message) Verdict
	userInit func() error
)

// Handle registers the function that handles every message. Call it exactly
// once, from a package init function: the host calls no user code before
// init has run, and an instance without a handler is refused at qrun_init.
func Handle(h func(m *Message) Verdict) {
	if h == nil {
		panic("qrun: Handle called with a nil handler")
	}
	if handler != nil {
		panic("qrun: a handler is already registered")
	}
	handler = h
}

// HandleFunc registers an error-returning handler, for code that reads more
// naturally with early returns: nil acks, an error wrapped with Permanent
// dead-letters, and any other error nacks so the runtime retries it. Either
// way the error is logged, so the reason travels with the message id.
func HandleFunc(f func(m *Message) error) {
	if f == nil {
		panic("qrun: HandleFunc called with a nil handler")
	}
	Handle(func(m *Message) Verdict {
		err := f(m)
		switch {
		case err == nil:
			return Ack
		case IsPermanent(err):
			Errorf("dead-letter: %v", err)
			return DeadLetter
		default:
			Warnf("nack: %v", err)
			return Nack
		}
	})
}

var errPermanent = errors.New("permanent")

type permanentError struct{ err error }

// Error returns the wrapped error's message.
func (e permanentError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error.
func (e permanentError) Unwrap() error { return e.err }

// Is makes errors.Is(err, errPermanent) hold.
func (e permanentError) Is(target error) bool { return target == errPermanent }

// Permanent marks err as one no retry can fix, so that a HandleFunc handler
// returning it dead-letters the message instead of nacking it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool { return errors.Is(err, errPermanent) }

// Init registers a function run once per instance, before its first message
// and with config available; a non-nil error refuses the instance (it is
// logged first), which is how a handler rejects a bad configuration up front
// instead of failing every message.
func Init(f func() error) {
	if userInit != nil {
		panic("qrun: an init function is already registered")
	}
	userInit = f
}

// runInit is the body of the qrun_init export.
func runInit() int32 {
	if handler == nil {
		Log(LevelError, "qrun: no handler registered: call qrun.Handle or qrun.HandleFunc from an init function")
		return 1
	}
	if userInit != nil {
		if err := userInit(); err != nil {
			Errorf("init failed: %v", err)
			return 1
		}
	}
	return 0
}

// runHandle is the body of the qrun_handle export. The Message is a fresh
// value per call so that a handler keeping it around cannot see the next
// message's body through it.
func runHandle(body []byte) int32 {
	m := &Message{Body: body}
	v := handler(m)
	m.Body = nil
	return int32(v)
}

// Message is the delivery being handled. It is valid only during the handler
// call that received it: Body points into memory the host reuses for the next
// message (copy it to keep it), and the accessors return zero values later.
type Message struct {
	// Body is the message payload; nil for an empty body.
	Body []byte
}

// ID returns the message id assigned by the engine.
func (m *Message) ID() string { return msgField(abi.FieldID) }

// Queue returns the name of the queue the message was received from.
func (m *Message) Queue() string { return msgField(abi.FieldQueue) }

// ContentType returns the message's content type, "" if it has none.
func (m *Message) ContentType() string { return msgField(abi.FieldContentType) }

// CorrelationID returns the message's correlation id, "" if it has none.
func (m *Message) CorrelationID() string { return msgField(abi.FieldCorrelationID) }

// OrderingKey returns the message's ordering key, "" if it has none.
func (m *Message) OrderingKey() string { return msgField(abi.FieldOrderingKey) }

// Attempt returns the delivery attempt, starting at 1, so a handler can
// give up early or log louder on the last tries.
func (m *Message) Attempt() int {
	n := hostMsgAttempt()
	if n < 0 {
		return 0
	}
	return int(n)
}

// EnqueuedAt returns when the message was first enqueued; the zero Time
// outside a handler call.
func (m *Message) EnqueuedAt() time.Time {
	ns := hostMsgEnqueuedAt()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Attr returns the value of attribute key and whether the message has it.
func (m *Message) Attr(key string) (string, bool) {
	v, code := readString(func(buf []byte) int32 { return hostMsgAttr(key, buf) })
	return v, code >= 0
}

// Attrs returns all attributes of the message in a new map (nil if none).
// It costs two host calls per attribute; prefer Attr for known keys.
func (m *Message) Attrs() map[string]string {
	var attrs map[string]string
	for i := int32(0); ; i++ {
		key, code := readString(func(buf []byte) int32 { return hostMsgAttrKey(i, buf) })
		if code < 0 {
			return attrs
		}
		if attrs == nil {
			attrs = make(map[string]string)
		}
		attrs[key], _ = m.Attr(key)
	}
}

func msgField(field int32) string {
	v, _ := readString(func(buf []byte) int32 { return hostMsgField(field, buf) })
	return v
}

// scratch is reused by every host call that returns bytes, so that reading a
// field usually costs one call and no allocation besides the string itself.
var scratch = make([]byte, 256)

// scratchKeep bounds the scratch buffer kept after a large value, so that one
// huge attribute does not pin its size in memory for the instance's life.
const scratchKeep = 64 << 10

// readString runs a host call that writes a value into a buffer. The ABI
// writes nothing when the value does not fit and returns its full length
// instead, so the call is repeated with a buffer of that size; the loop (not
// a single retry) covers a value that grew in between.
func readString(call func(buf []byte) int32) (string, int32) {
	buf := scratch
	for {
		n := call(buf)
		if n < 0 {
			return "", n
		}
		if int(n) <= len(buf) {
			s := string(buf[:n])
			if len(buf) > len(scratch) && len(buf) <= scratchKeep {
				scratch = buf
			}
			return s, n
		}
		buf = make([]byte, n)
	}
}

// Level is a log severity; the values are the ABI's.
type Level int32

// Log levels.
const (
	LevelDebug Level = abi.LogDebug
	LevelInfo  Level = abi.LogInfo
	LevelWarn  Level = abi.LogWarn
	LevelError Level = abi.LogError
)

// Log writes msg to qrun's log at level; the host attaches the consumer,
// queue, message id and attempt, so msg need not repeat them. Lines over the
// consumer's rate limit are dropped by the host and counted there, which is
// why Log reports nothing back: a handler cannot act on a dropped line.
func Log(level Level, msg string) { hostLog(int32(level), msg) }

// Debugf logs a formatted line at debug level.
func Debugf(format string, args ...any) { Log(LevelDebug, fmt.Sprintf(format, args...)) }

// Infof logs a formatted line at info level.
func Infof(format string, args ...any) { Log(LevelInfo, fmt.Sprintf(format, args...)) }

// Warnf logs a formatted line at warn level.
func Warnf(format string, args ...any) { Log(LevelWarn, fmt.Sprintf(format, args...)) }

// Errorf logs a formatted line at error level. Unlike fmt.Errorf it returns
// nothing: it writes to qrun's log.
func Errorf(format string, args ...any) { Log(LevelError, fmt.Sprintf(format, args...)) }

// Config returns the value of key in the consumer's config map and whether it
// is set. It works in Init functions too, which is the place to read values
// once instead of on every message.
func Config(key string) (string, bool) {
	v, code := readString(func(buf []byte) int32 { return hostConfigGet(key, buf) })
	return v, code >= 0
}

// Publish enqueues body with attrs (may be nil) to queue, which must be
// listed in the consumer's publish list. The error is nil or wraps one of
// ErrDenied, ErrTooLarge, ErrUnavailable or ErrInvalid.
func Publish(queue string, body []byte, attrs map[string]string) error {
	enc, err := encodeAttrs(attrs)
	if err != nil {
		return err
	}
	if code := hostPublish(queue, body, enc); code < 0 {
		return fmt.Errorf("publish to %q: %w", queue, codeError(code))
	}
	return nil
}

// encodeAttrs writes attrs in the ABI's pair encoding. Keys are sorted so the
// same map always yields the same bytes.
func encodeAttrs(attrs map[string]string) ([]byte, error) {
	if len(attrs) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(attrs))
	size := 0
	for k, v := range attrs {
		if len(k) > math.MaxInt32 || len(v) > math.MaxInt32 {
			return nil, fmt.Errorf("attribute %q: %w", k, ErrTooLarge)
		}
		keys = append(keys, k)
		size += 8 + len(k) + len(v)
	}
	sort.Strings(keys)
	enc := make([]byte, 0, size)
	for _, k := range keys {
		v := attrs[k]
		enc = binary.LittleEndian.AppendUint32(enc, uint32(len(k)))
		enc = append(enc, k...)
		enc = binary.LittleEndian.AppendUint32(enc, uint32(len(v)))
		enc = append(enc, v...)
	}
	return enc, nil
}

// millis converts d for the ABI's millisecond arguments, rounding up so that a
// small positive duration never becomes "no delay"; negative becomes 0.
func millis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++ // round up, without the overflow of adding first
	}
	return int64(ms)
}

// SetDelay sets how long the current message stays invisible after a Nack or
// Requeue verdict, replacing the retry policy's delay for this delivery.
// Negative durations count as 0. Outside a handler call it does nothing.
func SetDelay(d time.Duration) { hostSetDelay(millis(d)) }

// MaxReason is the most of a reason, in bytes, that qrun keeps; SetReason
// cuts a longer one at a UTF-8 boundary.
const MaxReason = 1024

// SetReason records why the current message is nacked or dead-lettered:
// with a Nack or DeadLetter verdict the reason is logged with the verdict
// and becomes the dead letter's reason, as given (what `qrun dlq show`
// shows). It is ignored for Ack and Requeue. A later call replaces it, ""
// clears it, and qrun keeps at most MaxReason bytes. It returns ErrInvalid
// for text that is not UTF-8 and ErrNoMessage outside a handler call.
func SetReason(reason string) error {
	if code := hostSetReason(reason); code < 0 {
		return fmt.Errorf("set reason: %w", codeError(code))
	}
	return nil
}

// DeadLetterWith records reason (see SetReason) and returns DeadLetter:
//
//	return qrun.DeadLetterWith("webhook: 404 Not Found")
func DeadLetterWith(reason string) Verdict {
	_ = SetReason(reason) // only a reason that is not UTF-8 fails; the verdict stands
	return DeadLetter
}

// NackWith records reason (see SetReason) and returns Nack.
func NackWith(reason string) Verdict {
	_ = SetReason(reason)
	return Nack
}

// ExtendLease extends the current delivery's lease to now + d, a heartbeat
// for work that may outlast the queue's visibility timeout.
func ExtendLease(d time.Duration) error {
	if d < 0 {
		return ErrInvalid
	}
	if code := hostExtendLease(millis(d)); code < 0 {
		return fmt.Errorf("extend lease: %w", codeError(code))
	}
	return nil
}

// Now returns the host's wall-clock time, the clock qrun itself uses for
// enqueue times and leases.
func Now() time.Time { return time.Unix(0, hostNow()) }
