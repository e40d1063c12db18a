//go:build linux

// Package mqtest helps tests and benchmarks of POSIX message queue code: a
// plain C client compiled with gcc to prove interoperability with libc, and
// the raw throughput ceilings engines are compared with.
package mqtest

import (
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines/posixmq/mq"
	"github.com/qrun-dev/qrun/internal/testenv"
)

//go:embed testdata/mqclient.c
var clientSource []byte

// Msg is a message as the C client sends or received it.
type Msg struct {
	Prio uint
	Body []byte
}

// String formats m the way the client does, PRIO:HEX.
func (m Msg) String() string { return fmt.Sprintf("%d:%x", m.Prio, m.Body) }

// Client compiles the C client into a temporary directory and returns its
// path. Without gcc the test is skipped, loudly, unless QRUN_REQUIRE_TOOLS=1
// asks for every tool, in which case it fails.
func Client(tb testing.TB) string {
	tb.Helper()
	gcc := testenv.Tool(tb, "gcc", "the C interop test is not run (install gcc)")
	dir := tb.TempDir()
	src := filepath.Join(dir, "mqclient.c")
	if err := os.WriteFile(src, clientSource, 0o644); err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, "mqclient")
	// -lrt: glibc before 2.34 keeps mq_* there; later ones accept it.
	if out, err := exec.Command(gcc, "-O2", "-Wall", "-Werror", "-o", bin, src, "-lrt").CombinedOutput(); err != nil {
		tb.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// Send runs the client to mq_send msgs, in order, to the named queue (which
// must exist).
func Send(tb testing.TB, client, name string, msgs ...Msg) {
	tb.Helper()
	args := []string{"send", name}
	for _, m := range msgs {
		args = append(args, m.String())
	}
	if out, err := exec.Command(client, args...).CombinedOutput(); err != nil {
		tb.Fatalf("mqclient send: %v\n%s", err, out)
	}
}

// Recv runs the client to mq_receive n messages from the named queue.
func Recv(tb testing.TB, client, name string, n int) []Msg {
	tb.Helper()
	out, err := exec.Command(client, "recv", name, strconv.Itoa(n)).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		tb.Fatalf("mqclient recv: %v\n%s", err, stderr)
	}
	var msgs []Msg
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		p, h, ok := strings.Cut(line, ":")
		prio, perr := strconv.ParseUint(p, 10, 32)
		body, herr := hex.DecodeString(h)
		if !ok || perr != nil || herr != nil {
			tb.Fatalf("mqclient printed %q", line)
		}
		msgs = append(msgs, Msg{Prio: uint(prio), Body: body})
	}
	return msgs
}

var seq atomic.Uint64

// UniqueName returns a queue name no other test, process or run uses.
func UniqueName(prefix string) string {
	return fmt.Sprintf("/%s_%d_%d_%d", prefix, os.Getpid(), time.Now().UnixNano()%1e9, seq.Add(1))
}

// BenchRaw measures the ceiling of the mechanism itself: one goroutine
// sending bodySize-byte messages with mq_timedsend and another receiving
// them with mq_timedreceive, both blocking in the kernel, through a queue
// of depth maxMsg. It reports msgs/s.
func BenchRaw(b *testing.B, maxMsg, msgSize, bodySize int) {
	benchRaw(b, maxMsg, msgSize, bodySize, false)
}

// BenchRawPolled is BenchRaw with non-blocking descriptors that wait in Go's
// network poller instead of the kernel, the way the posixmq engine waits;
// on Go it is usually the faster of the two, so it is the stricter ceiling.
func BenchRawPolled(b *testing.B, maxMsg, msgSize, bodySize int) {
	benchRaw(b, maxMsg, msgSize, bodySize, true)
}

func benchRaw(b *testing.B, maxMsg, msgSize, bodySize int, polled bool) {
	name := UniqueName("qrun_bench_raw")
	flag := unix.O_RDWR | unix.O_CREAT | unix.O_EXCL
	if polled {
		flag |= unix.O_NONBLOCK
	}
	q, err := mq.Open(name, flag, 0o600, &mq.Attr{MaxMsg: maxMsg, MsgSize: msgSize})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = mq.Unlink(name) }()
	var rc interface {
		Read(func(uintptr) bool) error
		Write(func(uintptr) bool) error
	}
	if polled {
		f := os.NewFile(uintptr(q.Fd()), name)
		defer f.Close()
		c, err := f.SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		rc = c
	} else {
		defer q.Close()
	}
	body := make([]byte, bodySize)
	far := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	wg.Add(1)
	var rerr error
	go func() {
		defer wg.Done()
		buf := make([]byte, msgSize)
		for i := 0; i < b.N; i++ {
			if !polled {
				if _, _, rerr = q.Receive(buf, far); rerr != nil {
					return
				}
				continue
			}
			if _, _, rerr = q.Receive(buf, time.Time{}); rerr == nil {
				continue
			}
			if err := rc.Read(func(uintptr) bool { _, _, rerr = q.Receive(buf, time.Time{}); return rerr == nil }); err != nil {
				rerr = err
				return
			}
		}
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !polled {
			if err := q.Send(body, 0, far); err != nil {
				b.Fatal(err)
			}
			continue
		}
		if q.Send(body, 0, time.Time{}) == nil {
			continue
		}
		var serr error
		if err := rc.Write(func(uintptr) bool { serr = q.Send(body, 0, time.Time{}); return serr == nil }); err != nil || serr != nil {
			b.Fatal(err, serr)
		}
	}
	wg.Wait()
	b.StopTimer()
	if rerr != nil {
		b.Fatal(rerr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
