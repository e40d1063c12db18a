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
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/qrun-dev/qrun/internal/testenv"
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
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	prefixes atomic.Uint64
}

// Start returns the server named by QRUN_REDIS_URL or starts a throwaway one.
func Start() (*Server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &Server{URL: u}, nil
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoServer, err)
	}
	dir, err := os.MkdirTemp("", "qrun-redis-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), bin: bin, dir: dir, port: port}
	if err := s.start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs redis-server on s.dir and s.port and waits until it answers.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--appendonly", "yes", "--appendfsync", "always",
		"--save", "", "--logfile", filepath.Join(s.dir, "redis.log"))
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	opt, _ := redis.ParseURL(s.URL)
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if err := c.Ping(ctx).Err(); err == nil {
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redistest: redis-server exited at start: %s", log)
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("redistest: redis-server did not answer on port %d: %w", s.port, ctx.Err())
		case <-time.After(20 * time.Millisecond): // polling a starting server: nothing to wait on
		}
	}
}

// kill stops the server with SIGKILL and waits for it to exit.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart kills the server with SIGKILL (a crash: only what appendfsync
// always wrote survives) and starts it again on the same port and data.
func (s *Server) Restart() error {
	if s.bin == "" {
		return errors.New("redistest: cannot restart a server named by " + EnvURL)
	}
	s.kill()
	return s.start()
}

// Stop stops the server and removes its data.
func (s *Server) Stop() {
	if s.bin == "" {
		return
	}
	s.kill()
	_ = os.RemoveAll(s.dir)
}

// Prefix returns a key prefix no other test of this process uses.
func (s *Server) Prefix(tb testing.TB) string {
	return fmt.Sprintf("qt%d_%d:", os.Getpid(), s.prefixes.Add(1))
}

// Run starts the package's server, runs its tests and stops the server. A
// server that cannot start is reported, and tests calling Need skip.
func Run(m *testing.M, srv **Server) int {
	s, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "redistest: %v\n", err)
	}
	*srv = s
	code := m.Run()
	if s != nil {
		s.Stop()
	}
	return code
}

// Need returns s, or skips the test when there is no server (failing
// instead under QRUN_REQUIRE_TOOLS=1).
func Need(tb testing.TB, s *Server) *Server {
	tb.Helper()
	if s != nil {
		return s
	}
	testenv.Missing(tb, ErrNoServer.Error())
	return nil
}
