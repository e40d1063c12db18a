package plugin

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// lowNice is the nice value of the thread that prepares a new plugin
// version. Compiling a large guest takes a core for most of a second; at
// nice 10 the kernel gives that thread about a tenth of what a delivery
// thread gets when both want the same core, so the delivery rate hardly
// moves during a swap, and the compile still runs at full speed on an idle
// core. (Nice 19 would starve it for tens of seconds on a saturated host.)
const lowNice = 10

// lowPriority runs f on an OS thread of its own with a lowered scheduling
// priority and waits for it. Linux applies nice values per thread. The
// goroutine never unlocks the thread, so Go discards the thread when f
// returns instead of handing its lowered priority to other goroutines.
// wazero compiles on the calling goroutine, so the whole compile runs there.
func lowPriority(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// Raising one's own nice value needs no privilege; if it fails
		// anyway, f merely runs at normal priority.
		_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), lowNice)
		f()
	}()
	<-done
}
