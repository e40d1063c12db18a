//go:build !unix

package postgres_test

import (
	"errors"
	"os"
)

var errNoFreeze = errors.New("stopping a process is SIGSTOP, which this system lacks")

// freeze fails where there is no SIGSTOP: the process tests then fail
// rather than kill at an unknown moment.
func freeze(*os.Process) error { return errNoFreeze }

// thaw fails with freeze.
func thaw(*os.Process) error { return errNoFreeze }
