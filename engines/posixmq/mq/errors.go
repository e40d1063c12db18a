//go:build linux

package mq

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrTimeout means the deadline passed before the queue had room (Send)
	// or a message (Receive). The error also matches the kernel's errno,
	// ETIMEDOUT for a call that waited and EAGAIN for a descriptor opened
	// with O_NONBLOCK.
	ErrTimeout = errors.New("mq: timed out")
	// ErrLimit means a system limit refused the request: the queue depth or
	// message size limits, the number of queues, or the per-user memory for
	// queues. The error is a *LimitError that says which limit and how to
	// raise it.
	ErrLimit = errors.New("mq: system limit")
)

// Error is a failed operation on a queue. It matches both its kind (such as
// ErrTimeout) and the kernel's errno with errors.Is.
type Error struct {
	Op   string // "open", "send", "receive", "attr", "unlink"
	Name string // canonical queue name
	Err  error  // the errno
	kind error  // a sentinel of this package, or nil
}

// Error describes the operation, the queue and the cause.
func (e *Error) Error() string {
	if e.kind == ErrTimeout {
		what := "no message arrived"
		if e.Op == "send" {
			what = "the queue stayed full"
		}
		return fmt.Sprintf("mq: %s %s: %s before the deadline: %v", e.Op, e.Name, what, e.Err)
	}
	return fmt.Sprintf("mq: %s %s: %v", e.Op, e.Name, e.Err)
}

// Unwrap returns the kind and the errno.
func (e *Error) Unwrap() []error {
	if e.kind == nil {
		return []error{e.Err}
	}
	return []error{e.kind, e.Err}
}

// TooLargeError is a message that does not fit: on Send a message longer
// than the queue's message size, on Receive a buffer shorter than it (the
// kernel refuses to receive into a buffer that might be too small, whatever
// the length of the next message). It matches EMSGSIZE and
// engines.ErrTooLarge.
type TooLargeError struct {
	Op   string // "send" or "receive"
	Name string // canonical queue name
	// Size is the message length (send) or the queue's message size
	// (receive); Max is the queue's message size (send) or the buffer
	// length (receive). Size > Max.
	Size, Max int
}

// Error gives both sizes.
func (e *TooLargeError) Error() string {
	if e.Op == "receive" {
		return fmt.Sprintf("mq: receive %s: buffer of %d bytes is smaller than the queue's message size %d", e.Name, e.Max, e.Size)
	}
	return fmt.Sprintf("mq: send %s: message of %d bytes is larger than the queue's message size %d", e.Name, e.Size, e.Max)
}

// Unwrap returns EMSGSIZE and engines.ErrTooLarge.
func (e *TooLargeError) Unwrap() []error { return []error{unix.EMSGSIZE, engines.ErrTooLarge} }

// LimitError is a request the machine's limits refuse, with what to change.
// It matches ErrLimit and the kernel's errno.
type LimitError struct {
	Name string // canonical queue name
	// What was limited, e.g. "max_messages".
	What string
	// Asked is the value requested; Limit the machine's limit (zero when
	// unknown).
	Asked, Limit int64
	// Hint says where the limit is set and how to raise it.
	Hint string
	Err  error // the errno
}

// Error names the limit, its value and how to raise it.
func (e *LimitError) Error() string {
	prefix := "mq: "
	if e.Name != "" {
		prefix = "mq: open " + e.Name + ": "
	}
	if e.Limit > 0 {
		return fmt.Sprintf("%s%s %d exceeds this machine's limit of %d: %s", prefix, e.What, e.Asked, e.Limit, e.Hint)
	}
	return fmt.Sprintf("%s%s: %s (%v)", prefix, e.What, e.Hint, e.Err)
}

// Unwrap returns ErrLimit and the errno.
func (e *LimitError) Unwrap() []error { return []error{ErrLimit, e.Err} }
