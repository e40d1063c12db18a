package redis_test

import (
	"context"
	"os"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/redis"
	"github.com/qrun-dev/qrun/engines/redis/redistest"
	"github.com/qrun-dev/qrun/internal/testserver"
)

// srv is the package's one Redis server, started by TestMain.
var srv *redistest.Server

func TestMain(m *testing.M) {
	enginetest.Child(harness())
	os.Exit(redistest.Run(m, &srv))
}

// newEngine opens an engine on prefix (a new one for the test when empty),
// on the package's server unless opts names another, and closes it with
// the test.
func newEngine(tb testing.TB, prefix string, opts redis.Options) *redis.Engine {
	tb.Helper()
	s := redistest.Need(tb, srv)
	if prefix == "" {
		prefix = s.Prefix(tb)
	}
	if opts.URL == "" {
		opts.URL = s.URL
	}
	opts.KeyPrefix = prefix
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(tb)
	}
	return testserver.Open(tb, "redis.New", func(ctx context.Context) (*redis.Engine, error) { return redis.New(ctx, opts) })
}

// harness builds engines on a key prefix of their own.
func harness() enginetest.Harness {
	return testserver.Engine{
		Name:        "redis",
		SyncCommits: true, // every script's writes are in the AOF before it replies
		Scope: func(tb testing.TB) (string, string) {
			s := redistest.Need(tb, srv)
			return s.Prefix(tb), s.URL
		},
		Open: func(ctx context.Context, prefix, url string, log *zap.Logger) (engines.Engine, error) {
			return redis.New(ctx, redis.Options{URL: url, KeyPrefix: prefix, Logger: log})
		},
	}.Harness()
}

func TestConformance(t *testing.T) {
	redistest.Need(t, srv)
	enginetest.Run(t, harness())
}
