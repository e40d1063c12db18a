//go:build linux

package posixmq_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq"
)

const crashEnv = "QRUN_POSIXMQ_CRASH_PREFIX"

func TestMain(m *testing.M) {
	if prefix := os.Getenv(crashEnv); prefix != "" {
		crashChild(prefix)
		return // not reached: the child kills itself
	}
	os.Exit(m.Run())
}

// crashChild enqueues five messages, leases one, delays one more, and dies
// by SIGKILL with no chance to clean up.
func crashChild(prefix string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	ctx := context.Background()
	e, err := posixmq.New(posixmq.Options{Prefix: prefix})
	if err != nil {
		fail(err)
	}
	q, err := e.Open(ctx, engines.QueueSpec{Name: "crash", VisibilityTimeout: time.Minute})
	if err != nil {
		fail(err)
	}
	for i := range 5 {
		m := engines.Message{Body: []byte("m" + strconv.Itoa(i)), Attributes: map[string]string{"n": strconv.Itoa(i)}}
		if err := q.Enqueue(ctx, m); err != nil {
			fail(err)
		}
	}
	if ds, err := engines.ReceiveN(ctx, q, 1); err != nil || string(ds[0].Body) != "m0" {
		fail(fmt.Errorf("receive: %v", err))
	}
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("delayed"), Delay: time.Hour}); err != nil {
		fail(err)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Minute) // never ends: the SIGKILL above is delivered first; nothing may run after it
}

// TestCrashKeepsKernelMessages kills a process using the engine with
// SIGKILL: every message still in the kernel queue is there for the next
// process, with its metadata; the one being handled and the delayed one,
// which lived in the dead process's memory, are gone. This is the promise
// docs/posixmq.md makes.
func TestCrashKeepsKernelMessages(t *testing.T) {
	t.Parallel()
	prefix := testPrefix()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+prefix)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v (want killed by SIGKILL)\n%s", err, out)
	}

	e := newEngine(t, posixmq.Options{Prefix: prefix})
	q, _ := open(t, e, engines.QueueSpec{Name: "crash"})
	for i := 1; i <= 4; i++ {
		d := receiveOne(t, q)
		if want := "m" + strconv.Itoa(i); string(d.Body) != want || d.Attributes["n"] != strconv.Itoa(i) || d.Attempt != 1 {
			t.Fatalf("after the crash received %q attrs %v attempt %d; want %q with n=%d at attempt 1", d.Body, d.Attributes, d.Attempt, want, i)
		}
		if err := d.Ack(ctxWait(t)); err != nil {
			t.Fatal(err)
		}
	}
	expectNone(t, q) // m0 (leased) and the delayed message died with the process
}
