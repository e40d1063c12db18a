package disk_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
)

// The crash tests re-execute this test binary as a child that works on a
// data directory and reports on stdout, after each call returned, what it
// did; the parent SIGKILLs it at a random point, reopens the directory and
// checks the engine kept every promise the child saw it make.
const (
	envChild = "QRUN_DISK_CHILD" // the child's role
	envDir   = "QRUN_DISK_DIR"
	envRound = "QRUN_DISK_ROUND"
	envSync  = "QRUN_DISK_SYNC"
	crashQ   = "crash"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "":
		os.Exit(m.Run())
	case "workload":
		childWorkload()
	case "lease":
		childLease()
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envChild, os.Getenv(envChild))
		os.Exit(2)
	}
	os.Exit(0)
}

// lineWriter writes whole lines to stdout, one write per call, so a kill
// can cut the stream only between reports (each stays under PIPE_BUF).
type lineWriter struct {
	mu sync.Mutex
}

func (w *lineWriter) emit(kind string, ids []string) {
	var b strings.Builder
	flush := func() {
		w.mu.Lock()
		_, _ = os.Stdout.WriteString(b.String())
		w.mu.Unlock()
		b.Reset()
	}
	for _, id := range ids {
		b.WriteString(kind)
		b.WriteByte(' ')
		b.WriteString(id)
		b.WriteByte('\n')
		if b.Len() > 3000 {
			flush()
		}
	}
	if b.Len() > 0 {
		flush()
	}
}

func childFatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(3)
}

// childWorkload runs producers and consumers until it is killed: "E id"
// after an Enqueue returned, "Dc id" when consumer c received a message,
// "Ac id" after its Ack returned, "Rc id" after a Requeue returned. A
// consumer settles its batch in order, one at a time, so at a kill at most
// one settlement per consumer was in progress.
func childWorkload() {
	ctx := context.Background()
	mode, err := disk.ParseSyncMode(os.Getenv(envSync))
	if err != nil {
		childFatal("%v", err)
	}
	e, err := disk.Open(ctx, disk.Options{Dir: os.Getenv(envDir), Sync: mode})
	if err != nil {
		childFatal("open: %v", err)
	}
	q, err := e.Open(ctx, engines.QueueSpec{Name: crashQ, VisibilityTimeout: time.Hour})
	if err != nil {
		childFatal("open queue: %v", err)
	}
	var w lineWriter
	round := os.Getenv(envRound)
	for p := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(p), uint64(time.Now().UnixNano())))
			for i := 0; ; {
				msgs := make([]engines.Message, 1+rng.IntN(8))
				ids := make([]string, len(msgs))
				for j := range msgs {
					ids[j] = fmt.Sprintf("r%s-p%d-%d", round, p, i)
					i++
					msgs[j] = engines.Message{ID: ids[j], Body: []byte(ids[j])}
				}
				if err := q.Enqueue(ctx, msgs...); err != nil {
					childFatal("enqueue: %v", err)
				}
				w.emit("E", ids)
			}
		}()
	}
	for c := range 2 {
		d, a, r := fmt.Sprintf("D%d", c), fmt.Sprintf("A%d", c), fmt.Sprintf("R%d", c)
		go func() {
			rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			buf := make([]engines.Delivery, 16)
			for {
				n, err := q.Receive(ctx, buf)
				if err != nil {
					childFatal("receive: %v", err)
				}
				ids := make([]string, n)
				for i := range buf[:n] {
					ids[i] = buf[i].ID
				}
				w.emit(d, ids)
				for i := range buf[:n] {
					// One in ten is handed back, so leases and retries
					// are written (and killed) too.
					if rng.IntN(10) == 0 {
						if err := buf[i].Requeue(ctx, 0); err != nil {
							childFatal("requeue: %v", err)
						}
						w.emit(r, ids[i:i+1])
						continue
					}
					if err := buf[i].Ack(ctx); err != nil {
						childFatal("ack: %v", err)
					}
					w.emit(a, ids[i:i+1])
				}
			}
		}()
	}
	select {}
}

// child starts this binary in a role and returns it with its stdout.
func child(t *testing.T, role, dir, round string, mode disk.SyncMode) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+role, envDir+"="+dir, envRound+"="+round, envSync+"="+mode.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewReader(out)
}

// TestCrashRecovery kills a producing and consuming process at random
// points. In both sync modes every message whose Enqueue returned is
// delivered at least once; with SyncAlways no message whose Ack returned
// is ever delivered again. (With SyncBatch it may be: that is the mode's
// documented trade, and the test skips that check.)
func TestCrashRecovery(t *testing.T) {
	for _, mode := range []disk.SyncMode{disk.SyncAlways, disk.SyncBatch} {
		t.Run("sync="+mode.String(), func(t *testing.T) { crashRecovery(t, 3, mode) })
	}
}

// TestSoakCrashRecovery is the long form: many kill points.
func TestSoakCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: run with make soak")
	}
	for _, mode := range []disk.SyncMode{disk.SyncAlways, disk.SyncBatch} {
		t.Run("sync="+mode.String(), func(t *testing.T) { crashRecovery(t, 40, mode) })
	}
}

