//go:build !linux

package server_test

import "testing"

// shmPrefix skips: the shm engine runs on Linux only (engine_shm_test.go
// has the real one).
func shmPrefix(tb testing.TB) string {
	tb.Skip("SKIP: the shm engine runs on Linux only")
	return ""
}

// mqPrefix skips: the posixmq engine runs on Linux only
// (engine_posixmq_test.go has the real one).
func mqPrefix(tb testing.TB, _ ...string) string {
	tb.Skip("SKIP: the posixmq engine runs on Linux only")
	return ""
}
