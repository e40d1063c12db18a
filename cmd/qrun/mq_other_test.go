//go:build !linux

package main_test

// unlinkMQ does nothing off Linux, where no test makes a POSIX queue.
func unlinkMQ(string) {}
