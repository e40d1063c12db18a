package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/testenv"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestCommittedWasmMatchesWat recompiles every testdata/*.wat and checks the
// committed .wasm is what the source says, so nobody edits one and forgets
// the other.
func TestCommittedWasmMatchesWat(t *testing.T) {
	testenv.CheckWatSources(t, "testdata", "go generate ./runtime/plugin/")
}

// TestHostFuncTable checks the one table of host functions against the
// signatures ABI.md section 4 prints: each entry has an implementation and
// the signature the spec gives, and the spec lists nothing the table lacks.
func TestHostFuncTable(t *testing.T) {
	spec, err := os.ReadFile("../../abi/ABI.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec4, _ := strings.Cut(string(spec), "## 4.")
	sec4, _, _ = strings.Cut(sec4, "## 5.")
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| `\\(([^)]*)\\) -> ([a-z0-9]+)` \\|")
	want := make(map[string]string)
	for _, m := range row.FindAllStringSubmatch(sec4, -1) {
		var params []string
		for _, p := range strings.Split(m[2], ",") {
			if f := strings.Fields(p); len(f) > 0 {
				params = append(params, f[len(f)-1])
			}
		}
		want[m[1]] = "(" + strings.Join(params, ",") + ")->" + m[3]
	}
	funcs := hostFuncs()
	if len(want) != len(funcs) {
		t.Errorf("ABI.md section 4 lists %d host functions, the table has %d", len(want), len(funcs))
	}
	for name, f := range funcs {
		if f.fn == nil {
			t.Errorf("%s has no implementation", name)
		}
		if got := f.sig.String(); got != want[name] {
			t.Errorf("%s has signature %s, ABI.md says %q", name, got, want[name])
		}
	}
}

func TestVerdicts(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{Timeout: 2 * time.Second}, nil)
	cases := []struct {
		body    string
		verdict engines.Verdict
		err     error
		msg     string
	}{
		{"", engines.Ack, nil, ""},
		{"0", engines.Ack, nil, ""},
		{"1", engines.Nack, nil, ""},
		{"2", engines.Requeue, nil, ""},
		{"3", engines.DeadLetter, nil, ""},
		{"x", engines.Nack, ErrBadVerdict, "returned 7"},
		{"t", engines.Nack, ErrTrap, "unreachable"},
		{"X", engines.Nack, ErrTrap, "exit_code(3)"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%q", c.body), func(t *testing.T) {
			in := newInstance(t, p)
			r := in.Handle(context.Background(), delivery(c.body, nil), time.Now())
			if r.Verdict != c.verdict {
				t.Errorf("verdict %v, want %v", r.Verdict, c.verdict)
			}
			if c.err == nil {
				if r.Err != nil || in.Broken() {
					t.Fatalf("err %v broken %v", r.Err, in.Broken())
				}
				// A healthy instance serves many messages.
				if r2 := in.Handle(context.Background(), delivery("0", nil), time.Now()); r2.Err != nil || r2.Verdict != engines.Ack {
					t.Fatalf("second message: %+v", r2)
				}
				return
			}
			if !errors.Is(r.Err, c.err) || !strings.Contains(r.Err.Error(), c.msg) {
				t.Fatalf("err %v, want %v containing %q", r.Err, c.err, c.msg)
			}
			if !in.Broken() {
				t.Fatal("instance not broken after a failure")
			}
			if r.DelaySet {
				t.Error("failure reported a delay")
			}
			if r2 := in.Handle(context.Background(), delivery("0", nil), time.Now()); !errors.Is(r2.Err, ErrBroken) {
				t.Fatalf("broken instance handled a message: %+v", r2)
			}
		})
	}
}

// TestTimeout checks an infinite loop is stopped, never before its timeout.
// The watchdog samples every timeout/4 and stops a call seen running for 4
// consecutive samples, i.e. between 1x and 1.25x the timeout after it began;
// the upper bound asserted here is loose on purpose, because a loaded CI
// machine can delay any goroutine: a hang fails it, scheduling noise does not.
func TestTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{Timeout: timeout}, nil)
	in := newInstance(t, p)
	start := time.Now()
	r := in.Handle(context.Background(), delivery("l", nil), time.Now())
	elapsed := time.Since(start)
	if !errors.Is(r.Err, ErrTimeout) || r.Verdict != engines.Nack {
		t.Fatalf("got %+v, want ErrTimeout", r)
	}
	if limit := 50 * timeout; elapsed < timeout || elapsed >= limit {
		t.Fatalf("stopped after %v, want within [%v, %v)", elapsed, timeout, limit)
	}
	if !in.Broken() {
		t.Fatal("timed-out instance not broken")
	}
	t.Logf("infinite loop stopped after %v (timeout %v)", elapsed, timeout)
	// Replacing the instance is all it takes to recover.
	in2 := newInstance(t, p)
	if r := mustHandle(t, in2, delivery("0", nil)); r.Verdict != engines.Ack {
		t.Fatalf("replacement: %+v", r)
	}
	// A fast call on a long-lived instance is never mistaken for an overrun:
	// the instance lives through 20 watchdog sweeps, five times the sweeps
	// that stop a call, each after a call of its own.
	swept := sweeps(p)
	for i := 0; i < 20; i++ {
		select {
		case <-swept: // drop a sweep from before this call
		default:
		}
		mustHandle(t, in2, delivery("0", nil))
		<-swept
	}
}

// sweeps returns a channel that receives after watchdog sweeps of p (one
// send for any number since the last receive): the event a test waits for
// instead of sleeping through watchdog periods.
func sweeps(p *Plugin) <-chan struct{} {
	swept := make(chan struct{}, 1)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.afterSweep = func() {
		select {
		case swept <- struct{}{}:
		default:
		}
	}
	return swept
}

