package nats_test

import (
	"context"
	"os"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/nats"
	"github.com/qrun-dev/qrun/engines/nats/natstest"
	"github.com/qrun-dev/qrun/internal/testserver"
)

// srv is the package's one NATS server, started by TestMain.
var srv *natstest.Server

func TestMain(m *testing.M) {
	enginetest.Child(harness(), strictHarness())
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
	return testserver.Open(tb, "nats.New", func(ctx context.Context) (*nats.Engine, error) { return nats.New(ctx, opts) })
}

// harness builds engines on a name prefix of their own.
func harness() enginetest.Harness {
	return testserver.Engine{
		Name: "nats",
		// Every settle returns once the server confirmed it, but the
		// suite's crash_lease_counts_once, which this flag also gates,
		// expects a dead process's lease to be counted with nobody
		// receiving: JetStream hands it back only to a pull, so the engine
		// counts it at the next Receive (docs/nats.md). TestCrashAcksStay
		// runs the strict crash workload instead.
		SyncCommits: false,
		Scope: func(tb testing.TB) (string, string) {
			s := natstest.Need(tb, srv)
			return s.Prefix(), s.URL
		},
		Open: func(ctx context.Context, prefix, url string, log *zap.Logger) (engines.Engine, error) {
			return nats.New(ctx, nats.Options{URLs: []string{url}, Prefix: prefix, Logger: log})
		},
	}.Harness()
}

// strictHarness is harness with SyncCommits, for the crash workload that
// also checks that no message whose Ack returned comes back.
func strictHarness() enginetest.Harness {
	h := harness()
	r := *h.Restart
	r.Name, r.SyncCommits = "nats-strict", true
	h.Restart = &r
	return h
}

// TestCrashAcksStay kills a producing and consuming qrun process three
// times: nothing whose Enqueue returned is lost, and nothing whose Ack
// returned is delivered again.
func TestCrashAcksStay(t *testing.T) {
	natstest.Need(t, srv)
	enginetest.SoakCrash(t, strictHarness(), 3)
}

func TestConformance(t *testing.T) {
	natstest.Need(t, srv)
	enginetest.Run(t, harness())
}
