//go:build linux

package mq

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
)

// PrioMax is one more than the highest message priority Linux accepts
// (MQ_PRIO_MAX). Higher priorities are received first.
const PrioMax = 32768

// Attr mirrors the kernel's struct mq_attr. Its fields are C longs, which
// on Linux have the size of Go's int on every architecture Go supports.
type Attr struct {
	Flags   int // 0 or unix.O_NONBLOCK
	MaxMsg  int // most messages the queue holds
	MsgSize int // longest message, in bytes
	CurMsgs int // messages in the queue now
	_       [4]int
}

// Queue is an open message queue descriptor. Its methods may be called
// concurrently, but not after Close.
type Queue struct {
	fd      int
	name    string
	maxMsg  int
	msgSize int
	// nonblock is set while the descriptor has O_NONBLOCK: its calls cannot
	// wait, so they skip the scheduler's system call bookkeeping.
	nonblock atomic.Bool
}

// Open opens the named queue (see CanonicalName) like mq_open(3). flag is
// O_RDONLY, O_WRONLY or O_RDWR, optionally with O_CREAT, O_EXCL and
// O_NONBLOCK; O_CLOEXEC is always added. When O_CREAT creates the queue, perm
// and attr (MaxMsg and MsgSize; nil means the system defaults) apply; an
// existing queue keeps its own attributes, which MaxMsg and MsgSize report.
func Open(name string, flag int, perm uint32, attr *Attr) (*Queue, error) {
	cname, err := CanonicalName(name)
	if err != nil {
		return nil, err
	}
	var create Attr
	var ap unsafe.Pointer
	if attr != nil && flag&unix.O_CREAT != 0 {
		if attr.MaxMsg < 1 || attr.MsgSize < 1 {
			return nil, fmt.Errorf("mq: open %s: max messages %d and message size %d must both be positive: %w", cname, attr.MaxMsg, attr.MsgSize, engines.ErrInvalid)
		}
		// The kernel reads only the two sizes when creating.
		create.MaxMsg, create.MsgSize = attr.MaxMsg, attr.MsgSize
		ap = unsafe.Pointer(&create)
	}
	kname := kernelName(cname)
	var fd uintptr
	var errno unix.Errno
	for {
		fd, _, errno = unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(&kname[0])), uintptr(flag|unix.O_CLOEXEC), uintptr(perm), uintptr(ap), 0, 0)
		if errno != unix.EINTR {
			break
		}
	}
	if errno != 0 {
		return nil, openError(cname, flag, attr, errno)
	}
	q := &Queue{fd: int(fd), name: cname}
	q.nonblock.Store(flag&unix.O_NONBLOCK != 0)
	a, err := q.Attr()
	if err != nil {
		_ = unix.Close(q.fd)
		return nil, err
	}
	q.maxMsg, q.msgSize = a.MaxMsg, a.MsgSize
	return q, nil
}

// Unlink removes the named queue like mq_unlink(3). Processes that have it
// open keep using it; its messages are freed when the last one closes it.
func Unlink(name string) error {
	cname, err := CanonicalName(name)
	if err != nil {
		return err
	}
	kname := kernelName(cname)
	for {
		_, _, errno := unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(&kname[0])), 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return &Error{Op: "unlink", Name: cname, Err: errno}
	}
}

// Name is the queue's canonical name, with its leading slash.
func (q *Queue) Name() string { return q.name }

// Fd is the descriptor, for polling (mqueue descriptors work with epoll).
func (q *Queue) Fd() int { return q.fd }

// MaxMsg is the most messages the queue holds, fixed when it was created.
func (q *Queue) MaxMsg() int { return q.maxMsg }

// MsgSize is the longest message the queue holds, fixed when it was created.
func (q *Queue) MsgSize() int { return q.msgSize }

// Close closes the descriptor. The queue and its messages remain.
func (q *Queue) Close() error {
	if err := unix.Close(q.fd); err != nil {
		return &Error{Op: "close", Name: q.name, Err: err}
	}
	return nil
}

// Attr returns the queue's attributes, including how many messages it holds
// now.
func (q *Queue) Attr() (Attr, error) {
	var a Attr
	if err := q.getsetattr(nil, &a); err != nil {
		return Attr{}, err
	}
	return a, nil
}

