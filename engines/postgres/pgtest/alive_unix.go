//go:build unix

package pgtest

import "syscall"

// alive reports whether process pid still runs: signal 0 checks without
// sending anything.
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }
