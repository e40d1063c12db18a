package plugin

import (
	"fmt"

	"golang.org/x/sys/windows"
)

// LowerPriority puts this process in the below-normal priority class,
// Windows' counterpart of a positive nice value.
func LowerPriority() error {
	if err := windows.SetPriorityClass(windows.CurrentProcess(), windows.BELOW_NORMAL_PRIORITY_CLASS); err != nil {
		return fmt.Errorf("plugin: lower priority: %w", err)
	}
	return nil
}
