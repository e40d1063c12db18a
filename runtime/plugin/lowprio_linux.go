package plugin

import (
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// lowNice is the nice value of the thread that prepares a new plugin
// version. Against two delivery threads at nice 0 on two cores, a nice-5
// thread gets about 14% of the CPU: a saturated consumer loses under a
// tenth of its rate while a version compiles, and a small module (a few
// milliseconds of work) still swaps within tens of milliseconds. On an idle
// core the compile runs at full speed whatever its nice value. Nice 10 cut
// the loss to ~5% but made a Go guest's swap take tens of seconds on a busy
// host; 19 would starve it.
const lowNice = 5

// extraProcs is the one piece of process-wide state here, because what it
// coordinates is process-wide: while low-priority work runs, GOMAXPROCS is
// raised by one per such work. Without that, the lowered thread would hold
// one of Go's Ps, and whenever the kernel preferred the delivery threads it
// would sit descheduled with the P in hand: a priority inversion that halves
// a two-core qrun's delivery rate for the whole compile. With a P of its
// own, the thread only ever competes for a core, at low priority. (It can
// still delay a garbage collector's stop-the-world until the kernel runs it
// again, which is why only short-lived work runs like this, never a thread
// that lives as long as a consumer: tried for the per-message refill at
// nice 19, it made every delivery slower.)
var extraProcs struct {
	mu   sync.Mutex
	n    int
	base int
}

func raiseProcs() {
	extraProcs.mu.Lock()
	defer extraProcs.mu.Unlock()
	if extraProcs.n == 0 {
		extraProcs.base = runtime.GOMAXPROCS(0)
	}
	extraProcs.n++
	runtime.GOMAXPROCS(extraProcs.base + extraProcs.n)
}

func lowerProcs() {
	extraProcs.mu.Lock()
	defer extraProcs.mu.Unlock()
	extraProcs.n--
	switch {
	case extraProcs.n > 0:
		runtime.GOMAXPROCS(extraProcs.base + extraProcs.n)
	case os.Getenv("GOMAXPROCS") == "":
		// Back to the runtime's own choice, which follows CPU limits.
		runtime.SetDefaultGOMAXPROCS()
	default:
		runtime.GOMAXPROCS(extraProcs.base)
	}
}

// lowPriority runs f on an OS thread of its own, with scheduling priority
// lowered to nice and a Go P of its own (see extraProcs), and waits for it. Linux
// applies nice values per thread. The goroutine never unlocks the thread,
// so Go discards the thread when f returns instead of handing its lowered
// priority to other goroutines. wazero compiles on the calling goroutine,
// so the whole compile runs there.
func lowPriority(nice int, f func()) {
	raiseProcs()
	defer lowerProcs()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// Raising one's own nice value needs no privilege; if it fails
		// anyway, f merely runs at normal priority.
		_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice)
		f()
	}()
	<-done
}
