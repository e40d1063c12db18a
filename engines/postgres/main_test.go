package postgres_test

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
	"github.com/qrun-dev/qrun/internal/testserver"
)

// srv is the package's one PostgreSQL server, started by TestMain.
var srv *pgtest.Server

func TestMain(m *testing.M) {
	enginetest.Child(harness())
	slotChild()
	code := pgtest.Run(m, &srv)
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// newEngine opens an engine on schema (a new one for the test when empty)
// and closes it with the test.
func newEngine(tb testing.TB, schema string, opts postgres.Options) *postgres.Engine {
	tb.Helper()
	s := pgtest.Need(tb, srv)
	if schema == "" {
		schema = s.Schema(tb)
	}
	opts.DSN, opts.Schema = s.DSN, schema
	if opts.PollInterval == 0 {
		opts.PollInterval = 200 * time.Millisecond
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = 4
	}
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(tb)
	}
	return testserver.Open(tb, "postgres.New", func(ctx context.Context) (*postgres.Engine, error) { return postgres.New(ctx, opts) })
}

// harness builds engines on a schema of their own.
func harness() enginetest.Harness {
	return testserver.Engine{
		Name:        "postgres",
		SyncCommits: true, // every statement commits before it returns
		Scope: func(tb testing.TB) (string, string) {
			s := pgtest.Need(tb, srv)
			return s.Schema(tb), s.DSN
		},
		Open: func(ctx context.Context, schema, dsn string, log *zap.Logger) (engines.Engine, error) {
			return postgres.New(ctx, postgres.Options{DSN: dsn, Schema: schema,
				PollInterval: 200 * time.Millisecond, MaxConns: 4, Logger: log})
		},
	}.Harness()
}

func TestConformance(t *testing.T) {
	pgtest.Need(t, srv)
	enginetest.Run(t, harness())
}