// TestTimeoutAfterReturn stages the watchdog firing after qrun_handle
// returned normally but before the call was marked finished: the verdict
// stands, but the instance, whose context is now cancelled, must report
// Broken so that it is replaced instead of failing the next message with a
// timeout that message did not cause.
func TestTimeoutAfterReturn(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{Timeout: time.Second}, nil)
	in := newInstance(t, p)
	swept := sweeps(p)
	in.afterHandle = func() {
		// The call is still marked running: wait, sweep by sweep, for the
		// real watchdog to stop it; the deadline only bounds a hang.
		deadline := time.After(10 * time.Second)
		for !in.timedOut.Load() {
			select {
			case <-swept:
			case <-deadline:
				t.Error("watchdog never fired")
				return
			}
		}
	}
	r := in.Handle(context.Background(), delivery("2", nil), time.Now())
	in.afterHandle = nil
	if r.Err != nil || r.Verdict != engines.Requeue {
		t.Fatalf("got %+v, want the verdict the guest returned", r)
	}
	if !in.Broken() {
		t.Fatal("instance stopped by the watchdog is not Broken")
	}
	if r := in.Handle(context.Background(), delivery("0", nil), time.Now()); !errors.Is(r.Err, ErrBroken) || errors.Is(r.Err, ErrTimeout) {
		t.Fatalf("next message on it: %+v, want ErrBroken", r)
	}
}

// TestBrokenAfterCancel: an instance whose context was cancelled (by the
// watchdog or by closing its plugin) can serve nothing and says so.
func TestBrokenAfterCancel(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{}, nil)
	in := newInstance(t, p)
	if in.Broken() {
		t.Fatal("fresh instance is Broken")
	}
	in.cancel()
	if !in.Broken() {
		t.Fatal("instance with a cancelled context is not Broken")
	}
}

func TestInstantiateAndInitAreBounded(t *testing.T) {
	const timeout = 100 * time.Millisecond
	h := newTestHost(t, nil)
	for _, name := range []string{"init_loop", "start_loop"} {
		t.Run(name, func(t *testing.T) {
			p := load(t, h, name, Spec{Timeout: timeout}, nil)
			start := time.Now()
			in, err := p.NewInstance(context.Background())
			elapsed := time.Since(start)
			if err == nil {
				in.Close(context.Background())
				t.Fatal("NewInstance succeeded")
			}
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err %v, want ErrTimeout", err)
			}
			// The point is that the loop is stopped at all; the bound is loose
			// so that a loaded machine cannot fail it.
			if limit := 50 * timeout; elapsed >= limit {
				t.Fatalf("stopped after %v, want < %v", elapsed, limit)
			}
		})
	}
}

func TestInitFailure(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "init_fail", Spec{}, nil)
	_, err := p.NewInstance(context.Background())
	if !errors.Is(err, ErrInit) || !strings.Contains(err.Error(), "qrun_init returned 1") {
		t.Fatalf("err %v, want ErrInit naming the status", err)
	}
}

func TestInitOrderAndConfig(t *testing.T) {
	h := newTestHost(t, nil)
	pub := &fakePublisher{}
	p := load(t, h, "ok", Spec{Config: map[string]string{"greeting": "hello"}, Publish: []string{"greeting"}}, pub)
	in := newInstance(t, p) // qrun_init returns 1 unless _initialize ran first
	if got := memI32(t, in, offInitPublish); got != abi.ErrNoMessage || len(pub.all()) != 0 {
		t.Errorf("publish in qrun_init = %d (published %d), want %d", got, len(pub.all()), abi.ErrNoMessage)
	}
	if got := memI32(t, in, offInitAttempt); got != abi.ErrNoMessage {
		t.Errorf("msg_attempt in qrun_init = %d, want %d", got, abi.ErrNoMessage)
	}
	if got := memI32(t, in, offInitCfg); got != 5 || memStr(t, in, offInitOut, 5) != "hello" {
		t.Errorf("config_get in qrun_init = %d %q", got, memStr(t, in, offInitOut, 5))
	}
	mustHandle(t, in, delivery("cgreeting", nil))
	if got := memI32(t, in, offRes); got != 5 || memStr(t, in, offOut, 5) != "hello" {
		t.Errorf("config_get = %d %q", got, memStr(t, in, offOut, 5))
	}
	mustHandle(t, in, delivery("cmissing", nil))
	if got := memI32(t, in, offRes); got != abi.ErrNotFound {
		t.Errorf("config_get(missing) = %d", got)
	}
}

func TestMessageAccessors(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{}, nil)
	in := newInstance(t, p)
	enq := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	d := func(body string) *engines.Delivery {
		dd := delivery(body, nil)
		dd.ID, dd.Queue, dd.ContentType, dd.OrderingKey = "msg-42", "orders", "application/json", "cust-7"
		dd.Attributes = map[string]string{"zeta": "last", "alpha": "first", "empty": ""}
		dd.Attempt, dd.EnqueuedAt = 3, enq
		return dd
	}
	fields := []struct {
		body string
		want string
	}{
		{"f0", "msg-42"}, {"f1", "orders"}, {"f2", "application/json"}, {"f3", ""}, {"f4", "cust-7"},
		{"aalpha", "first"}, {"azeta", "last"}, {"aempty", ""},
		{"k0", "alpha"}, {"k1", "empty"}, {"k2", "zeta"},
	}
	for _, f := range fields {
		mustHandle(t, in, d(f.body))
		if got := memI32(t, in, offRes); got != int32(len(f.want)) || memStr(t, in, offOut, uint32(got)) != f.want {
			t.Errorf("%s: %d %q, want %q", f.body, got, memStr(t, in, offOut, uint32(max(got, 0))), f.want)
		}
	}
	codes := []struct {
		body string
		want int32
	}{{"f9", abi.ErrInvalid}, {"amissing", abi.ErrNotFound}, {"k3", abi.ErrNotFound}}
	for _, c := range codes {
		mustHandle(t, in, d(c.body))
		if got := memI32(t, in, offRes); got != c.want {
			t.Errorf("%s = %d, want %d", c.body, got, c.want)
		}
	}
	// A buffer too small gets the full length and is left untouched.
	in.mem.Write(offOut, []byte("##"))
	mustHandle(t, in, d("s"))
	if got := memI32(t, in, offRes); got != 6 || memStr(t, in, offOut, 2) != "##" {
		t.Errorf("small buffer: %d %q", got, memStr(t, in, offOut, 2))
	}
	before := time.Now().UnixNano()
	mustHandle(t, in, d("n"))
	after := time.Now().UnixNano()
	if got := memI32(t, in, offRes); got != 3 {
		t.Errorf("msg_attempt = %d", got)
	}
	if got := memI64(t, in, offRes+8); got != enq.UnixNano() {
		t.Errorf("msg_enqueued_at = %d, want %d", got, enq.UnixNano())
	}
	if got := memI64(t, in, offRes+16); got < before || got > after {
		t.Errorf("now = %d, want within [%d, %d]", got, before, after)
	}
}

