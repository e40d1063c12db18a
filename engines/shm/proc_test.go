//go:build linux

package shm_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/shm"
)

// The multi-process tests re-execute this test binary as the other
// processes: TestMain sees the role in the environment and runs it
// instead of the tests.
const envRole = "QRUN_SHM_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		if err := runChild(role); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child describes a producer process.
type child struct {
	prefix, queue, id string
	slot, capacity    int
	count             int // 0: until killed
}

func (c child) env() []string {
	return append(os.Environ(), envRole+"=produce",
		"QRUN_SHM_PREFIX="+c.prefix, "QRUN_SHM_QUEUE="+c.queue, "QRUN_SHM_ID="+c.id,
		"QRUN_SHM_SLOT="+strconv.Itoa(c.slot), "QRUN_SHM_CAP="+strconv.Itoa(c.capacity),
		"QRUN_SHM_COUNT="+strconv.Itoa(c.count))
}

// start runs the child; it prints "ready" once its queue is open.
func (c child) start(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = c.env()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting producer %s: %v", c.id, err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("producer %s did not start: %q, %v", c.id, line, err)
	}
	return cmd
}

func runChild(role string) error {
	if role != "produce" {
		return fmt.Errorf("unknown role %q", role)
	}
	atoi := func(k string) int { n, _ := strconv.Atoi(os.Getenv(k)); return n }
	e, err := shm.New(shm.Options{
		Prefix: os.Getenv("QRUN_SHM_PREFIX"), SlotSize: atoi("QRUN_SHM_SLOT"), Capacity: atoi("QRUN_SHM_CAP"),
		StallTimeout: 200 * time.Millisecond, SendTimeout: time.Minute,
	})
	if err != nil {
		return err
	}
	defer e.Close()
	q, err := e.Open(context.Background(), engines.QueueSpec{Name: os.Getenv("QRUN_SHM_QUEUE")})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	id, count := os.Getenv("QRUN_SHM_ID"), atoi("QRUN_SHM_COUNT")
	const batch = 10
	msgs := make([]engines.Message, batch)
	for seq := 0; count == 0 || seq < count; {
		k := batch
		if count > 0 {
			k = min(batch, count-seq)
		}
		for j := range msgs[:k] {
			msgs[j] = engines.Message{Body: fmt.Appendf(nil, "%s:%d", id, seq+j)}
		}
		if err := q.Enqueue(context.Background(), msgs[:k]...); err != nil {
			return fmt.Errorf("producer %s at %d: %w", id, seq, err)
		}
		seq += k
	}
	return nil
}

// tally checks what one consumer sees: per producer, sequence numbers
// strictly increasing with no gap.
type tally struct {
	mu   sync.Mutex
	next map[string]int
}

func (y *tally) see(t *testing.T, body string) {
	id, s, ok := strings.Cut(body, ":")
	seq, err := strconv.Atoi(s)
	if !ok || err != nil {
		t.Fatalf("unexpected body %q", body)
	}
	y.mu.Lock()
	defer y.mu.Unlock()
	if want := y.next[id]; seq != want {
		t.Fatalf("producer %s: got message %d, want %d (lost, duplicated or reordered)", id, seq, want)
	}
	y.next[id] = seq + 1
}

func (y *tally) count(id string) int {
	y.mu.Lock()
	defer y.mu.Unlock()
	return y.next[id]
}

// consume receives and acks until done says stop, feeding the tally.
func consume(t *testing.T, q engines.Queue, y *tally, done func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	buf := make([]engines.Delivery, 64)
	for !done() {
		rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		n, err := q.Receive(rctx, buf)
		rcancel()
		if err != nil && ctx.Err() != nil {
			t.Fatalf("consumer stuck: %v (seen %v)", err, y.next)
		}
		for i := range buf[:n] {
			y.see(t, string(buf[i].Body))
			if err := buf[i].Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestTwoProducerProcessesLoseNothing: two producer processes and one
// consumer through a ring much smaller than the traffic, in blocking mode:
// every message arrives exactly once, in each producer's order.
func TestTwoProducerProcessesLoseNothing(t *testing.T) {
	t.Parallel()
	const per, capacity = 5000, 32
	prefix := testPrefix()
	e := newEngine(t, shm.Options{Prefix: prefix, SlotSize: 64, Capacity: capacity})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "two", VisibilityTimeout: time.Minute})
	var cmds []*exec.Cmd
	for _, id := range []string{"a", "b"} {
		cmds = append(cmds, child{prefix: prefix, queue: "two", id: id, slot: 64, capacity: capacity, count: per}.start(t))
	}
	y := &tally{next: map[string]int{}}
	consume(t, q, y, func() bool { return y.count("a") == per && y.count("b") == per })
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("producer %d: %v", i, err)
		}
	}
	rs, _ := q.(*shm.Queue).RingStats()
	if rs.Published != 2*per || rs.Overwritten != 0 || rs.Len != 0 {
		t.Fatalf("RingStats %+v: want %d published, none overwritten, empty", rs, 2*per)
	}
}

// TestProducerKilledMidRun: a producer process killed with SIGKILL while it
// produces does not stop the other producer or the consumer, and what the
// killed one published before it died is delivered once, in order.
func TestProducerKilledMidRun(t *testing.T) {
	t.Parallel()
	const per, capacity = 5000, 32
	prefix := testPrefix()
	e := newEngine(t, shm.Options{Prefix: prefix, SlotSize: 64, Capacity: capacity})
	defer e.Close()
	q := open(t, e, engines.QueueSpec{Name: "kill", VisibilityTimeout: time.Minute})
	victim := child{prefix: prefix, queue: "kill", id: "victim", slot: 64, capacity: capacity}.start(t)
	survivor := child{prefix: prefix, queue: "kill", id: "survivor", slot: 64, capacity: capacity, count: per}.start(t)

	y := &tally{next: map[string]int{}}
	killed := false
	consume(t, q, y, func() bool {
		if !killed && y.count("victim") >= 500 {
			if err := victim.Process.Kill(); err != nil {
				t.Fatalf("kill: %v", err)
			}
			killed = true
		}
		return killed && y.count("survivor") == per
	})
	if err := survivor.Wait(); err != nil {
		t.Fatalf("the surviving producer: %v", err)
	}
	if err := victim.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("victim exit: %v, want killed", err)
	}
	// Drain what the victim published before it died; then nothing is left
	// but (at most) a slot it claimed and never published.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	for {
		ds, err := engines.ReceiveN(ctx, q, 64)
		if err != nil {
			break
		}
		for _, d := range ds {
			y.see(t, string(d.Body))
		}
	}
	rs, _ := q.(*shm.Queue).RingStats()
	t.Logf("victim published %d before SIGKILL; ring %+v", y.count("victim"), rs)
	// The victim may die between publishing and counting its batch, so
	// the counter can trail what was delivered by at most one batch.
	if seen := uint64(per + y.count("victim")); seen < rs.Published || seen > rs.Published+10 {
		t.Fatalf("ring published %d, consumer saw %d + %d", rs.Published, per, y.count("victim"))
	}
}