// SetNonblock sets or clears O_NONBLOCK on this descriptor (and only this
// one: other descriptors of the queue, in this process or another, are not
// affected). With it set, a call that would wait fails at once with
// ErrTimeout wrapping EAGAIN.
func (q *Queue) SetNonblock(nonblock bool) error {
	var a Attr
	if nonblock {
		a.Flags = unix.O_NONBLOCK
	}
	if !nonblock {
		q.nonblock.Store(false) // before the change: never a raw call on a blocking descriptor
	}
	if err := q.getsetattr(&a, nil); err != nil {
		return err
	}
	q.nonblock.Store(nonblock)
	return nil
}

func (q *Queue) getsetattr(set, get *Attr) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_MQ_GETSETATTR, uintptr(q.fd), uintptr(unsafe.Pointer(set)), uintptr(unsafe.Pointer(get)))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return &Error{Op: "attr", Name: q.name, Err: errno}
	}
}

// Send enqueues msg with priority prio (0 to PrioMax-1) like
// mq_timedsend(3), waiting for room until deadline. A zero or past deadline
// does not wait: a full queue then fails at once. The error is ErrTimeout
// when the queue stayed full, a *TooLargeError when msg is longer than
// MsgSize. An empty msg is a valid message.
func (q *Queue) Send(msg []byte, prio uint, deadline time.Time) error {
	if err := q.checkSend(msg, prio); err != nil {
		return err
	}
	ts, wait := timespec(deadline)
	errno := q.send(msg, prio, &ts, wait)
	if errno != 0 {
		return q.ioError("send", errno, len(msg))
	}
	return nil
}

// TrySend is Send without waiting that reports a full queue as false with
// a nil error, which costs no allocation: for callers that wait elsewhere,
// such as in Go's poller.
func (q *Queue) TrySend(msg []byte, prio uint) (bool, error) {
	if err := q.checkSend(msg, prio); err != nil {
		return false, err
	}
	var ts unix.Timespec
	switch errno := q.send(msg, prio, &ts, false); errno {
	case 0:
		return true, nil
	case unix.ETIMEDOUT, unix.EAGAIN:
		return false, nil
	default:
		return false, q.ioError("send", errno, len(msg))
	}
}

func (q *Queue) checkSend(msg []byte, prio uint) error {
	if len(msg) > q.msgSize {
		return &TooLargeError{Op: "send", Name: q.name, Size: len(msg), Max: q.msgSize}
	}
	if prio >= PrioMax {
		return fmt.Errorf("mq: send %s: priority %d is outside 0..%d: %w", q.name, prio, PrioMax-1, engines.ErrInvalid)
	}
	return nil
}

// send makes the system call, retrying EINTR: the deadline is absolute, so
// a retry cannot extend it. (Go installs its signal handlers with
// SA_RESTART, under which the kernel restarts these calls itself; the loop
// is for a foreign handler without it.)
func (q *Queue) send(msg []byte, prio uint, ts *unix.Timespec, wait bool) unix.Errno {
	for {
		var errno unix.Errno
		if wait || !q.nonblock.Load() {
			_, _, errno = unix.Syscall6(unix.SYS_MQ_TIMEDSEND, uintptr(q.fd), uintptr(unsafe.Pointer(unsafe.SliceData(msg))), uintptr(len(msg)), uintptr(prio), uintptr(unsafe.Pointer(ts)), 0)
		} else {
			_, _, errno = unix.RawSyscall6(unix.SYS_MQ_TIMEDSEND, uintptr(q.fd), uintptr(unsafe.Pointer(unsafe.SliceData(msg))), uintptr(len(msg)), uintptr(prio), uintptr(unsafe.Pointer(ts)), 0)
		}
		if errno != unix.EINTR {
			return errno
		}
	}
}

