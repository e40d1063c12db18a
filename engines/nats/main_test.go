package nats_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/nats"
	"github.com/qrun-dev/qrun/engines/nats/natstest"
)

// srv is the package's one NATS server, started by TestMain.
var srv *natstest.Server

func TestMain(m *testing.M) {
	enginetest.Child(harness())
	os.Exit(natstest.Run(m, &srv))
}

// newEngine opens an engine on a prefix of its own (a new one when empty)
// and closes it with the test.
func newEngine(tb testing.TB, prefix string, opts nats.Options) *nats.Engine {
	tb.Helper()
	s := natstest.Need(tb, srv)
	if prefix == "" {
		prefix = s.Prefix()
	}
	opts.URLs, opts.Prefix = []string{s.URL}, prefix
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(tb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := nats.New(ctx, opts)
	if err != nil {
		tb.Fatalf("nats.New: %v", err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

// harness builds engines on a prefix of their own. Its Restart's storage
// is "prefix|url", so a crash child, which starts no server of its own,
// reaches the test's server and names.
func harness() enginetest.Harness {
	return enginetest.Harness{
		New: func(tb testing.TB) engines.Engine { return newEngine(tb, "", nats.Options{}) },
		Restart: &enginetest.Restart{
			Name: "nats",
			Storage: func(tb testing.TB) string {
				s := natstest.Need(tb, srv)
				return s.Prefix() + "|" + s.URL
			},
			Open: func(ctx context.Context, storage string) (engines.Engine, error) {
				prefix, url, _ := strings.Cut(storage, "|")
				return nats.New(ctx, nats.Options{URLs: []string{url}, Prefix: prefix, Logger: zap.NewNop()})
			},
			SyncCommits: false, // an Ack is sent, not confirmed: a crash right after may undo it
		},
	}
}

func TestConformance(t *testing.T) {
	natstest.Need(t, srv)
	enginetest.Run(t, harness())
}
