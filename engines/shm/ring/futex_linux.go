package ring

import (
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Futex operations. The private flag (128) is deliberately absent: the word
// lives in a shared mapping and the waiters are in other processes too.
const (
	futexWaitOp = 0 // FUTEX_WAIT
	futexWakeOp = 1 // FUTEX_WAKE
	wakeAllN    = 1<<31 - 1
)

// futexWait sleeps while *addr == val, for at most d. It returns on a wake,
// a changed value (EAGAIN), the timeout (ETIMEDOUT) or a signal (EINTR);
// every caller re-checks its condition, so the reason does not matter.
func futexWait(addr *atomic.Uint32, val uint32, d time.Duration) {
	if d <= 0 {
		return
	}
	ts := unix.NsecToTimespec(int64(d))
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitOp, uintptr(val),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// futexWake wakes every sleeper on addr, in any process.
func futexWake(addr *atomic.Uint32) {
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakeOp, wakeAllN, 0, 0, 0)
}