// Receive dequeues the oldest message of the highest priority into buf like
// mq_timedreceive(3), waiting for one until deadline; a zero or past
// deadline does not wait. buf must hold at least MsgSize bytes (the kernel's
// rule), else the error is a *TooLargeError. It returns the message length
// and priority; an empty queue is ErrTimeout.
func (q *Queue) Receive(buf []byte, deadline time.Time) (n int, prio uint, err error) {
	if len(buf) < q.msgSize {
		return 0, 0, &TooLargeError{Op: "receive", Name: q.name, Size: q.msgSize, Max: len(buf)}
	}
	ts, wait := timespec(deadline)
	n, prio, errno := q.receive(buf, &ts, wait)
	if errno != 0 {
		return 0, 0, q.ioError("receive", errno, len(buf))
	}
	return n, prio, nil
}

// TryReceive is Receive without waiting that reports an empty queue as
// ok == false with a nil error, which costs no allocation.
func (q *Queue) TryReceive(buf []byte) (n int, prio uint, ok bool, err error) {
	if len(buf) < q.msgSize {
		return 0, 0, false, &TooLargeError{Op: "receive", Name: q.name, Size: q.msgSize, Max: len(buf)}
	}
	var ts unix.Timespec
	n, prio, errno := q.receive(buf, &ts, false)
	switch errno {
	case 0:
		return n, prio, true, nil
	case unix.ETIMEDOUT, unix.EAGAIN:
		return 0, 0, false, nil
	default:
		return 0, 0, false, q.ioError("receive", errno, len(buf))
	}
}

func (q *Queue) receive(buf []byte, ts *unix.Timespec, wait bool) (int, uint, unix.Errno) {
	var p uint32
	for {
		var r uintptr
		var errno unix.Errno
		if wait || !q.nonblock.Load() {
			r, _, errno = unix.Syscall6(unix.SYS_MQ_TIMEDRECEIVE, uintptr(q.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(unsafe.Pointer(&p)), uintptr(unsafe.Pointer(ts)), 0)
		} else {
			r, _, errno = unix.RawSyscall6(unix.SYS_MQ_TIMEDRECEIVE, uintptr(q.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(unsafe.Pointer(&p)), uintptr(unsafe.Pointer(ts)), 0)
		}
		if errno != unix.EINTR {
			return int(r), uint(p), errno
		}
	}
}

func (q *Queue) ioError(op string, errno unix.Errno, size int) error {
	switch errno {
	case unix.ETIMEDOUT, unix.EAGAIN:
		return &Error{Op: op, Name: q.name, Err: errno, kind: ErrTimeout}
	case unix.EMSGSIZE:
		if op == "receive" {
			return &TooLargeError{Op: op, Name: q.name, Size: q.msgSize, Max: size}
		}
		return &TooLargeError{Op: op, Name: q.name, Size: size, Max: q.msgSize}
	}
	return &Error{Op: op, Name: q.name, Err: errno}
}

// timespec converts an absolute deadline to the CLOCK_REALTIME timespec the
// kernel expects, and says whether the call may wait. A deadline that has
// passed becomes the zero timespec, which the kernel treats as "do not
// wait" without arming a timer.
func timespec(deadline time.Time) (unix.Timespec, bool) {
	if deadline.IsZero() || !deadline.After(time.Now()) {
		return unix.Timespec{}, false
	}
	return unix.Timespec{Sec: deadline.Unix(), Nsec: int64(deadline.Nanosecond())}, true
}

// Paths of the limits a process without CAP_SYS_RESOURCE is held to.
const (
	MsgMaxFile     = "/proc/sys/fs/mqueue/msg_max"
	MsgSizeMaxFile = "/proc/sys/fs/mqueue/msgsize_max"
	QueuesMaxFile  = "/proc/sys/fs/mqueue/queues_max"
)

// Limits are the machine's queue limits.
type Limits struct {
	MsgMax     int64 // deepest queue (fs.mqueue.msg_max)
	MsgSizeMax int64 // longest message (fs.mqueue.msgsize_max)
	QueuesMax  int64 // queues on the machine (fs.mqueue.queues_max)
	// MemoryMax is RLIMIT_MSGQUEUE: bytes of queues one user may own.
	MemoryMax int64
}

// SystemLimits reads the limits from /proc and getrlimit. A process with
// CAP_SYS_RESOURCE may exceed the first three.
func SystemLimits() (Limits, error) {
	var l Limits
	var err error
	for _, f := range []struct {
		path string
		to   *int64
	}{{MsgMaxFile, &l.MsgMax}, {MsgSizeMaxFile, &l.MsgSizeMax}, {QueuesMaxFile, &l.QueuesMax}} {
		if *f.to, err = readProcInt(f.path); err != nil {
			return l, err
		}
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &rl); err != nil {
		return l, fmt.Errorf("mq: getrlimit(RLIMIT_MSGQUEUE): %w", err)
	}
	l.MemoryMax = int64(min(rl.Cur, 1<<62))
	return l, nil
}

func readProcInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("mq: reading limit: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("mq: reading limit %s: %w", path, err)
	}
	return n, nil
}

// QueueBytes estimates what a queue counts against RLIMIT_MSGQUEUE: its
// messages plus the kernel's per-message and per-priority bookkeeping
// (ipc/mqueue.c; the structure sizes are those of 64-bit kernels).
func QueueBytes(maxMsg, msgSize int) int64 {
	const msgMsg, treeNode = 48, 40
	return int64(maxMsg)*int64(msgSize) + int64(maxMsg)*msgMsg + int64(min(maxMsg, PrioMax))*treeNode
}

// errInvalidSize is the errno of a size the machine refuses, joined with
// engines.ErrInvalid: asking for it is a configuration error.
var errInvalidSize = errors.Join(unix.EINVAL, engines.ErrInvalid)

// CheckAttr returns a *LimitError if a queue of maxMsg messages of msgSize
// bytes exceeds what this process may create, naming the /proc file and the
// sysctl to raise; nil if it fits or the limits cannot be read.
func CheckAttr(name string, maxMsg, msgSize int) error {
	lim, err := SystemLimits()
	if err != nil || HasSysResource() {
		return nil
	}
	if int64(maxMsg) > lim.MsgMax {
		return &LimitError{Name: name, What: "max_messages", Asked: int64(maxMsg), Limit: lim.MsgMax, Err: errInvalidSize,
			Hint: fmt.Sprintf("the depth of a queue is capped by %s (raise it with `sysctl fs.mqueue.msg_max=%d`) unless the process has CAP_SYS_RESOURCE", MsgMaxFile, maxMsg)}
	}
	if int64(msgSize) > lim.MsgSizeMax {
		return &LimitError{Name: name, What: "message_size", Asked: int64(msgSize), Limit: lim.MsgSizeMax, Err: errInvalidSize,
			Hint: fmt.Sprintf("the message size is capped by %s (raise it with `sysctl fs.mqueue.msgsize_max=%d`) unless the process has CAP_SYS_RESOURCE", MsgSizeMaxFile, msgSize)}
	}
	return nil
}

// HasSysResource reports whether this process has CAP_SYS_RESOURCE, which
// lifts the msg_max, msgsize_max and queues_max limits.
func HasSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	const bit = unix.CAP_SYS_RESOURCE
	return data[bit/32].Effective&(1<<(bit%32)) != 0
}

