//go:build !linux

package plugin

// lowPriority runs f; only Linux has per-thread priorities to lower.
func lowPriority(_ int, f func()) { f() }
