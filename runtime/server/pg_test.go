package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
	"github.com/qrun-dev/qrun/internal/testenv"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/server"
)

// pg is the package's one throwaway PostgreSQL, started by the first test
// that needs it (most of the package's tests do not) and stopped by
// TestMain; each test gets a schema of its own on it.
var pg struct {
	once sync.Once
	srv  *pgtest.Server
	err  error
}

// stopPostgres stops the package's PostgreSQL if a test started it.
func stopPostgres() {
	if pg.srv != nil {
		pg.srv.Stop()
	}
}

// postgresEngine returns an HCL block for a postgres engine called name on
// a schema of tb's own, or skips tb (fails it under QRUN_REQUIRE_TOOLS=1)
// when PostgreSQL cannot be started.
func postgresEngine(tb testing.TB, name string) string {
	tb.Helper()
	pg.once.Do(func() { pg.srv, pg.err = pgtest.Start() })
	if pg.err != nil {
		testenv.Missing(tb, pg.err.Error())
		return ""
	}
	return fmt.Sprintf("engine %q {\n  type   = \"postgres\"\n  dsn    = %q\n  schema = %q\n}", name, pg.srv.DSN, pg.srv.Schema(tb))
}

// theConsumer is the one consumer of s, which must have a throttle (the
// two-node tests' rate limits and per-key caps).
func theConsumer(t *testing.T, ctx context.Context, s *server.Server) admin.ConsumerInfo {
	t.Helper()
	cs, err := s.ConsumerInfos(ctx)
	if err != nil || len(cs) != 1 || cs[0].Throttle == nil {
		t.Fatalf("consumers %+v, %v", cs, err)
	}
	return cs[0]
}