func TestDelayAndLease(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{}, nil)
	in := newInstance(t, p)
	r := mustHandle(t, in, delivery("d", nil))
	if r.Verdict != engines.Requeue || !r.DelaySet || r.Delay != 1500*time.Millisecond || memI32(t, in, offRes) != 0 {
		t.Errorf("set_delay: %+v rc %d", r, memI32(t, in, offRes))
	}
	r = mustHandle(t, in, delivery("D", nil))
	if r.Verdict != engines.Nack || r.DelaySet || memI32(t, in, offRes) != abi.ErrInvalid {
		t.Errorf("set_delay(-1): %+v rc %d", r, memI32(t, in, offRes))
	}
	// The delay belongs to one delivery.
	if r = mustHandle(t, in, delivery("1", nil)); r.DelaySet {
		t.Errorf("delay leaked into the next delivery: %+v", r)
	}

	s := &fakeSettler{}
	mustHandle(t, in, delivery("e", s))
	if memI32(t, in, offRes) != 0 || len(s.extended) != 1 || s.extended[0] != 2*time.Second {
		t.Errorf("extend_lease: rc %d, settler saw %v", memI32(t, in, offRes), s.extended)
	}
	mustHandle(t, in, delivery("E", s))
	if memI32(t, in, offRes) != abi.ErrInvalid || len(s.extended) != 1 {
		t.Errorf("extend_lease(-5): rc %d", memI32(t, in, offRes))
	}
	mustHandle(t, in, delivery("e", &fakeSettler{err: engines.ErrLeaseLost}))
	if got := memI32(t, in, offRes); got != abi.ErrUnavailable {
		t.Errorf("extend_lease on a lost lease = %d, want %d", got, abi.ErrUnavailable)
	}
}

// TestGuestDurationsClamped: set_delay and extend_lease clamp a guest's huge
// millisecond count to a documented maximum instead of saturating to
// math.MaxInt64, which engines would add to now and overflow.
func TestGuestDurationsClamped(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{}, nil)
	in := newInstance(t, p)
	r := mustHandle(t, in, delivery("H", nil))
	if memI32(t, in, offRes) != 0 || !r.DelaySet || r.Delay != MaxGuestDelay {
		t.Errorf("set_delay(max) gave %+v rc %d, want delay %v", r, memI32(t, in, offRes), MaxGuestDelay)
	}
	s := &fakeSettler{}
	mustHandle(t, in, delivery("L", s))
	if memI32(t, in, offRes) != 0 || len(s.extended) != 1 || s.extended[0] != MaxGuestLeaseExtension {
		t.Errorf("extend_lease(max): rc %d, settler saw %v, want %v", memI32(t, in, offRes), s.extended, MaxGuestLeaseExtension)
	}
	for _, c := range []struct {
		ms   int64
		max  time.Duration
		want time.Duration
	}{
		{0, time.Hour, 0}, {1500, time.Hour, 1500 * time.Millisecond},
		{3600000, time.Hour, time.Hour}, {3600001, time.Hour, time.Hour},
		{math.MaxInt64, MaxGuestDelay, MaxGuestDelay},
	} {
		if got := millis(c.ms, c.max); got != c.want {
			t.Errorf("millis(%d, %v) = %v, want %v", c.ms, c.max, got, c.want)
		}
	}
}

func TestPublish(t *testing.T) {
	h := newTestHost(t, nil)
	pub := &fakePublisher{}
	p := load(t, h, "ok", Spec{Publish: []string{"audit"}}, pub)
	in := newInstance(t, p)

	r := mustHandle(t, in, delivery("paudit", nil))
	if r.Verdict != engines.Ack || memI32(t, in, offRes) != 0 {
		t.Fatalf("publish to allowed queue: %+v rc %d", r, memI32(t, in, offRes))
	}
	// The host must have copied the body: the guest may reuse its memory.
	in.mem.Write(0, []byte("XXXXXXX"))
	msgs := pub.all()
	if len(msgs) != 1 {
		t.Fatalf("publisher saw %d messages", len(msgs))
	}
	m := msgs[0]
	if m.queue != "audit" || string(m.msg.Body) != "payload" ||
		len(m.msg.Attributes) != 2 || m.msg.Attributes["k"] != "v1" || m.msg.Attributes["empty"] != "" {
		t.Fatalf("published %q %q %v", m.queue, m.msg.Body, m.msg.Attributes)
	}
	if _, ok := m.msg.Attributes["empty"]; !ok {
		t.Fatal("empty attribute lost")
	}

	r = mustHandle(t, in, delivery("psecret", nil))
	if r.Verdict != engines.DeadLetter || memI32(t, in, offRes) != abi.ErrDenied {
		t.Fatalf("publish to a disallowed queue: %+v rc %d", r, memI32(t, in, offRes))
	}
	mustHandle(t, in, delivery("qaudit", nil))
	if got := memI32(t, in, offRes); got != abi.ErrInvalid {
		t.Errorf("truncated attrs = %d, want %d", got, abi.ErrInvalid)
	}
	mustHandle(t, in, delivery("zaudit", nil))
	if got := memI32(t, in, offRes); got != 0 {
		t.Errorf("empty publish = %d", got)
	}
	if msgs = pub.all(); len(msgs) != 2 || len(msgs[1].msg.Body) != 0 || msgs[1].msg.Attributes != nil {
		t.Errorf("empty publish reached publisher as %+v", msgs[len(msgs)-1])
	}

	for _, c := range []struct {
		err  error
		want int32
	}{
		{fmt.Errorf("engine says: %w", engines.ErrTooLarge), abi.ErrTooLarge},
		{errors.New("database down"), abi.ErrUnavailable},
	} {
		pub.mu.Lock()
		pub.err = c.err
		pub.mu.Unlock()
		r = mustHandle(t, in, delivery("paudit", nil))
		if got := memI32(t, in, offRes); got != c.want || r.Verdict != engines.Nack {
			t.Errorf("publisher error %v: rc %d verdict %v, want %d", c.err, got, r.Verdict, c.want)
		}
	}

	// Without a publisher an allowed queue is unavailable, not a crash.
	p2 := load(t, h, "ok", Spec{Consumer: "nopub", Publish: []string{"audit"}}, nil)
	in2 := newInstance(t, p2)
	mustHandle(t, in2, delivery("paudit", nil))
	if got := memI32(t, in2, offRes); got != abi.ErrUnavailable {
		t.Errorf("nil publisher = %d", got)
	}
}

