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
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/internal/testenv"
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
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	prefixes atomic.Uint64
}

// Start returns the server named by QRUN_NATS_URL or starts a throwaway one.
func Start() (*Server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &Server{URL: u}, nil
	}
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nats-server"); serr != nil {
			return nil, fmt.Errorf("%w (%v)", ErrNoServer, err)
		}
		bin = "/usr/sbin/nats-server"
	}
	dir, err := os.MkdirTemp("", "qrun-nats-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{URL: "nats://127.0.0.1:" + strconv.Itoa(port), bin: bin, dir: dir, port: port}
	if err := s.start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// freePort asks the kernel for a loopback port nobody uses.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("natstest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs nats-server and returns once it logs that it is ready (the
// event, not a guess at how long it takes).
func (s *Server) start() error {
	cmd := exec.Command(s.bin, "-js", "-sd", s.dir, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("natstest: start %s: %w", s.bin, err)
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
	var tail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			line := sc.Text()
			if !once {
				tail.WriteString(line + "\n")
				if strings.Contains(line, "Server is ready") {
					once = true
					close(ready)
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		if !once {
			close(ready)
		}
		close(exited)
	}()
	select {
	case <-ready:
	case <-time.After(time.Minute):
	}
	select {
	case <-exited:
		return fmt.Errorf("natstest: nats-server exited at start:\n%s", tail.String())
	default:
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return nil
}

// Stop ends the server and removes its store.
func (s *Server) Stop() {
	if s == nil || s.bin == "" {
		return
	}
	s.kill()
	_ = os.RemoveAll(s.dir)
}

// kill ends the running server process and waits for it to exit.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart kills the server (SIGKILL: a broker crash, not a clean stop) and
// starts it again on the same store and port, for tests of an outage. It
// is only possible on a server the package started itself.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if s.bin == "" {
		tb.Skipf("server %s is not ours to restart", s.URL)
	}
	s.kill()
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
	s.kill()
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
	s, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "natstest: %v\n", err)
	}
	*srv = s
	code := m.Run()
	s.Stop()
	return code
}

// Need returns s, or skips tb loudly (fails it under QRUN_REQUIRE_TOOLS=1)
// when there is no server.
func Need(tb testing.TB, s *Server) *Server {
	tb.Helper()
	if s != nil {
		return s
	}
	testenv.Missing(tb, ErrNoServer.Error())
	return nil
}

// Ctx is a context for a test's setup calls.
func Ctx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
