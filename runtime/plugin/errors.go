package plugin

import (
	"errors"
	"fmt"
)

// Failure kinds of a guest call. Result.Err and NewInstance errors wrap
// exactly one of them so the dispatcher can count failures by kind with
// errors.Is without parsing messages.
var (
	// ErrTrap means the guest trapped: unreachable, an out-of-bounds access,
	// a stack overflow, proc_exit, or any other error wazero reported.
	ErrTrap = errors.New("plugin trapped")
	// ErrTimeout means the call ran longer than Spec.Timeout and the instance
	// was closed to stop it.
	ErrTimeout = errors.New("plugin timed out")
	// ErrCallDepth means the guest nested more calls than Spec.MaxCallDepth
	// allows (unbounded recursion, typically). It is wrapped together with
	// ErrTrap.
	ErrCallDepth = errors.New("plugin exceeded its call depth")
	// ErrBadVerdict means qrun_handle returned a value outside 0..3.
	ErrBadVerdict = errors.New("plugin returned a bad verdict")
	// ErrBadPointer means the guest passed a host function a pointer or
	// length outside its memory. The wrapped *PointerError names the function.
	ErrBadPointer = errors.New("plugin passed a bad pointer")
	// ErrAlloc means qrun_alloc returned 0 or a region outside memory.
	ErrAlloc = errors.New("plugin allocation failed")
	// ErrInit means qrun_init returned a non-zero status.
	ErrInit = errors.New("plugin refused to initialise")
	// ErrBroken is returned by Handle on an instance that already failed; the
	// caller should have closed and replaced it.
	ErrBroken = errors.New("plugin instance is broken")
	// ErrClosed is returned when using a closed Host, Plugin or Instance.
	ErrClosed = errors.New("plugin closed")
	// ErrInvalidModule is wrapped by every *ValidationError, for callers that
	// only need to know the module was refused.
	ErrInvalidModule = errors.New("invalid plugin module")
)

// PointerError is the panic value a host function raises for an
// out-of-range (ptr, len) so that wazero turns it into a trap; it survives in
// the call's error chain so the report can name the offending function.
type PointerError struct {
	Func       string // host function, e.g. "msg_field"
	Arg        string // which argument pair, e.g. "buf"
	Ptr        uint32
	Len        uint32 // unsigned, as the ABI reads it: a "negative" i32 is huge
	MemorySize uint32
}

// Error names the function, the argument and the range, which is what a
// guest author needs to find the bug.
func (e *PointerError) Error() string {
	return fmt.Sprintf("bad pointer: qrun.%s %s region [%#x, %#x+%d) is outside guest memory of %d bytes",
		e.Func, e.Arg, e.Ptr, e.Ptr, e.Len, e.MemorySize)
}

// Unwrap lets errors.Is(err, ErrBadPointer) match.
func (e *PointerError) Unwrap() error { return ErrBadPointer }

// ValidationError lists every reason a module was refused, in plain words, so
// an operator fixes them all in one round instead of one per attempt.
type ValidationError struct {
	// Module names the module: the consumer and path when known.
	Module   string
	Problems []string
}

// Error lists every problem on one line, for logs and `qrun validate`.
func (e *ValidationError) Error() string {
	var b []byte
	if e.Module != "" {
		b = append(b, e.Module...)
		b = append(b, ": "...)
	}
	b = append(b, "invalid plugin module: "...)
	for i, p := range e.Problems {
		if i > 0 {
			b = append(b, "; "...)
		}
		b = append(b, p...)
	}
	return string(b)
}

// Unwrap lets errors.Is(err, ErrInvalidModule) match.
func (e *ValidationError) Unwrap() error { return ErrInvalidModule }