// TestPublishPriority: a published message carries the priority of the
// message being handled, or the one its qrun.priority attribute names
// (which is taken out of its attributes); a value outside 0..255 is
// refused (issue 12 item 17: handler publishes always had priority 0).
func TestPublishPriority(t *testing.T) {
	h := newTestHost(t, nil)
	pub := &fakePublisher{}
	p := load(t, h, "ok", Spec{Publish: []string{"audit"}}, pub)
	in := newInstance(t, p)
	withPrio := func(body string, prio uint8) *engines.Delivery {
		d := delivery(body, nil)
		d.Priority = prio
		return d
	}
	mustHandle(t, in, withPrio("paudit", 7))
	mustHandle(t, in, withPrio("yaudit", 7))
	mustHandle(t, in, withPrio("paudit", 0))
	msgs := pub.all()
	if len(msgs) != 3 {
		t.Fatalf("publisher saw %d messages, want 3", len(msgs))
	}
	for i, want := range []uint8{7, 9, 0} {
		if got := msgs[i].msg.Priority; got != want {
			t.Errorf("publish %d: priority %d, want %d", i, got, want)
		}
	}
	if _, ok := msgs[1].msg.Attributes[AttrPriority]; ok || msgs[1].msg.Attributes != nil {
		t.Errorf("the priority attribute was passed on: %v", msgs[1].msg.Attributes)
	}
	mustHandle(t, in, withPrio("Yaudit", 7))
	if got := memI32(t, in, offRes); got != abi.ErrInvalid || len(pub.all()) != 3 {
		t.Errorf("publish with priority 300 = %d (published %d), want %d and nothing published", got, len(pub.all()), abi.ErrInvalid)
	}
}

func TestDecodeAttrs(t *testing.T) {
	enc := func(parts ...string) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, byte(len(p)), byte(len(p)>>8), byte(len(p)>>16), byte(len(p)>>24))
			b = append(b, p...)
		}
		return b
	}
	if m, ok := decodeAttrs(enc("a", "1", "b", "")); !ok || len(m) != 2 || m["a"] != "1" {
		t.Errorf("valid: %v %v", m, ok)
	}
	bad := map[string][]byte{
		"odd number of strings": enc("a", "1", "b"),
		"short length":          {1, 0, 0},
		"overlong":              {9, 0, 0, 0, 'a'},
		"trailing byte":         append(enc("a", "1"), 0),
		"duplicate key":         enc("a", "1", "a", "2"),
		"huge length":           {0xff, 0xff, 0xff, 0xff},
	}
	for name, b := range bad {
		if _, ok := decodeAttrs(b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestBadPointers(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "badptr", Spec{Publish: []string{"audit"}, Config: map[string]string{"\x00": "x"}}, &fakePublisher{})
	cases := []struct{ body, fn, arg string }{
		{"l", abi.FuncLog, "message"},
		{"L", abi.FuncLog, "message"},
		{"f", abi.FuncMsgField, "buf"},
		{"F", abi.FuncMsgField, "buf"},
		{"a", abi.FuncMsgAttr, "key"},
		{"A", abi.FuncMsgAttr, "buf"},
		{"k", abi.FuncMsgAttrKey, "buf"},
		{"c", abi.FuncConfigGet, "key"},
		{"C", abi.FuncConfigGet, "buf"},
		{"p", abi.FuncPublish, "queue"},
		{"b", abi.FuncPublish, "body"},
		{"P", abi.FuncPublish, "attrs"},
	}
	for _, c := range cases {
		t.Run(c.body, func(t *testing.T) {
			in := newInstance(t, p)
			r := in.Handle(context.Background(), delivery(c.body, nil), time.Now())
			if !errors.Is(r.Err, ErrBadPointer) || r.Verdict != engines.Nack {
				t.Fatalf("got %+v, want ErrBadPointer", r)
			}
			var pe *PointerError
			if !errors.As(r.Err, &pe) || pe.Func != c.fn || pe.Arg != c.arg {
				t.Fatalf("error %v does not name %s %s", r.Err, c.fn, c.arg)
			}
			if !strings.Contains(r.Err.Error(), "qrun."+c.fn) {
				t.Errorf("message %q does not name qrun.%s", r.Err, c.fn)
			}
			if !in.Broken() {
				t.Fatal("instance not broken")
			}
			fresh := newInstance(t, p)
			if r := mustHandle(t, fresh, delivery("0", nil)); r.Verdict != engines.Ack {
				t.Fatalf("fresh instance: %+v", r)
			}
		})
	}
}

func TestBadAlloc(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "badalloc", Spec{}, nil)
	for _, c := range []struct {
		size int
		msg  string
	}{{10, "returned 0"}, {300, "outside guest memory"}} {
		in := newInstance(t, p)
		r := in.Handle(context.Background(), delivery(strings.Repeat("0", c.size), nil), time.Now())
		if !errors.Is(r.Err, ErrAlloc) || !strings.Contains(r.Err.Error(), c.msg) || !in.Broken() {
			t.Errorf("size %d: %+v broken=%v, want ErrAlloc %q", c.size, r, in.Broken(), c.msg)
		}
	}
	// An empty body needs no region, so even this guest can take it.
	in := newInstance(t, p)
	mustHandle(t, in, delivery("", nil))
}

