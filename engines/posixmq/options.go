package posixmq

import (
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq/frame"
)

// Format is how the engine writes new messages into a kernel queue.
type Format uint8

const (
	// Framed writes the envelope (package frame) in front of the body, so
	// the ID, attributes, enqueue time and TTL travel with the message.
	Framed Format = iota
	// Raw writes only the body, so any mq_receive program reads exactly what
	// was published. The kernel then carries nothing but the body and the
	// priority: Enqueue refuses attributes, caller-chosen IDs and TTLs
	// (ErrUnsupported), and the ID it writes back is not the one the message
	// is later delivered with. Dead letters are framed regardless: their
	// reason and source are their point.
	Raw
)

// String returns the format's configuration spelling.
func (f Format) String() string {
	if f == Raw {
		return "raw"
	}
	return "framed"
}

// Mismatch says what Open does when a queue already exists with other
// attributes than configured (the kernel keeps an existing queue's depth
// and message size).
type Mismatch uint8

const (
	// Warn logs the difference and uses the queue as it is.
	Warn Mismatch = iota
	// Fail makes Open fail with ErrInvalid.
	Fail
)

// Options configure an Engine.
type Options struct {
	// MaxMessages is the depth of a queue the engine creates (mq_maxmsg);
	// zero means the machine's default, /proc/sys/fs/mqueue/msg_default.
	// Without CAP_SYS_RESOURCE it cannot exceed /proc/sys/fs/mqueue/msg_max.
	MaxMessages int
	// MessageSize is the longest message, envelope included, of a queue the
	// engine creates (mq_msgsize); zero means the machine's default,
	// /proc/sys/fs/mqueue/msgsize_default.
	MessageSize int
	// OnMismatch decides what happens when a queue exists with another
	// MaxMessages or MessageSize than set here (zero values are not
	// compared).
	OnMismatch Mismatch
	// Format of the messages the engine writes.
	Format Format
	// Prefix is put in front of every queue name to form the kernel name:
	// queue "orders" with prefix "qrun." is /qrun.orders.
	Prefix string
	// Mode is the permission of queues the engine creates; zero means 0600.
	Mode os.FileMode
	// Spill is how many messages per queue Enqueue may hold in memory while
	// the kernel queue is full. Zero (the default) holds none: Enqueue waits
	// for room, so a message is in the kernel, and survives a crash of qrun,
	// once Enqueue returns.
	Spill int
	// SendTimeout bounds how long Enqueue waits for room when its context
	// allows longer; zero means DefaultSendTimeout.
	SendTimeout time.Duration
	// UnlinkOnClose removes, at Close, every kernel queue the engine opened:
	// for tests and throwaway deployments.
	UnlinkOnClose bool
	// Logger receives warnings (attribute mismatches, malformed envelopes,
	// messages lost at Close); nil means none.
	Logger *zap.Logger
}

// DefaultSendTimeout is how long Enqueue waits for room in a full queue
// when Options.SendTimeout is zero and its context has no earlier deadline.
const DefaultSendTimeout = 5 * time.Second

// Overhead is the envelope's size for a message with an engine-assigned ID
// and no other metadata: the most a framed body can be is MessageSize less
// this. The fixed header, a field tag and length, and the longest ID.
const Overhead = frame.FixedSize + 2 + maxIDLen

// maxIDLen is the longest ID the engine assigns: an 8-character prefix and
// a 64-bit counter in base 32.
const maxIDLen = idPrefixLen + 13

const idPrefixLen = 8

// minDeadLetterBacklog is how many dead letters a full dead-letter queue may
// have waiting in memory, at least, before more are dropped (and logged).
const minDeadLetterBacklog = 1024

// OptionError is a problem with one option, named as in the configuration
// file so a caller can point at it. It matches engines.ErrInvalid, and for
// a size beyond the machine's limits the *mq.LimitError that names the
// limit and how to raise it.
type OptionError struct {
	Option string // e.g. "max_messages"
	Reason string // what is wrong, for a person
	Err    error  // the underlying error, if any
}

// Error names the option and the problem.
func (e *OptionError) Error() string { return "posixmq: " + e.Option + ": " + e.Reason }

// Unwrap returns engines.ErrInvalid and the underlying error.
func (e *OptionError) Unwrap() []error {
	if e.Err == nil {
		return []error{engines.ErrInvalid}
	}
	return []error{engines.ErrInvalid, e.Err}
}

// Check reports every problem with o, including sizes beyond this machine's
// limits, without opening anything.
func (o Options) Check() []*OptionError {
	var errs []*OptionError
	bad := func(option, format string, args ...any) {
		errs = append(errs, &OptionError{Option: option, Reason: fmt.Sprintf(format, args...)})
	}
	if o.MaxMessages < 0 {
		bad("max_messages", "%d is negative", o.MaxMessages)
	}
	if o.MessageSize < 0 {
		bad("message_size", "%d is negative", o.MessageSize)
	}
	if o.Spill < 0 {
		bad("spill", "%d is negative", o.Spill)
	}
	if o.SendTimeout < 0 {
		bad("send_timeout", "%v is negative", o.SendTimeout)
	}
	if o.Format > Raw {
		bad("format", "unknown format %d", o.Format)
	}
	if o.OnMismatch > Fail {
		bad("on_mismatch", "unknown policy %d", o.OnMismatch)
	}
	if o.Mode&^os.ModePerm != 0 {
		bad("mode", "%v has more than permission bits", o.Mode)
	}
	if strings.ContainsAny(o.Prefix, "/\x00") {
		bad("prefix", "%q: a slash or NUL byte cannot be part of a queue name", o.Prefix)
	}
	if len(errs) == 0 {
		if err := checkSizes(o); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