func crashRecovery(t *testing.T, rounds int, mode disk.SyncMode) {
	t.Parallel()
	strict := mode == disk.SyncAlways
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	enqueued := map[string]bool{} // Enqueue returned
	acked := map[string]bool{}    // Ack returned
	// maybeAcked are the messages whose Ack was in progress at a kill: the
	// only ones that may be gone without a confirmed ack.
	maybeAcked := map[string]bool{}
	for round := range rounds {
		pending := [2][]string{} // per consumer: received, ack not yet confirmed
		cmd, out := child(t, "workload", dir, fmt.Sprint(round), mode)
		killAfter := 20 + rng.IntN(4000)
		lines := 0
		for {
			line, err := out.ReadString('\n')
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("reading child: %v", err)
				}
				break // a partial last line is a report the kill cut short: ignored
			}
			kind, id, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
			switch kind {
			case "E":
				enqueued[id] = true
			case "D0", "D1":
				if strict && acked[id] {
					t.Errorf("round %d: %s delivered again after its ack returned", round, id)
				}
				c := kind[1] - '0'
				pending[c] = append(pending[c], id)
			case "A0", "A1", "R0", "R1":
				if kind[0] == 'A' {
					acked[id] = true
				}
				c := kind[1] - '0'
				if len(pending[c]) == 0 || pending[c][0] != id {
					t.Fatalf("round %d: consumer %d settled %s out of order", round, c, id)
				}
				pending[c] = pending[c][1:]
			}
			if lines++; lines == killAfter {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, p := range pending {
			if len(p) > 0 {
				maybeAcked[p[0]] = true
			}
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v before it was killed (after %d lines)", round, err, lines)
		}
		t.Logf("round %d: killed after %d reports; %d enqueues and %d acks confirmed so far", round, lines, len(enqueued), len(acked))
	}

	// Reopen and drain: nothing acked comes back, everything confirmed and
	// not acked is there, once.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The drain acks with sync = "batch": it verifies, it need not be durable.
	e, err := disk.Open(ctx, disk.Options{Dir: dir, Sync: disk.SyncBatch})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	q, err := e.Open(ctx, engines.QueueSpec{Name: crashQ})
	if err != nil {
		t.Fatal(err)
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.InFlight != 0 || st.Delayed != 0 {
		t.Fatalf("after reopening: %+v; every lease should have expired into ready", st)
	}
	left := map[string]bool{}
	for int64(len(left)) < st.Ready {
		ds, err := engines.ReceiveN(ctx, q, 256)
		if err != nil {
			t.Fatalf("draining after %d of %d: %v", len(left), st.Ready, err)
		}
		for _, d := range ds {
			if strict && acked[d.ID] {
				t.Errorf("%s is in the queue after its ack returned", d.ID)
			}
			if left[d.ID] {
				t.Errorf("%s delivered twice while draining", d.ID)
			}
			if string(d.Body) != d.ID {
				t.Errorf("%s has body %q", d.ID, d.Body)
			}
			left[d.ID] = true
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	lost := 0
	for id := range enqueued {
		if !acked[id] && !left[id] && !maybeAcked[id] {
			lost++
			if lost <= 10 {
				t.Errorf("%s: its Enqueue returned, it was never acked, and it is gone", id)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d confirmed messages lost", lost)
	}
	t.Logf("%d confirmed enqueues, %d acks, %d left after %d kills: nothing lost, nothing acked came back", len(enqueued), len(acked), len(left), rounds)
}

// childLease opens a queue with a dead-letter queue, leases one message and
// reports the delivery, then waits to be killed with the lease outstanding.
func childLease() {
	ctx := context.Background()
	e, err := disk.Open(ctx, disk.Options{Dir: os.Getenv(envDir)})
	if err != nil {
		childFatal("open: %v", err)
	}
	q, err := e.Open(ctx, engines.QueueSpec{Name: "poison", VisibilityTimeout: time.Hour, MaxAttempts: 3, DeadLetter: "poison_dlq"})
	if err != nil {
		childFatal("open queue: %v", err)
	}
	if os.Getenv(envRound) == "0" {
		if err := q.Enqueue(ctx, engines.Message{ID: "p1", Body: []byte("kills its consumer")}); err != nil {
			childFatal("enqueue: %v", err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ds, err := engines.ReceiveN(rctx, q, 1)
	if errors.Is(err, context.DeadlineExceeded) {
		fmt.Println("EMPTY")
		select {}
	}
	if err != nil {
		childFatal("receive: %v", err)
	}
	fmt.Printf("LEASED %s %d %d\n", ds[0].ID, ds[0].Attempt, ds[0].Failures)
	select {}
}

// TestCrashedLeaseCountsAsFailure kills a process while it holds a lease,
// three times: each outstanding lease counts as a failure at restart, so
// the message that "kills its consumer" reaches the dead-letter queue after
// MaxAttempts instead of circulating forever.
func TestCrashedLeaseCountsAsFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for round := range 4 {
		cmd, out := child(t, "lease", dir, fmt.Sprint(round), disk.SyncAlways)
		line, err := out.ReadString('\n')
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if err != nil {
			t.Fatalf("round %d: child said nothing: %v", round, err)
		}
		line = strings.TrimSpace(line)
		if round < 3 {
			if want := fmt.Sprintf("LEASED p1 %d %d", round+1, round); line != want {
				t.Fatalf("round %d: child reported %q, want %q", round, line, want)
			}
		} else if line != "EMPTY" {
			t.Fatalf("round %d: child reported %q, want the queue empty after 3 crashed attempts", round, line)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := disk.Open(ctx, disk.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	q, err := e.Open(ctx, engines.QueueSpec{Name: "poison"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeadLetteredTotal != 1 || st.ExpiredLeaseTotal < 3 || st.Depth() != 0 {
		t.Fatalf("stats %+v: want the message dead-lettered after 3 expired leases", st)
	}
	dlq, err := e.Open(ctx, engines.QueueSpec{Name: "poison_dlq"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, dlq, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := ds[0]
	if d.ID != "p1" || d.Attributes[engines.AttrDeadLetterSource] != "poison" || !strings.Contains(d.Attributes[engines.AttrDeadLetterReason], "max attempts") {
		t.Fatalf("dead letter %s %v", d.ID, d.Attributes)
	}
}
