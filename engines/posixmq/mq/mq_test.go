//go:build linux

package mq_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

var seq atomic.Uint64

// uniqueName is a queue name no other test or run uses.
func uniqueName() string { return fmt.Sprintf("/qrt_mq_%d_%d", os.Getpid(), seq.Add(1)) }

// create makes a new queue and unlinks it when the test ends.
func create(t *testing.T, flag int, maxMsg, msgSize int) *mq.Queue {
	t.Helper()
	name := uniqueName()
	q, err := mq.Open(name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|flag, 0o600, &mq.Attr{MaxMsg: maxMsg, MsgSize: msgSize})
	if err != nil {
		t.Fatalf("Open(%s): %v", name, err)
	}
	t.Cleanup(func() {
		_ = q.Close()
		_ = mq.Unlink(name)
	})
	return q
}

func TestCanonicalName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", mq.NameMax)
	tests := []struct {
		in, want string // want "" means rejected
	}{
		{"orders", "/orders"},
		{"/orders", "/orders"},
		{"qrun.orders-dlq_1", "/qrun.orders-dlq_1"},
		{long, "/" + long},
		{"/" + long, "/" + long},
		{long + "x", ""},
		{"", ""},
		{"/", ""},
		{"//orders", ""},
		{"a/b", ""},
		{"/a/b", ""},
		{".", ""},
		{"/..", ""},
		{"a\x00b", ""},
	}
	for _, tt := range tests {
		got, err := mq.CanonicalName(tt.in)
		if tt.want == "" {
			if !errors.Is(err, engines.ErrInvalid) {
				t.Errorf("CanonicalName(%q) = %q, %v; want an error wrapping ErrInvalid", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CanonicalName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestAcceptedNamesAreKernelNames proves the validation agrees with the
// kernel: every accepted spelling creates the queue it names, and the
// longest name is stored whole.
func TestAcceptedNamesAreKernelNames(t *testing.T) {
	t.Parallel()
	base := fmt.Sprintf("qrt_mq_%d_names_", os.Getpid())
	long := base + strings.Repeat("y", mq.NameMax-len(base))
	for _, name := range []string{base + "plain", "/" + base + "slash", long} {
		q, err := mq.Open(name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600, &mq.Attr{MaxMsg: 1, MsgSize: 8})
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		_ = q.Close()
		// Opening it again without O_CREAT finds the same queue under the
		// canonical name, so nothing was truncated or renamed.
		again, err := mq.Open(q.Name(), unix.O_RDONLY, 0, nil)
		if err != nil {
			t.Fatalf("reopen %q as %q: %v", name, q.Name(), err)
		}
		_ = again.Close()
		if err := mq.Unlink(name); err != nil {
			t.Fatalf("Unlink(%q): %v", name, err)
		}
	}
}

func TestSendReceivePriorityOrder(t *testing.T) {
	t.Parallel()
	q := create(t, 0, 10, 64)
	sends := []struct {
		body string
		prio uint
	}{{"a", 0}, {"b", 5}, {"", 5}, {"d", mq.PrioMax - 1}, {"e", 1}, {strings.Repeat("f", 64), 0}}
	for _, s := range sends {
		if err := q.Send([]byte(s.body), s.prio, time.Time{}); err != nil {
			t.Fatalf("Send(%q, %d): %v", s.body, s.prio, err)
		}
	}
	if a, err := q.Attr(); err != nil || a.CurMsgs != len(sends) || a.MaxMsg != 10 || a.MsgSize != 64 {
		t.Fatalf("Attr = %+v, %v; want 6 messages, depth 10, size 64", a, err)
	}
	// The kernel's order: highest priority first, FIFO within one.
	want := []int{3, 1, 2, 4, 0, 5}
	buf := make([]byte, 64)
	for _, i := range want {
		n, prio, err := q.Receive(buf, time.Time{})
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		if string(buf[:n]) != sends[i].body || prio != sends[i].prio {
			t.Fatalf("received %q at priority %d, want %q at %d", buf[:n], prio, sends[i].body, sends[i].prio)
		}
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	q := create(t, 0, 2, 32)
	err := q.Send(make([]byte, 33), 0, time.Time{})
	var tl *mq.TooLargeError
	if !errors.As(err, &tl) || tl.Size != 33 || tl.Max != 32 || tl.Op != "send" {
		t.Fatalf("Send(33 bytes) into a 32-byte queue: %v; want a TooLargeError with sizes 33 and 32", err)
	}
	if !errors.Is(err, unix.EMSGSIZE) || !errors.Is(err, engines.ErrTooLarge) {
		t.Fatalf("%v does not match EMSGSIZE and engines.ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "33") || !strings.Contains(err.Error(), "32") {
		t.Fatalf("error %q does not give both sizes", err)
	}
	_, _, err = q.Receive(make([]byte, 31), time.Time{})
	if !errors.As(err, &tl) || tl.Op != "receive" || tl.Size != 32 || tl.Max != 31 || !errors.Is(err, unix.EMSGSIZE) {
		t.Fatalf("Receive into 31 bytes from a 32-byte queue: %v; want a TooLargeError", err)
	}
}

func TestInvalidPriority(t *testing.T) {
	t.Parallel()
	q := create(t, 0, 2, 8)
	if err := q.Send(nil, mq.PrioMax, time.Time{}); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("Send at priority %d: %v, want ErrInvalid", mq.PrioMax, err)
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		flag  int
		errno unix.Errno
	}{
		{"blocking", 0, unix.ETIMEDOUT},
		{"nonblocking", unix.O_NONBLOCK, unix.EAGAIN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q := create(t, tt.flag, 1, 8)
			buf := make([]byte, 8)
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, mq.ErrTimeout) || !errors.Is(err, tt.errno) {
					t.Fatalf("%s: %v; want ErrTimeout wrapping %v", what, err, tt.errno)
				}
			}
			// A zero deadline never waits.
			_, _, err := q.Receive(buf, time.Time{})
			check("Receive from an empty queue", err)
			if err := q.Send([]byte("x"), 0, time.Time{}); err != nil {
				t.Fatal(err)
			}
			check("Send to a full queue", q.Send([]byte("y"), 0, time.Time{}))
			if tt.flag != 0 {
				return
			}
			// A deadline is waited for, and not less.
			deadline := time.Now().Add(50 * time.Millisecond)
			err = q.Send([]byte("y"), 0, deadline)
			check("Send to a full queue with a deadline", err)
			if now := time.Now(); now.Before(deadline) {
				t.Fatalf("Send gave up %v before its deadline", deadline.Sub(now))
			}
		})
	}
}

// TestBlockedSendCompletes shows a send waiting for room goes through when
// room appears, and that SetNonblock switches waiting off and on.
func TestBlockedSendCompletes(t *testing.T) {
	t.Parallel()
	q := create(t, 0, 1, 8)
	if err := q.Send([]byte("1"), 0, time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- q.Send([]byte("2"), 0, time.Now().Add(time.Minute)) }()
	buf := make([]byte, 8)
	if n, _, err := q.Receive(buf, time.Now().Add(10*time.Second)); err != nil || string(buf[:n]) != "1" {
		t.Fatalf("Receive = %q, %v", buf[:n], err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("blocked Send: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked Send did not complete after room appeared")
	}
	if err := q.SetNonblock(true); err != nil {
		t.Fatal(err)
	}
	// Full again: a non-blocking descriptor fails at once even with a deadline.
	if err := q.Send([]byte("3"), 0, time.Now().Add(time.Hour)); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("Send on a non-blocking descriptor of a full queue: %v, want EAGAIN", err)
	}
	if a, err := q.Attr(); err != nil || a.Flags&unix.O_NONBLOCK == 0 {
		t.Fatalf("Attr after SetNonblock(true) = %+v, %v", a, err)
	}
}

func TestEmptyMessage(t *testing.T) {
	t.Parallel()
	q := create(t, 0, 2, 8)
	for _, body := range [][]byte{nil, {}} {
		if err := q.Send(body, 3, time.Time{}); err != nil {
			t.Fatalf("Send(%#v): %v", body, err)
		}
		n, prio, err := q.Receive(make([]byte, 8), time.Time{})
		if err != nil || n != 0 || prio != 3 {
			t.Fatalf("Receive = %d bytes at %d, %v; want an empty message at 3", n, prio, err)
		}
	}
}

func TestOpenExistingKeepsAttributes(t *testing.T) {
	t.Parallel()
	q := create(t, 0, 3, 16)
	again, err := mq.Open(q.Name(), unix.O_RDWR|unix.O_CREAT, 0o600, &mq.Attr{MaxMsg: 5, MsgSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.MaxMsg() != 3 || again.MsgSize() != 16 {
		t.Fatalf("existing queue reopened with other attributes reports %d x %d, want its own 3 x 16", again.MaxMsg(), again.MsgSize())
	}
	// Both descriptors are the same queue.
	if err := again.Send([]byte("shared"), 0, time.Time{}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, _, err := q.Receive(buf, time.Time{}); err != nil || !bytes.Equal(buf[:n], []byte("shared")) {
		t.Fatalf("Receive through the first descriptor = %q, %v", buf[:n], err)
	}
}

func TestOpenMissing(t *testing.T) {
	t.Parallel()
	name := uniqueName()
	if _, err := mq.Open(name, unix.O_RDONLY, 0, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a missing queue: %v, want fs.ErrNotExist", err)
	}
	if err := mq.Unlink(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Unlink of a missing queue: %v, want fs.ErrNotExist", err)
	}
	if _, err := mq.Open(name, unix.O_RDWR|unix.O_CREAT, 0o600, &mq.Attr{MaxMsg: 0, MsgSize: 8}); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("Open with depth 0: %v, want ErrInvalid", err)
	}
}

// TestLimitErrors asks for more than /proc/sys/fs/mqueue allows: the error
// must name the limit, the file and the sysctl, not be a bare EINVAL.
func TestLimitErrors(t *testing.T) {
	t.Parallel()
	if mq.HasSysResource() {
		t.Skip("this process has CAP_SYS_RESOURCE, which lifts the limits under test")
	}
	lim, err := mq.SystemLimits()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		attr          mq.Attr
		limit         int64
		file, sysctl  string
		what          string
		askedInString string
	}{
		{"depth", mq.Attr{MaxMsg: int(lim.MsgMax) + 1, MsgSize: 8}, lim.MsgMax, mq.MsgMaxFile, "fs.mqueue.msg_max", "max_messages", strconv.FormatInt(lim.MsgMax+1, 10)},
		{"size", mq.Attr{MaxMsg: 1, MsgSize: int(lim.MsgSizeMax) + 1}, lim.MsgSizeMax, mq.MsgSizeMaxFile, "fs.mqueue.msgsize_max", "message_size", strconv.FormatInt(lim.MsgSizeMax+1, 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name := uniqueName()
			q, err := mq.Open(name, unix.O_RDWR|unix.O_CREAT, 0o600, &tt.attr)
			if err == nil {
				_ = q.Close()
				_ = mq.Unlink(name)
				t.Fatalf("Open beyond the limit of %d succeeded", tt.limit)
			}
			var le *mq.LimitError
			if !errors.As(err, &le) || le.Limit != tt.limit || le.What != tt.what {
				t.Fatalf("error %v; want a LimitError for %s with limit %d", err, tt.what, tt.limit)
			}
			if !errors.Is(err, mq.ErrLimit) || !errors.Is(err, unix.EINVAL) || !errors.Is(err, engines.ErrInvalid) {
				t.Fatalf("error %v does not match ErrLimit, EINVAL and engines.ErrInvalid", err)
			}
			for _, s := range []string{tt.file, tt.sysctl, tt.what, tt.askedInString, "CAP_SYS_RESOURCE"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

// TestHasSysResource cross-checks the capget call with /proc.
func TestHasSysResource(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			want := caps&(1<<unix.CAP_SYS_RESOURCE) != 0
			if got := mq.HasSysResource(); got != want {
				t.Fatalf("HasSysResource() = %v, /proc says %v", got, want)
			}
			return
		}
	}
	t.Fatal("no CapEff line in /proc/self/status")
}

func TestQueueBytesWithinRlimitAccounting(t *testing.T) {
	t.Parallel()
	// Not an exact model of the kernel's accounting: a sanity bound that
	// the estimate in the EMFILE hint is the right order of magnitude.
	if n := mq.QueueBytes(10, 8192); n < 10*8192 || n > 10*8192+2048 {
		t.Fatalf("QueueBytes(10, 8192) = %d", n)
	}
}
