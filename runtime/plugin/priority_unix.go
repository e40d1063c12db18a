//go:build unix && !linux

package plugin

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// LowerPriority sets this process to PrecompileNice. Outside Linux a nice
// value belongs to the process, so one call covers every thread.
func LowerPriority() error {
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, PrecompileNice); err != nil {
		return fmt.Errorf("plugin: lower priority: %w", err)
	}
	return nil
}