// TestSingleBufferAllocator: the host frees the region it holds before
// allocating a larger one (ABI.md "Buffers"), so a guest with room for one
// buffer grows it; single_buffer traps if qrun_free gets the wrong region.
func TestSingleBufferAllocator(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "single_buffer", Spec{}, nil)
	in := newInstance(t, p)
	for _, size := range []int{1, 10, 1000, 60000, 300} {
		r := in.Handle(context.Background(), delivery(strings.Repeat("a", size-1)+"z", nil), time.Now())
		if r.Err != nil || r.Verdict != engines.Ack {
			t.Fatalf("%d-byte body: %+v", size, r)
		}
	}
	r := in.Handle(context.Background(), delivery(strings.Repeat("z", 70000), nil), time.Now())
	if !errors.Is(r.Err, ErrAlloc) {
		t.Fatalf("body larger than the guest's only buffer: %+v", r)
	}
}

func TestBodyRegionReused(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{}, nil)
	in := newInstance(t, p)
	steps := []struct {
		size   int
		allocs int32
	}{{1, 1}, {200, 1}, {256, 1}, {257, 2}, {100, 2}, {5000, 3}, {8192, 3}}
	for _, s := range steps {
		// 'a' looks the rest of the body up as an attribute name, so the guest
		// reads the whole region the host wrote.
		body := "a" + strings.Repeat("k", s.size-1)
		d := delivery(body, nil)
		d.Attributes = map[string]string{body[1:]: "found"}
		mustHandle(t, in, d)
		if got := memI32(t, in, offRes); got != 5 {
			t.Fatalf("size %d: guest did not see its body (rc %d)", s.size, got)
		}
		if got := memI32(t, in, offAllocCalls); got != s.allocs {
			t.Errorf("after a %d-byte body: %d qrun_alloc calls, want %d", s.size, got, s.allocs)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	h := newTestHost(t, nil)
	const limit = 1 << 20
	p := load(t, h, "ok", Spec{MemoryLimit: limit}, nil)
	in := newInstance(t, p)
	r := in.Handle(context.Background(), delivery("m", nil), time.Now())
	if !errors.Is(r.Err, ErrTrap) || !strings.Contains(r.Err.Error(), "unreachable") {
		t.Fatalf("memory bomb: %+v (the guest traps only after memory.grow returned -1)", r)
	}
	if got := in.mem.Size(); got > limit {
		t.Fatalf("memory grew to %d bytes past the %d limit", got, limit)
	}
	if p.MemoryLimit() != limit {
		t.Errorf("MemoryLimit() = %d", p.MemoryLimit())
	}
	if p2 := load(t, h, "ok", Spec{Consumer: "rounding", MemoryLimit: limit + 1}, nil); p2.MemoryLimit() != limit+pageSize {
		t.Errorf("limit not rounded up to a page: %d", p2.MemoryLimit())
	}

	// A module whose declared minimum exceeds the limit never loads.
	_, err := h.Load(context.Background(), Spec{Consumer: "big", Wasm: readWasm(t, "big_memory"), MemoryLimit: limit}, nil)
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "6400 KiB") || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("big minimum: %v, want a ValidationError naming 6400 KiB and 1 MiB", err)
	}
	load(t, h, "big_memory", Spec{MemoryLimit: 8 << 20}, nil)
}

