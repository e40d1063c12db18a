package testserver

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
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

// Engine describes an engine on a package's server for the conformance
// suite: every test gets a scope of its own on the server (a key prefix,
// name prefix or schema).
type Engine struct {
	// Name is the Restart name (see enginetest.Restart.Name).
	Name string
	// SyncCommits is enginetest.Restart.SyncCommits.
	SyncCommits bool
	// Scope returns a new scope for tb and the server's address; it skips
	// tb when there is no server (the package's Need).
	Scope func(tb testing.TB) (scope, addr string)
	// Open starts an engine on scope at addr, logging to log.
	Open func(ctx context.Context, scope, addr string, log *zap.Logger) (engines.Engine, error)
}

// Harness is the conformance harness for e: New opens an engine on a scope
// of its own that logs to the test and closes with it; Restart's storage is
// JoinStorage(scope, addr), so a crash child, which starts no server of its
// own, reaches the test's server and scope.
func (e Engine) Harness() enginetest.Harness {
	return enginetest.Harness{
		New: func(tb testing.TB) engines.Engine {
			scope, addr := e.Scope(tb)
			return Open(tb, e.Name+".New", func(ctx context.Context) (engines.Engine, error) {
				return e.Open(ctx, scope, addr, zaptest.NewLogger(tb))
			})
		},
		Restart: &enginetest.Restart{
			Name:    e.Name,
			Storage: func(tb testing.TB) string { return JoinStorage(e.Scope(tb)) },
			Open: func(ctx context.Context, storage string) (engines.Engine, error) {
				scope, addr := SplitStorage(storage)
				return e.Open(ctx, scope, addr, zap.NewNop())
			},
			SyncCommits: e.SyncCommits,
		},
	}
}
