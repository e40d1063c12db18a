package plugin

import (
	"os"
	"runtime"
	"sync"
)

// extraProcs is the one piece of process-wide state in this package,
// because what it coordinates is process-wide: while a new plugin version
// is prepared, GOMAXPROCS is raised by one per preparation in progress.
//
// Compiling a large guest keeps a goroutine busy for a second or more. With
// GOMAXPROCS at the core count, that goroutine holds one of Go's Ps for the
// whole compile, and on a two-core host the delivery workers share the one
// P left: a saturated consumer loses half its rate. With one P more, the
// kernel shares the cores among all runnable threads instead, and the
// workers keep two thirds. Because GOMAXPROCS belongs to the whole process,
// this is opt-in (HostOptions.ExtraProc): cmd/qrun owns its process and
// turns it on; a Go program embedding qrun may have set GOMAXPROCS itself,
// may change it at any moment, and must find it as it left it, so by
// default a compile does not touch it. (Lowering the compile thread's nice value was
// tried and is worse: a descheduled low-priority thread holding a P delays
// every garbage-collector stop-the-world until the kernel runs it again,
// which on a busy host stalled all deliveries for most of the compile.)
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

// withOwnProc runs f with one more P than the process had (see
// extraProcs), so that f does not take a P away from deliveries.
func withOwnProc(f func()) {
	raiseProcs()
	defer lowerProcs()
	f()
}
