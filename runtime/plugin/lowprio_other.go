//go:build !linux

package plugin

// lowPriority runs f; only Linux has per-thread priorities to lower.
func lowPriority(f func()) { f() }
