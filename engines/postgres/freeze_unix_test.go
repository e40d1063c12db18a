//go:build unix

package postgres_test

import (
	"os"
	"syscall"
)

// freeze stops p (SIGSTOP): it runs nothing until thaw or a kill.
func freeze(p *os.Process) error { return p.Signal(syscall.SIGSTOP) }

// thaw lets a frozen p run again (SIGCONT).
func thaw(p *os.Process) error { return p.Signal(syscall.SIGCONT) }
