package plugin

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// LowerPriority sets every thread of this process to PrecompileNice. Linux
// keeps a nice value per thread and a new thread inherits its creator's, so
// setting the threads that exist covers the ones the Go runtime starts
// later; a second pass catches a thread started during the first.
func LowerPriority() error {
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("plugin: lower priority: %w", err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, PrecompileNice); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("plugin: lower priority of thread %d: %w", tid, err)
			}
		}
	}
	return nil
}
