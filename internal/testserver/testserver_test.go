package testserver

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/qrun-dev/qrun/internal/testenv"
)

func shell(tb testing.TB, script string) *exec.Cmd {
	tb.Helper()
	return exec.Command(testenv.Tool(tb, "sh", "the tests run a shell script as a server"), "-c", script)
}

func TestStartWaitsForReadyLine(t *testing.T) {
	var p Process
	// The server stays up after its ready line, as a real one does, until
	// Kill ends it.
	if err := p.Start(shell(t, "echo starting >&2; echo 'Server is ready' >&2; exec sleep 600"), Ready{Line: "Server is ready"}); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	p.Kill() // a second Kill, with nothing running, does nothing
}

func TestStartReportsExitAtStart(t *testing.T) {
	var p Process
	err := p.Start(shell(t, "echo 'bad config' >&2; exit 3"), Ready{Line: "Server is ready"})
	if err == nil || !strings.Contains(err.Error(), "bad config") {
		t.Fatalf("exit at start: got %v, want it with the server's stderr", err)
	}
}

func TestStartPollsProbe(t *testing.T) {
	var p Process
	calls := 0
	probe := func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}
	if err := p.Start(shell(t, "exec sleep 600"), Ready{Probe: probe}); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	if calls != 3 {
		t.Fatalf("probe called %d times, want 3", calls)
	}
}

func TestStartExitLog(t *testing.T) {
	var p Process
	err := p.Start(shell(t, "exit 1"), Ready{Probe: func(context.Context) error { return errors.New("down") },
		ExitLog: func() string { return "from the log file" }})
	if err == nil || !strings.Contains(err.Error(), "from the log file") {
		t.Fatalf("got %v, want the ExitLog text", err)
	}
}

func TestFreePort(t *testing.T) {
	port, err := FreePort()
	if err != nil || port <= 0 {
		t.Fatalf("FreePort = %d, %v", port, err)
	}
}

func TestNeedReturnsServer(t *testing.T) {
	s := new(int)
	if got := Need(t, s, errors.New("none")); got != s {
		t.Fatal("Need did not return the server")
	}
}

type closer struct{ closed bool }

func (c *closer) Close() error { c.closed = true; return nil }

func TestOpenClosesWithTest(t *testing.T) {
	var c *closer
	t.Run("open", func(t *testing.T) {
		c = Open(t, "open", func(ctx context.Context) (*closer, error) {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("open called without a deadline")
			}
			return &closer{}, nil
		})
		if c.closed {
			t.Fatal("closed before the test ended")
		}
	})
	if !c.closed {
		t.Fatal("not closed when the test ended")
	}
}

func TestStorageRoundTrip(t *testing.T) {
	scope, addr := SplitStorage(JoinStorage("t1_2_", "host=/tmp/x|y port=5432"))
	if scope != "t1_2_" || addr != "host=/tmp/x|y port=5432" {
		t.Fatalf("SplitStorage = %q, %q", scope, addr)
	}
}

// TestNewLocal: a binary missing from PATH and from the fallbacks is
// reported wrapping the helper's error (so its tests skip); a fallback
// that exists is used, with a fresh directory and a port.
func TestNewLocal(t *testing.T) {
	noServer := errors.New("no server")
	if _, err := NewLocal("qrun-no-such-binary", "qrun-local-", noServer, "/no/such/path"); !errors.Is(err, noServer) {
		t.Fatalf("missing binary: %v, want it to wrap the helper's error", err)
	}
	sh := testenv.Tool(t, "sh", "a binary that exists is needed")
	l, err := NewLocal("qrun-no-such-binary", "qrun-local-", noServer, "/no/such/path", sh)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(l.Dir)
	if l.Bin != sh || l.Port == 0 {
		t.Fatalf("NewLocal = %+v, want the fallback %s and a port", l, sh)
	}
	if fi, err := os.Stat(l.Dir); err != nil || !fi.IsDir() {
		t.Fatalf("directory %s: %v", l.Dir, err)
	}
}