func TestValidation(t *testing.T) {
	h := newTestHost(t, nil)
	cases := []struct {
		name string
		want []string
	}{
		{"missing_handle", []string{`missing export "qrun_handle"`}},
		{"no_version", []string{`missing export "qrun_abi_v1"`}},
		{"v2only", []string{"module speaks ABI v2; this qrun supports v1"}},
		{"bad_import", []string{"unknown import qrun.nope"}},
		{"bad_signature", []string{"qrun.log has signature (i32)->i32, want (i32,i32,i32)->i32"}},
		{"foreign_globals", []string{
			"imports global env.g: qrun provides no globals",
			"imports table env.t: qrun provides no tables",
		}},
		{"many_problems", []string{
			"unknown import qrun.nope",
			"qrun.now has signature ()->i32, want ()->i64",
			"unknown import env.abort",
			`missing export "qrun_alloc"`,
			`export "qrun_handle" has signature (i32)->i32, want (i32,i32)->i32`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wasm := readWasm(t, c.name)
			_, err := h.Load(context.Background(), Spec{Consumer: c.name, Wasm: wasm}, nil)
			rep, cerr := Check(context.Background(), wasm)
			for _, e := range []error{err, cerr} {
				var ve *ValidationError
				if !errors.As(e, &ve) || !errors.Is(e, ErrInvalidModule) {
					t.Fatalf("got %v, want a *ValidationError", e)
				}
				if len(ve.Problems) != len(c.want) {
					t.Errorf("problems %q, want %q", ve.Problems, c.want)
				}
				for _, w := range c.want {
					if !strings.Contains(e.Error(), w) {
						t.Errorf("%q does not say %q", e, w)
					}
				}
			}
			if len(rep.Problems) != len(c.want) {
				t.Errorf("report problems %q", rep.Problems)
			}
		})
	}
	_, err := h.Load(context.Background(), Spec{Consumer: "garbage", Wasm: []byte("not wasm")}, nil)
	if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), "not a valid WebAssembly module") {
		t.Errorf("garbage: %v", err)
	}
	if _, err := h.Load(context.Background(), Spec{Consumer: "nofile", Path: "testdata/does-not-exist.wasm"}, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestCheckReport(t *testing.T) {
	rep, err := Check(context.Background(), readWasm(t, "ok"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.ABIVersions) != 1 || rep.ABIVersions[0] != 1 || rep.ABIVersion != 1 {
		t.Errorf("versions %v / %d", rep.ABIVersions, rep.ABIVersion)
	}
	if !rep.WASI || rep.MemoryMinBytes != 2*pageSize || rep.MemoryMaxBytes != 0 || len(rep.Digest) != 64 {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Imports) != 14 || rep.Imports[0] != (Import{"qrun", "log", "(i32,i32,i32)->i32"}) {
		t.Errorf("imports %v", rep.Imports)
	}
	var names []string
	for _, e := range rep.Exports {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "_initialize,qrun_abi_v1,qrun_alloc,qrun_free,qrun_handle,qrun_init" {
		t.Errorf("exports %v", names)
	}
	rep, err = Check(context.Background(), readWasm(t, "ack"))
	if err != nil || rep.WASI || len(rep.Imports) != 0 {
		t.Errorf("ack: %+v %v", rep, err)
	}
}

func TestGuestLogging(t *testing.T) {
	log, logs := observedLogger(zapcore.InfoLevel)
	h := newTestHost(t, log)
	p := load(t, h, "ok", Spec{Consumer: "orders-consumer"}, nil)
	in := newInstance(t, p)
	if logs.FilterMessage("init ran").Len() != 1 {
		t.Errorf("log from qrun_init missing")
	}
	d := delivery("g2careful now", nil)
	d.Attempt = 2
	mustHandle(t, in, d)
	if got := memI32(t, in, offRes); got != 0 {
		t.Errorf("log = %d", got)
	}
	entries := logs.FilterMessage("careful now").All()
	if len(entries) != 1 {
		t.Fatalf("%d entries", len(entries))
	}
	e := entries[0]
	fields := e.ContextMap()
	if e.Level != zapcore.WarnLevel || fields["consumer"] != "orders-consumer" || fields["queue"] != "orders" ||
		fields["message_id"] != "m-1" || fields["attempt"] != int64(2) || fields["plugin"] != p.Version() {
		t.Errorf("entry %v %v", e.Level, fields)
	}
	mustHandle(t, in, delivery("g0debug line", nil))
	if got := memI32(t, in, offRes); got != 0 || logs.FilterMessage("debug line").Len() != 0 {
		t.Errorf("debug below the logger level: rc %d, logged %d", got, logs.FilterMessage("debug line").Len())
	}
	mustHandle(t, in, delivery("g7what", nil))
	if got := memI32(t, in, offRes); got != abi.ErrInvalid {
		t.Errorf("level 7 = %d", got)
	}

	// WASI stdout becomes log lines too; random_get is real.
	mustHandle(t, in, delivery("w", nil))
	if got := memI32(t, in, offRes); got != 0 {
		t.Errorf("fd_write errno %d", got)
	}
	if es := logs.FilterMessage("hello from wasi").All(); len(es) != 1 || es[0].ContextMap()["source"] != "stdout" {
		t.Errorf("stdout line: %v", es)
	}
	in.mem.Write(offOut, make([]byte, 16))
	mustHandle(t, in, delivery("r", nil))
	if got := memI32(t, in, offRes); got != 0 || memStr(t, in, offOut, 16) == string(make([]byte, 16)) {
		t.Errorf("random_get: errno %d, bytes %x", got, memStr(t, in, offOut, 16))
	}
}

func TestLineWriter(t *testing.T) {
	log, logs := observedLogger(zapcore.InfoLevel)
	h := newTestHost(t, log)
	p := load(t, h, "ack", Spec{LogRate: 1000}, nil)
	st := &instanceState{p: p}
	w := &lineWriter{st: st, source: "stdout"}
	fmt.Fprint(w, "a\nb")
	fmt.Fprint(w, "c\n\nd")
	w.Write(bytes.Repeat([]byte("z"), maxLine+10)) // "d" and 4106 z: cut, 11 dropped
	fmt.Fprint(w, "more of the same line\nnext")
	// A cut through a two-byte character leaves the whole character out.
	fmt.Fprint(w, "\n"+strings.Repeat("u", maxLine-1)+"é and more\n")
	w.Write([]byte(strings.Repeat("v", maxLine) + "\n")) // exactly maxLine: not cut
	fmt.Fprint(w, "tail")
	w.flush()
	var got []string
	for _, e := range logs.All() {
		s := fmt.Sprint(len(e.Message))
		if e.ContextMap()["truncated"] == true {
			s += "t"
		}
		got = append(got, s)
	}
	want := []string{"1", "2", fmt.Sprint(maxLine) + "t", "4", fmt.Sprint(maxLine-1) + "t", fmt.Sprint(maxLine), "4"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("line lengths %v, want %v", got, want)
	}
	if n, want := p.LogTruncatedBytes(), uint64(11+len("more of the same line")+len("é and more")); n != want {
		t.Errorf("LogTruncatedBytes = %d, want %d", n, want)
	}
}

// TestLineWriterHugeWrite: one 16 MiB write, with or without a newline,
// becomes one line of maxLine bytes, in time linear in the write (the old
// writer shifted its buffer after every 4 KiB, which took seconds).
func TestLineWriterHugeWrite(t *testing.T) {
	for _, newline := range []bool{false, true} {
		t.Run(fmt.Sprint("newline=", newline), func(t *testing.T) {
			log, logs := observedLogger(zapcore.InfoLevel)
			h := newTestHost(t, log)
			p := load(t, h, "ack", Spec{LogRate: 1 << 20}, nil)
			w := &lineWriter{st: &instanceState{p: p}, source: "stderr"}
			b := bytes.Repeat([]byte("x"), 16<<20)
			if newline {
				b[len(b)-1] = '\n'
			}
			if n, err := w.Write(b); n != len(b) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			w.flush()
			entries := logs.All()
			if len(entries) != 1 {
				t.Fatalf("%d lines logged, want 1", len(entries))
			}
			if e := entries[0]; len(e.Message) != maxLine || e.ContextMap()["truncated"] != true || e.Level != zapcore.WarnLevel {
				t.Errorf("line of %d bytes, fields %v, level %v", len(e.Message), e.ContextMap(), e.Level)
			}
			if got, want := p.LogTruncatedBytes(), uint64(16<<20-maxLine); newline && got != want-1 || !newline && got != want {
				t.Errorf("LogTruncatedBytes = %d", got)
			}
		})
	}
}

// TestStdoutFloodWithinTimeout: a guest writing 16 MiB to stdout in one
// fd_write is served normally and logs one cut line. The timeout is only a
// backstop: a loaded machine with the race detector must not turn a slow
// copy into a failure (the cost of the write is not what this asserts).
func TestStdoutFloodWithinTimeout(t *testing.T) {
	for _, body := range []string{"-", "n"} {
		t.Run(body, func(t *testing.T) {
			log, logs := observedLogger(zapcore.InfoLevel)
			h := newTestHost(t, log)
			p := load(t, h, "stdout_flood", Spec{Timeout: time.Minute, LogRate: 1 << 20}, nil)
			in := newInstance(t, p)
			r := in.Handle(context.Background(), delivery(body, nil), time.Now())
			if r.Err != nil || r.Verdict != engines.Ack || in.Broken() {
				t.Fatalf("got %+v broken=%v, want ack from a healthy instance", r, in.Broken())
			}
			in.Close(context.Background()) // flushes
			var n int
			for _, e := range logs.All() {
				if e.ContextMap()["source"] != "stdout" {
					continue
				}
				n++
				if len(e.Message) > maxLine {
					t.Errorf("line of %d bytes", len(e.Message))
				}
			}
			if n != 1 {
				t.Errorf("%d stdout lines, want 1", n)
			}
		})
	}
}

// TestHostLogTruncated: log cuts a long message to maxLine before copying it.
func TestHostLogTruncated(t *testing.T) {
	log, logs := observedLogger(zapcore.InfoLevel)
	h := newTestHost(t, log)
	p := load(t, h, "ok", Spec{}, nil)
	in := newInstance(t, p)
	mustHandle(t, in, delivery("g1"+strings.Repeat("y", 10000), nil))
	if got := memI32(t, in, offRes); got != 0 {
		t.Errorf("log = %d", got)
	}
	es := logs.FilterMessageSnippet("yyyy").All()
	if len(es) != 1 || len(es[0].Message) != maxLine || es[0].ContextMap()["truncated"] != true {
		t.Fatalf("entries %d, first %d bytes", len(es), len(es[0].Message))
	}
	if got := p.LogTruncatedBytes(); got != 10000-maxLine {
		t.Errorf("LogTruncatedBytes = %d, want %d", got, 10000-maxLine)
	}
	mustHandle(t, in, delivery("g1short", nil))
	if es := logs.FilterMessage("short").All(); len(es) != 1 || es[0].ContextMap()["truncated"] != nil {
		t.Errorf("short line: %v", es)
	}
}

func TestTruncateLine(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abcdef", 3, "abc"},
		{"ab\u00e9", 3, "ab"},                           // 2-byte rune split after its first byte
		{"a\u20ac", 3, "a"},                             // 3-byte rune split
		{"\U0001F600x", 3, ""},                          // 4-byte rune split, nothing before it
		{"\U0001F600x", 4, "\U0001F600"},                // cut right after the rune
		{"\x80\x80\x80\x80\x80", 4, "\x80\x80\x80\x80"}, // not UTF-8: cut at n
	} {
		if got := string(truncateLine([]byte(c.in), c.n)); got != c.want {
			t.Errorf("truncateLine(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestLogFloodIsRateLimited(t *testing.T) {
	log, logs := observedLogger(zapcore.InfoLevel)
	h := newTestHost(t, log)
	const rate = 10
	p := load(t, h, "log_flood", Spec{LogRate: rate}, nil)
	// Four instances share the plugin's one budget.
	for i := 0; i < 4; i++ {
		in := newInstance(t, p)
		mustHandle(t, in, delivery("0", nil))
	}
	lines := logs.FilterMessage("flood").Len()
	// The burst is the rate; the whole test takes milliseconds, so refill
	// adds at most a line or two.
	if lines < rate || lines > rate+2 {
		t.Errorf("%d flood lines logged, want about %d", lines, rate)
	}
	if dropped := p.LogDropped(); dropped != uint64(4000-lines) {
		t.Errorf("dropped %d, want %d", dropped, 4000-lines)
	}
	p.Close(context.Background())
	summaries := logs.FilterMessageSnippet("guest log lines").All()
	if len(summaries) != 1 || summaries[0].Message != fmt.Sprintf("dropped %d guest log lines", 4000-lines) {
		t.Errorf("summaries %v", summaries)
	}
}

func TestLogLimiterSummaryCadence(t *testing.T) {
	log, logs := observedLogger(zapcore.InfoLevel)
	l := newLogLimiter(1, log)
	t0 := time.Now()
	for i := 0; i < 100; i++ {
		l.allow(t0.Add(time.Duration(i) * 30 * time.Millisecond)) // 3 s, ~33 lines/s
	}
	n := logs.FilterMessageSnippet("guest log lines").Len()
	if n < 2 || n > 3 {
		t.Errorf("%d summary lines over 3 s, want 2..3 (at most one a second)", n)
	}
}

func TestConcurrentInstances(t *testing.T) {
	h := newTestHost(t, zap.NewNop())
	pub := &fakePublisher{}
	p := load(t, h, "ok", Spec{Publish: []string{"audit"}, Config: map[string]string{"greeting": "hi"}}, pub)
	const workers, perWorker = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		in := newInstance(t, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies := []string{"0", "1", "2", "3", "paudit", "f0", "k0", "cgreeting", "n", "d", "g1x"}
			for i := 0; i < perWorker; i++ {
				b := bodies[i%len(bodies)]
				d := delivery(b, nil)
				d.Attributes = map[string]string{"a": "1"}
				if r := in.Handle(context.Background(), d, time.Now()); r.Err != nil {
					errs <- fmt.Errorf("%q: %w", b, r.Err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := 0
	for i := 0; i < perWorker; i++ {
		if i%11 == 4 {
			want++
		}
	}
	if got := len(pub.all()); got != workers*want {
		t.Errorf("%d published, want %d", got, workers*want)
	}
}

func TestClose(t *testing.T) {
	h, err := NewHost(context.Background(), HostOptions{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Load(context.Background(), Spec{Consumer: "c", Path: "testdata/ok.wasm"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.NewInstance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Digest()) != 64 || p.Version() != p.Digest()[:12] {
		t.Errorf("digest %q version %q", p.Digest(), p.Version())
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.NewInstance(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("NewInstance after close: %v", err)
	}
	if r := in.Handle(context.Background(), delivery("0", nil), time.Now()); r.Err == nil {
		t.Error("instance of a closed plugin still handles messages")
	}
	if err := in.Close(context.Background()); err != nil {
		t.Errorf("Close after plugin close: %v", err)
	}
	if _, err := h.Load(context.Background(), Spec{Wasm: readWasm(t, "ok")}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after host close: %v", err)
	}
}

// TestCloseAbortsRunningCall is how the dispatcher stops a call when its
// drain deadline passes: Close from another goroutine while Handle runs.
// The guest logs one line and then loops, so the test closes the instance
// once that line arrives, knowing the call is inside the guest: the result
// must then be ErrTrap. A Close that may come before the call starts is
// covered too; it must fail the call without naming a cause.
func TestCloseAbortsRunningCall(t *testing.T) {
	running := make(chan struct{}, 1)
	core, _ := observedLogger(zapcore.DebugLevel)
	log := core.WithOptions(zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "looping" {
			select {
			case running <- struct{}{}:
			default:
			}
		}
		return nil
	}))
	h := newTestHost(t, log)
	p := load(t, h, "log_loop", Spec{Timeout: time.Minute}, nil)
	for _, inGuest := range []bool{false, true} {
		in, err := p.NewInstance(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan Result)
		go func() { done <- in.Handle(context.Background(), delivery("l", nil), time.Now()) }()
		if inGuest {
			select {
			case <-running:
			case r := <-done:
				t.Fatalf("the looping call returned by itself: %+v", r)
			}
		}
		if err := in.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			if r.Err == nil || r.Verdict != engines.Nack || !in.Broken() {
				t.Fatalf("aborted call (in guest: %v): %+v", inGuest, r)
			}
			if inGuest && !errors.Is(r.Err, ErrTrap) {
				t.Errorf("call aborted inside the guest: err %v, want ErrTrap", r.Err)
			}
		case <-time.After(time.Minute):
			t.Fatal("Close did not stop the running call") // a hang, not a timing assert
		}
		if err := in.Close(context.Background()); err != nil {
			t.Errorf("second Close: %v", err)
		}
		select { // the racing case may or may not have entered the guest
		case <-running:
		default:
		}
	}
	// The plugin is unaffected.
	mustHandle(t, newInstance(t, p), delivery("0", nil))
}

func TestCancelledContext(t *testing.T) {
	h := newTestHost(t, nil)
	p := load(t, h, "ok", Spec{}, nil)
	in := newInstance(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := in.Handle(ctx, delivery("0", nil), time.Now())
	if !errors.Is(r.Err, context.Canceled) || in.Broken() {
		t.Errorf("got %+v broken=%v", r, in.Broken())
	}
	mustHandle(t, in, delivery("0", nil))
}

// TestSpecExample compiles the handler printed in abi/ABI.md section 8 and
// runs it, so the spec's own example cannot drift from what the host accepts.
func TestSpecExample(t *testing.T) {
	tool := testenv.Tool(t, "wat2wasm", "the ABI.md example is not checked (wabt installs it)")
	spec, err := os.ReadFile("../../abi/ABI.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(spec), "## 8.")
	if !ok {
		t.Fatal("ABI.md has no section 8")
	}
	_, rest, _ = strings.Cut(rest, "```wat\n")
	src, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no wat block in section 8")
	}
	dir := t.TempDir()
	watPath, wasmPath := filepath.Join(dir, "example.wat"), filepath.Join(dir, "example.wasm")
	if err := os.WriteFile(watPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(tool, watPath, "-o", wasmPath).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	log, logs := observedLogger(zapcore.InfoLevel)
	h := newTestHost(t, log)
	p, err := h.Load(context.Background(), Spec{Consumer: "example", Path: wasmPath}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, p)
	for _, size := range []int{0, 64, 40000, 64512} {
		if r := mustHandle(t, in, delivery(strings.Repeat("x", size), nil)); r.Verdict != engines.Ack {
			t.Fatalf("size %d: %+v", size, r)
		}
	}
	if n := logs.FilterMessage("handled").Len(); n != 4 {
		t.Errorf("%d log lines, want 4", n)
	}
	in2 := newInstance(t, p)
	if r := in2.Handle(context.Background(), delivery(strings.Repeat("x", 64513), nil), time.Now()); !errors.Is(r.Err, ErrAlloc) {
		t.Errorf("body larger than the example's buffer: %+v", r)
	}
}
