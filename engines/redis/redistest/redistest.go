// Package redistest gives tests a real Redis server. With QRUN_REDIS_URL set
// it uses that server; otherwise it starts one throwaway redis-server on a
// free local port with its data in a temporary directory, configured the way
// docs/redis.md asks of a durable deployment (appendonly yes, appendfsync
// always), and removes it afterwards. A test package starts one Server in
// TestMain and gives each test its own key prefix, so tests run in parallel
// on one server.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/qrun-dev/qrun/internal/testserver"
)

// EnvURL names the environment variable holding the URL of an existing
// server to use instead of a throwaway one.
const EnvURL = "QRUN_REDIS_URL"

// ErrNoServer is returned by Start when there is neither a URL nor a
// redis-server binary; tests then skip (or fail under QRUN_REQUIRE_TOOLS=1).
var ErrNoServer = errors.New("redistest: no Redis: set " + EnvURL + " or install redis-server")

// Server is a Redis server for one test package.
type Server struct {
	// URL reaches the server (redis://127.0.0.1:port/0).
	URL string

	bin      string // redis-server, "" when the server is not ours
	dir      string
	port     int
	proc     testserver.Process
	prefixes atomic.Uint64
}

// Start returns the server named by QRUN_REDIS_URL or starts a throwaway one.
func Start() (*Server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &Server{URL: u}, nil
	}
	l, err := testserver.NewLocal("redis-server", "qrun-redis-", ErrNoServer)
	if err != nil {
		return nil, err
	}
	s := &Server{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", l.Port), bin: l.Bin, dir: l.Dir, port: l.Port}
	if err := s.start(); err != nil {
		_ = os.RemoveAll(l.Dir)
		return nil, err
	}
	return s, nil
}

// start runs redis-server on s.dir and s.port and waits until it answers.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--appendonly", "yes", "--appendfsync", "always",
		"--save", "", "--logfile", filepath.Join(s.dir, "redis.log"))
	opt, err := redis.ParseURL(s.URL)
	if err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	err = s.proc.Start(cmd, testserver.Ready{
		Probe:   func(ctx context.Context) error { return c.Ping(ctx).Err() },
		Timeout: 30 * time.Second,
		ExitLog: func() string {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return string(log)
		},
	})
	if err != nil {
		return fmt.Errorf("redistest: redis-server on port %d: %w", s.port, err)
	}
	return nil
}

// Kill kills the server with SIGKILL (a crash: only what appendfsync
// always wrote survives), leaving its data for Restart.
func (s *Server) Kill() error {
	if s.bin == "" {
		return errors.New("redistest: cannot kill a server named by " + EnvURL)
	}
	s.proc.Kill()
	return nil
}

// Restart kills the server with SIGKILL unless Kill did already, and
// starts it again on the same port and data.
func (s *Server) Restart() error {
	if err := s.Kill(); err != nil {
		return err
	}
	return s.start()
}

// Stop stops the server and removes its data.
func (s *Server) Stop() {
	if s.bin == "" {
		return
	}
	s.proc.Kill()
	_ = os.RemoveAll(s.dir)
}

// Prefix returns a key prefix no other test of this process uses.
func (s *Server) Prefix(tb testing.TB) string {
	return fmt.Sprintf("qt%d_%d:", os.Getpid(), s.prefixes.Add(1))
}

// Run starts the package's server, runs its tests and stops the server. A
// server that cannot start is reported, and tests calling Need skip.
func Run(m *testing.M, srv **Server) int {
	return testserver.Run(m, "redistest", srv, Start, (*Server).Stop)
}

// Need returns s, or skips the test when there is no server (failing
// instead under QRUN_REQUIRE_TOOLS=1).
func Need(tb testing.TB, s *Server) *Server {
	tb.Helper()
	return testserver.Need(tb, s, ErrNoServer)
}
