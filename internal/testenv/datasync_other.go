//go:build !linux

package testenv

import "os"

// Datasync flushes f to the disk; outside Linux that is File.Sync (fsync,
// or F_FULLFSYNC on macOS), for benchmarks that measure the raw ceiling.
func Datasync(f *os.File) error { return f.Sync() }
