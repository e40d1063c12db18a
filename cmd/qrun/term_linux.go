package main

import "golang.org/x/sys/unix"

// terminal reports whether fd is a terminal: it has terminal attributes.
func terminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}
