// Package natstest gives tests a real NATS server with JetStream. With
// QRUN_NATS_URL set it uses that server; otherwise it starts one throwaway
// nats-server (Debian's package installs /usr/sbin/nats-server) with
// JetStream on a temporary store directory and a free loopback port, and
// removes it afterwards. A test package starts one Server in TestMain and
// gives each test its own name prefix, so tests run in parallel on one
// server.
//
// Debian's nats-server (2.9) has no message scheduling; the engine's delay
// does not need it (see docs/nats.md), so the tests use the server the
// machine has rather than building a newer one.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/internal/testserver"
)

// EnvURL names the environment variable holding the URL of an existing
// server to use instead of a throwaway one.
const EnvURL = "QRUN_NATS_URL"

// ErrNoServer is returned by Start when there is neither a URL nor a
// nats-server binary; tests then skip (or fail under QRUN_REQUIRE_TOOLS=1).
var ErrNoServer = errors.New("natstest: no NATS server: set " + EnvURL + " or install nats-server")

// Server is a NATS server for one test package.
type Server struct {
	// URL reaches the server.
	URL string

	bin      string // nats-server; empty when the server is not ours
	dir      string // JetStream store directory
	port     int
	proc     testserver.Process
	prefixes atomic.Uint64
}

// Start returns the server named by QRUN_NATS_URL or starts a throwaway one.
func Start() (*Server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &Server{URL: u}, nil
	}
	l, err := testserver.NewLocal("nats-server", "qrun-nats-", ErrNoServer, "/usr/sbin/nats-server")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "nats://127.0.0.1:" + strconv.Itoa(l.Port), bin: l.Bin, dir: l.Dir, port: l.Port}
	if err := s.start(); err != nil {
		_ = os.RemoveAll(l.Dir)
		return nil, err
	}
	return s, nil
}

// start runs nats-server and returns once it logs that it is ready (the
// event, not a guess at how long it takes).
func (s *Server) start() error {
	cmd := exec.Command(s.bin, "-js", "-sd", s.dir, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port))
	if err := s.proc.Start(cmd, testserver.Ready{Line: "Server is ready"}); err != nil {
		return fmt.Errorf("natstest: nats-server: %w", err)
	}
	return nil
}

// Stop ends the server and removes its store.
func (s *Server) Stop() {
	if s == nil || s.bin == "" {
		return
	}
	s.proc.Kill()
	_ = os.RemoveAll(s.dir)
}

// Restart kills the server (SIGKILL: a broker crash, not a clean stop) and
// starts it again on the same store and port, for tests of an outage. It
// is only possible on a server the package started itself.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if s.bin == "" {
		tb.Skipf("server %s is not ours to restart", s.URL)
	}
	s.proc.Kill()
	if err := s.start(); err != nil {
		tb.Fatalf("restart: %v", err)
	}
}

// Down kills the server and returns a function that starts it again on the
// same store and port, for tests that act while the broker is away.
func (s *Server) Down(tb testing.TB) (up func()) {
	tb.Helper()
	if s.bin == "" {
		tb.Skipf("server %s is not ours to stop", s.URL)
	}
	s.proc.Kill()
	return func() {
		if err := s.start(); err != nil {
			tb.Fatalf("start again: %v", err)
		}
	}
}

// Prefix returns a name prefix no other test of this process uses, so
// that tests sharing the server keep to their own streams and buckets.
func (s *Server) Prefix() string {
	return fmt.Sprintf("t%d_%d_", os.Getpid(), s.prefixes.Add(1))
}

// Run starts the package's server, runs the tests, stops the server and
// returns the exit code, for TestMain. Without a server *srv stays nil and
// the tests that Need it skip (or fail under QRUN_REQUIRE_TOOLS=1).
func Run(m *testing.M, srv **Server) int {
	return testserver.Run(m, "natstest", srv, Start, (*Server).Stop)
}

// Need returns s, or skips tb loudly (fails it under QRUN_REQUIRE_TOOLS=1)
// when there is no server.
func Need(tb testing.TB, s *Server) *Server {
	tb.Helper()
	return testserver.Need(tb, s, ErrNoServer)
}

// Ctx is a context for a test's setup calls.
func Ctx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
