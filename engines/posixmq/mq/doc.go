// Package mq is a thin, allocation-free binding of Linux POSIX message
// queues (mq_overview(7)) made with raw system calls through
// golang.org/x/sys/unix, so qrun needs no cgo to speak to any program that
// uses libc's mq_send and mq_receive.
//
// It adds to the system calls only what every caller would otherwise get
// wrong:
//
//   - Names follow the kernel's rules and libc's spelling: "/orders" and
//     "orders" are the same queue, and a name the kernel would reject or
//     silently treat differently is refused up front (CanonicalName).
//   - Blocking is always bounded: Send and Receive take an absolute deadline,
//     and a zero deadline means "do not wait", so no call can block forever.
//   - Errors are typed: a full or empty queue is ErrTimeout (wrapping the
//     kernel's ETIMEDOUT or EAGAIN), an oversized message a *TooLargeError
//     carrying both sizes (wrapping EMSGSIZE and engines.ErrTooLarge), and a
//     queue larger than the machine allows a *LimitError that names the
//     /proc/sys/fs/mqueue file and the sysctl to change, instead of a bare
//     EINVAL.
//   - EINTR is retried: the deadline is absolute, so a retry never extends it.
//
// The package holds no state of its own; a *Queue is a descriptor and its
// name.
package mq