// openError explains an mq_open failure, naming the limit it hit.
func openError(name string, flag int, attr *Attr, errno unix.Errno) error {
	creating := flag&unix.O_CREAT != 0
	if creating && errno == unix.EINVAL && attr != nil {
		if err := CheckAttr(name, attr.MaxMsg, attr.MsgSize); err != nil {
			return err
		}
	}
	lim, lerr := SystemLimits()
	switch {
	case creating && errno == unix.ENOSPC && lerr == nil:
		return &LimitError{Name: name, What: "queues", Asked: lim.QueuesMax + 1, Limit: lim.QueuesMax, Err: errno,
			Hint: fmt.Sprintf("the machine's number of queues is capped by %s (raise it with `sysctl fs.mqueue.queues_max`; unlink queues no longer used)", QueuesMaxFile)}
	case creating && errno == unix.EMFILE && lerr == nil && attr != nil:
		return &LimitError{Name: name, What: "too many open files, or the memory for message queues is used up", Err: errno,
			Hint: fmt.Sprintf("each user may own %d bytes of queues (RLIMIT_MSGQUEUE, `ulimit -q`) and this queue needs about %d; queues count until unlinked, so unlink those no longer used or lower max_messages or message_size", lim.MemoryMax, QueueBytes(attr.MaxMsg, attr.MsgSize))}
	}
	return &Error{Op: "open", Name: name, Err: errno}
}
