package testenv

import (
	"os"

	"golang.org/x/sys/unix"
)

// Datasync flushes f's data to the disk as the disk engine's commits do
// (fdatasync), for benchmarks that measure the raw ceiling.
func Datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
