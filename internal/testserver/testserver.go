// Package testserver runs the throwaway server processes that the engine
// test helpers (natstest, redistest, pgtest) give their packages: a free
// loopback port, one process at a time started and waited on until it is
// ready (an event, never a guess at how long it takes), killed with
// SIGKILL for crash tests, and the TestMain/Need pair that skips loudly
// without a server (or fails under QRUN_REQUIRE_TOOLS=1, see testenv).
package testserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/internal/testenv"
)

// FreePort asks the kernel for a loopback port nobody uses.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Local is what a helper needs to start a throwaway server of its own:
// the binary, a temporary data directory and a free loopback port.
type Local struct {
	Bin  string
	Dir  string
	Port int
}

// NewLocal finds binary on PATH, or else at the first of also that
// exists, and makes a temporary directory (named from dirPrefix) and a
// port for it. A missing binary is reported wrapping noServer, so the
// helper's tests skip; the caller removes Dir.
func NewLocal(binary, dirPrefix string, noServer error, also ...string) (Local, error) {
	bin, err := exec.LookPath(binary)
	if err != nil {
		i := slices.IndexFunc(also, func(p string) bool { _, serr := os.Stat(p); return serr == nil })
		if i < 0 {
			return Local{}, fmt.Errorf("%w (%v)", noServer, err)
		}
		bin = also[i]
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return Local{}, err
	}
	port, err := FreePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return Local{}, err
	}
	return Local{Bin: bin, Dir: dir, Port: port}, nil
}

// Ready says when a starting server is ready: when a line of its stderr
// contains Line, or else when Probe (polled) returns nil.
type Ready struct {
	Line  string
	Probe func(ctx context.Context) error
	// Timeout bounds the wait; 0 means a minute.
	Timeout time.Duration
	// ExitLog, when set, is what a process that exits at start is reported
	// with (its log file); otherwise the stderr read so far.
	ExitLog func() string
}

// ErrNotReady is returned by Start when the server neither became ready
// nor exited within Ready.Timeout.
var ErrNotReady = errors.New("server not ready in time")

// Process runs one server process at a time: Start launches it and waits
// until it is ready, Kill ends it, and Start after Kill is a restart.
type Process struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start runs cmd (its Stdout and Stderr must be unset) and returns once r
// says it is ready. A process that exits first, or is not ready in time,
// is an error (the latter after killing it).
func (p *Process) Start(cmd *exec.Cmd, r Ready) error {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	lineSeen := make(chan struct{})
	exited := make(chan struct{})
	var mu sync.Mutex
	var tail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		seen := false
		for sc.Scan() {
			if seen {
				continue
			}
			line := sc.Text()
			mu.Lock()
			tail.WriteString(line + "\n")
			mu.Unlock()
			if r.Line != "" && strings.Contains(line, r.Line) {
				seen = true
				close(lineSeen)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()

	timeout := r.Timeout
	if timeout == 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	exitErr := func() error {
		log := ""
		if r.ExitLog != nil {
			log = r.ExitLog()
		} else {
			mu.Lock()
			log = tail.String()
			mu.Unlock()
		}
		return fmt.Errorf("%s exited at start:\n%s", cmd.Path, log)
	}
	for {
		if r.Line == "" && r.Probe != nil && r.Probe(ctx) == nil {
			return nil
		}
		var poll <-chan time.Time
		if r.Line == "" {
			poll = time.After(20 * time.Millisecond) // polling a starting server: nothing to wait on
		}
		select {
		case <-lineSeen:
			select {
			case <-exited:
				return exitErr()
			default:
				return nil
			}
		case <-exited:
			return exitErr()
		case <-ctx.Done():
			p.Kill()
			return fmt.Errorf("%s: %w after %v", cmd.Path, ErrNotReady, timeout)
		case <-poll:
		}
	}
}

// Kill ends the running process with SIGKILL (a crash, not a clean stop)
// and waits for it to exit; without one it does nothing.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Run is a test package's TestMain body: it starts the package's server
// with start, runs the tests with *srv set (nil when start failed, which is
// reported on stderr under name), stops the server and returns m.Run's
// exit code.
func Run[S any](m *testing.M, name string, srv **S, start func() (*S, error), stop func(*S)) int {
	s, err := start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	}
	*srv = s
	code := m.Run()
	if s != nil {
		stop(s)
	}
	return code
}

// Need returns s, or skips tb loudly (fails it under QRUN_REQUIRE_TOOLS=1)
// when there is no server, saying why with missing.
func Need[S any](tb testing.TB, s *S, missing error) *S {
	tb.Helper()
	if s != nil {
		return s
	}
	testenv.Missing(tb, missing.Error())
	return nil
}
