package testserver

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// OpenTimeout bounds Open's call to open.
const OpenTimeout = 30 * time.Second

// Open calls open (an engine constructor on the package's server) within
// OpenTimeout, fails tb naming what when it errs, and closes the result
// when the test ends.
func Open[T io.Closer](tb testing.TB, what string, open func(context.Context) (T, error)) T {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), OpenTimeout)
	defer cancel()
	v, err := open(ctx)
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
	tb.Cleanup(func() { _ = v.Close() })
	return v
}

// JoinStorage is a crash test's storage string for an engine on a server:
// the test's own scope (key prefix, name prefix or schema) and the
// server's address, so a crash child, which starts no server of its own,
// reaches the test's server and data. SplitStorage undoes it.
func JoinStorage(scope, addr string) string { return scope + "|" + addr }

// SplitStorage splits a JoinStorage string into scope and address.
func SplitStorage(storage string) (scope, addr string) {
	scope, addr, _ = strings.Cut(storage, "|")
	return scope, addr
}
