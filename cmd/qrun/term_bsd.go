//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package main

import "golang.org/x/sys/unix"

// terminal reports whether fd is a terminal: it has terminal attributes
// (TIOCGETA is the BSDs' and macOS's TCGETS).
func terminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TIOCGETA)
	return err == nil
}
