//go:build linux

package server_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/shm"
	"github.com/qrun-dev/qrun/engines/shm/ring"
	"github.com/qrun-dev/qrun/internal/testenv"
	"github.com/qrun-dev/qrun/runtime/server"
)

var shmSeq atomic.Uint64

// shmPrefix returns a segment prefix unique to this process and call, and
// removes the segments made under it when the test ends: tests on one
// machine must never share a segment.
func shmPrefix(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat("/dev/shm"); err != nil {
		testenv.Missing(tb, fmt.Sprintf("no /dev/shm on this machine (%v); the shm engine needs POSIX shared memory", err))
	}
	p := fmt.Sprintf("qrun-srvtest-%d-%d.", os.Getpid(), shmSeq.Add(1))
	tb.Cleanup(func() {
		paths, _ := filepath.Glob("/dev/shm/" + p + "*")
		for _, path := range paths {
			_ = os.Remove(path)
		}
	})
	return p
}

// TestShmEndToEnd runs a consumer on an shm queue that another engine (a
// separate mapping, as another process has) produces into.
func TestShmEndToEnd(t *testing.T) {
	t.Parallel()
	prefix := shmPrefix(t)
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "s" {
  type      = "shm"
  prefix    = %q
  slot_size = 256
  capacity  = 64
}
queue "in" { engine = "s" }
consumer "ack" {
  queue       = "in"
  plugin      = %q
  concurrency = 2
}`, prefix, forwardWasm(t)))
	const n = 1000
	obs := newCounter(n)
	start(t, cfg, server.Options{Observer: obs})

	producer, err := shm.New(shm.Options{Prefix: prefix, SlotSize: 256, Capacity: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	q, err := producer.Open(context.Background(), engines.QueueSpec{Name: "in"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 10 {
		msgs := make([]engines.Message, 10)
		for j := range msgs {
			msgs[j].Body = fmt.Appendf(nil, "m%d", i+j)
		}
		if err := q.Enqueue(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-obs.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("handled %d of %d messages", obs.n.Load(), n)
	}
}

const envIdleChild = "QRUN_SHM_IDLE_CHILD"

// TestShmIdleCPU checks that an idle qrun with an shm queue and waiting
// consumers sleeps rather than spins. The qrun runs in a child process (this
// test binary re-executed) so that nothing else in this process is counted,
// and the child measures its own CPU time (getrusage) over an idle period
// after start-up. The bound is a resource bound, generous on purpose: a
// spinning receiver burns a whole core (100%); a sleeping one, well under 1%.
func TestShmIdleCPU(t *testing.T) {
	if os.Getenv(envIdleChild) != "" {
		t.Skip("this is the child's run")
	}
	t.Parallel()
	idle := 2 * time.Second
	if testing.Short() {
		idle = time.Second
	}
	prefix := shmPrefix(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestShmIdleChild$", "-test.v")
	cmd.Env = append(os.Environ(), envIdleChild+"="+prefix, "QRUN_SHM_IDLE_FOR="+idle.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("idle qrun: %v\n%s", err, out)
	}
	var frac float64 = -1
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "idle-cpu-fraction="); ok {
			frac, _ = strconv.ParseFloat(v, 64)
		}
	}
	if frac < 0 {
		t.Fatalf("the child reported no measurement:\n%s", out)
	}
	t.Logf("idle qrun with an shm queue and 4 waiting workers used %.3f%% of a core over %v", 100*frac, idle)
	if frac >= 0.05 {
		t.Fatalf("idle qrun used %.1f%% of a core, want well under 5%%", 100*frac)
	}
}

// waitSleepers waits until n consumers sleep on the ring at path. The ring
// header's sleeper count is the event; nothing else says that every worker
// has reached its idle wait.
func waitSleepers(t *testing.T, path string, n uint32) {
	t.Helper()
	var r *ring.Ring
	deadline := time.Now().Add(time.Minute)
	for {
		var err error
		if r == nil {
			r, err = ring.Open(path, ring.Options{})
		}
		if err == nil {
			var st ring.Stats
			if st, err = r.Stats(); err == nil && st.Sleepers >= n {
				_ = r.Close()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers never slept on %s (last error: %v)", n, path, err)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // poll the condition; the deadline only bounds a hang
	}
}

// TestShmIdleChild is TestShmIdleCPU's child: it runs only when re-executed.
func TestShmIdleChild(t *testing.T) {
	prefix := os.Getenv(envIdleChild)
	if prefix == "" {
		t.Skip("runs only as TestShmIdleCPU's child process")
	}
	idle, err := time.ParseDuration(os.Getenv("QRUN_SHM_IDLE_FOR"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "s" {
  type   = "shm"
  prefix = %q
}
queue "in" { engine = "s" }
consumer "ack" {
  queue       = "in"
  plugin      = %q
  concurrency = 4
}`, prefix, forwardWasm(t)))
	srv := start(t, cfg, server.Options{})
	// Measure from the moment all four workers sleep on the ring: start-up
	// (compilation, instances) is over then, whatever the machine's load.
	path, err := ring.Path("", prefix+"in")
	if err != nil {
		t.Fatal(err)
	}
	waitSleepers(t, path, 4)
	if !srv.Ready() {
		t.Fatal("four workers wait on the ring but the server is not ready")
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0, w0 := cpu(), time.Now()
	time.Sleep(idle) // the measured idle interval, not a wait for anything
	c1, w1 := cpu(), time.Now()
	fmt.Printf("idle-cpu-fraction=%f\n", float64(c1-c0)/float64(w1.Sub(w0)))
}

// BenchmarkEndToEndShm is BenchmarkEndToEnd on the shm engine: the
// producer publishes into the ring, the workers take from it, invoke the
// WAT handler and ack. Compare with BenchmarkEndToEnd (memory engine) and
// with engines/shm's BenchmarkRawSPSC, the raw ceiling of shared memory.
func BenchmarkEndToEndShm(b *testing.B) {
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			prefix := shmPrefix(b)
			cfg := parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "s" {
  type      = "shm"
  prefix    = %q
  slot_size = 128
  capacity  = 65536
}
queue "in" { engine = "s" }
consumer "ack" {
  queue = "in"
  plugin = %q
  concurrency = %d
  batch = 256
}`, prefix, forwardWasm(b), conc))
			obs := newCounter(b.N)
			srv := start(b, cfg, server.Options{Observer: obs})
			runEndToEnd(b, srv, obs, 256)
		})
	}
}
