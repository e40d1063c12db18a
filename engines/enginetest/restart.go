package enginetest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Restart lets the suite stop an engine and start another on the same
// storage, so that what an engine promises across a restart is part of the
// conformance suite rather than of each engine's own tests.
//
// Every engine with a Restart runs the clean-restart case (Close, then Open
// on the same storage). An engine whose Capabilities declare Durable also
// runs the crash cases: the suite re-executes the test binary as a child
// process (TestMain must call Child first), lets it work on the storage,
// kills it with SIGKILL and checks, from an engine opened on the same
// storage, that the child's acknowledged work survived. A real kill, not an
// engine left unclosed, is the honest crash: nothing of the dead engine
// runs on, and the operating system releases its locks as it would.
type Restart struct {
	// Name identifies the harness to Child in a crash child; it must be
	// unique among the harnesses passed to Child.
	Name string
	// Storage returns a new, empty storage location for one test (a data
	// directory, a database schema, a name prefix) that Open understands,
	// and removes it when the test ends.
	Storage func(t testing.TB) string
	// Open starts an engine on storage. It runs in the test process and in
	// crash children, so it must depend on nothing but storage. The
	// caller closes the engine.
	Open func(ctx context.Context, storage string) (engines.Engine, error)
	// SyncCommits says a receive's lease and every settlement are stored
	// before the call returns, as an Enqueue always is. It is false for an
	// engine that commits them a little later (disk with sync = "batch"),
	// where a crash may undo an Ack that returned or a lease just taken;
	// the crash cases then check only that nothing whose Enqueue returned
	// is lost.
	SyncCommits bool
}

// Environment of a crash child.
const (
	envChild   = "QRUN_ENGINETEST_CHILD" // the Restart.Name of the harness
	envRole    = "QRUN_ENGINETEST_ROLE"
	envStorage = "QRUN_ENGINETEST_STORAGE"
	envSpec    = "QRUN_ENGINETEST_SPEC" // the queue's spec, JSON
	envArg     = "QRUN_ENGINETEST_ARG"  // a role-specific argument
)

// Child runs a crash child's role and exits when the process is one; in the
// test process itself it returns at once. An engine package whose harness
// has a Restart calls it first thing in TestMain, with every harness that
// has one:
//
//	func TestMain(m *testing.M) {
//		enginetest.Child(harness())
//		os.Exit(m.Run())
//	}
func Child(hs ...Harness) {
	name := os.Getenv(envChild)
	if name == "" {
		return
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "enginetest child %s: "+format+"\n", append([]any{name}, args...)...)
		os.Exit(3)
	}
	var r *Restart
	for _, h := range hs {
		if h.Restart != nil && h.Restart.Name == name {
			r = h.Restart
		}
	}
	if r == nil {
		fail("no harness with that Restart.Name was passed to enginetest.Child")
	}
	var spec engines.QueueSpec
	if err := json.Unmarshal([]byte(os.Getenv(envSpec)), &spec); err != nil {
		fail("decoding %s: %v", envSpec, err)
	}
	ctx := context.Background()
	e, err := r.Open(ctx, os.Getenv(envStorage))
	if err != nil {
		fail("open engine: %v", err)
	}
	q, err := e.Open(ctx, spec)
	if err != nil {
		fail("open queue %s: %v", spec.Name, err)
	}
	switch role := os.Getenv(envRole); role {
	case "lease":
		err = childLease(ctx, q, os.Getenv(envArg))
	case "workload":
		err = childWorkload(ctx, q, os.Getenv(envArg))
	case "ticks":
		err = childTicks(ctx, e, q)
	case "tx":
		err = childTx(ctx, e, q, os.Getenv(envArg))
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fail("%v", err)
	}
	select {} // killed here by the parent
}

// childLease enqueues a message with ID id unless it is empty, leases one
// message, reports "LEASED id attempt failures" and waits to be killed with
// the lease outstanding.
func childLease(ctx context.Context, q engines.Queue, id string) error {
	if id != "" {
		if err := q.Enqueue(ctx, engines.Message{ID: id, Body: []byte("kills its consumer")}); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	ds, err := engines.ReceiveN(rctx, q, 1)
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	fmt.Printf("LEASED %s %d %d\n", ds[0].ID, ds[0].Attempt, ds[0].Failures)
	return nil
}

// lineWriter writes whole lines to stdout, one write per call, so a kill
// can cut the stream only between reports (each write stays under
// PIPE_BUF).
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
		b.WriteString(kind + " " + id + "\n")
		if b.Len() > 3000 {
			flush()
		}
	}
	if b.Len() > 0 {
		flush()
	}
}

// childWorkload runs producers and consumers until it is killed: "E id"
// after an Enqueue returned, "Dc id" when consumer c received a message,
// "Ac id" after its Ack returned, "Rc id" after a Requeue returned, "Lc id"
// when a settle found the lease lost (it lapsed on a stalled machine; the
// message comes back). A consumer settles its batch in order, one at a
// time, so at a kill at most one settlement per consumer was in progress.
func childWorkload(ctx context.Context, q engines.Queue, round string) error {
	var w lineWriter
	errc := make(chan error, 6)
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
					errc <- fmt.Errorf("enqueue: %w", err)
					return
				}
				w.emit("E", ids)
			}
		}()
	}
	for c := range 2 {
		d, a, r, l := fmt.Sprintf("D%d", c), fmt.Sprintf("A%d", c), fmt.Sprintf("R%d", c), fmt.Sprintf("L%d", c)
		go func() {
			rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			buf := make([]engines.Delivery, 16)
			for {
				n, err := q.Receive(ctx, buf)
				if err != nil {
					errc <- fmt.Errorf("receive: %w", err)
					return
				}
				ids := make([]string, n)
				for i := range buf[:n] {
					ids[i] = buf[i].ID
				}
				w.emit(d, ids)
				for i := range buf[:n] {
					// One in ten is handed back, so leases and retries
					// are written (and killed) too.
					kind := a
					if rng.IntN(10) == 0 {
						kind, err = r, buf[i].Requeue(ctx, 0)
					} else {
						err = buf[i].Ack(ctx)
					}
					if errors.Is(err, engines.ErrLeaseLost) {
						kind, err = l, nil
					}
					if err != nil {
						errc <- fmt.Errorf("settle: %w", err)
						return
					}
					w.emit(kind, ids[i:i+1])
				}
			}
		}()
	}
	return <-errc
}

// restartSubtests build their own engines through Harness.Restart.
func restartSubtests() []restartSubtest {
	return []restartSubtest{
		{"restart_keeps_messages", testRestartKeepsMessages},
		{"crash_lease_counts_once", testCrashLeaseCountsOnce},
		{"crash_loses_nothing_enqueued", testCrashLosesNothingEnqueued},
		{"ticks_claimed_once", testTicksClaimedOnce},
		{"crash_ticks_exactly_once", testCrashTicksExactlyOnce},
	}
}

type restartSubtest struct {
	name string
	fn   func(t *testing.T, s *storage)
}

// storage is one test's storage and the engine currently running on it.
type storage struct {
	*env
	r    *Restart
	path string
}

// newStorage skips the test unless the harness can restart an engine, and
// returns fresh storage with no engine running on it.
func newStorage(t *testing.T, h Harness) *storage {
	t.Helper()
	if h.Restart == nil {
		t.Skip("harness has no Restart: the engine's test does not restart it on the same storage")
	}
	if h.Restart.Storage == nil || h.Restart.Open == nil {
		t.Fatal("enginetest: Harness.Restart needs Storage and Open")
	}
	return &storage{env: &env{t: t}, r: h.Restart, path: h.Restart.Storage(t)}
}

// start opens an engine on the storage and makes it the env's engine; it
// is closed with the test unless stop closes it first.
func (s *storage) start() {
	s.t.Helper()
	e, err := s.r.Open(s.ctx(wait), s.path)
	if err != nil {
		s.t.Fatalf("opening an engine on %s: %v", s.path, err)
	}
	s.t.Cleanup(func() { _ = e.Close() })
	s.e, s.caps = e, e.Capabilities()
}

// stop closes the running engine cleanly.
func (s *storage) stop() {
	s.t.Helper()
	if err := s.e.Close(); err != nil {
		s.t.Fatalf("closing the engine on %s: %v", s.path, err)
	}
}

// needCrash skips unless the engine promises to survive a crash.
func (s *storage) needCrash() {
	s.t.Helper()
	s.start()
	caps := s.caps
	s.stop()
	s.need(caps.Durable, "Durable")
}

// child starts the test binary as a crash child in role on the storage,
// with the queue spec and the role's argument, and returns it with its
// stdout.
func (s *storage) child(role string, spec engines.QueueSpec, arg string) (*exec.Cmd, *bufio.Reader) {
	s.t.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+s.r.Name, envRole+"="+role, envStorage+"="+s.path,
		envSpec+"="+string(js), envArg+"="+arg)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting a crash child: %v", err)
	}
	s.t.Cleanup(func() {
		// Only if a failure left it running: a killed child is already reaped.
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, bufio.NewReader(out)
}

// kill SIGKILLs the child, reads what it reported before it died (a last
// line the kill cut short is dropped) and checks that the kill, not an
// error of its own, ended it. Each report is passed to line, if not nil.
func (s *storage) kill(cmd *exec.Cmd, out *bufio.Reader, what string, line func(string)) {
	s.t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatalf("%s: killing the child: %v", what, err)
	}
	for {
		l, err := out.ReadString('\n')
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.t.Fatalf("%s: reading the killed child: %v", what, err)
			}
			break
		}
		if line != nil {
			line(l)
		}
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		s.t.Fatalf("%s: the child ended with %v before it was killed", what, err)
	}
}

// testRestartKeepsMessages: after a clean Close and an Open on the same
// storage, every message not acked is delivered again, with its attempts
// and failures, and no acked message comes back. A lease outstanding at the
// Close comes back as its next attempt; on a durable engine it counts as a
// failure (engines.QueueSpec.Retry), and counters survive as well.
func testRestartKeepsMessages(t *testing.T, s *storage) {
	s.start()
	name := s.name()
	q := s.open(engines.QueueSpec{Name: name, VisibilityTimeout: time.Minute})
	msgs := s.enqueue(q,
		engines.Message{Body: []byte("acked")},
		engines.Message{Body: []byte("nacked"), Attributes: map[string]string{"k": "v"}},
		engines.Message{Body: []byte("leased")},
		engines.Message{Body: []byte("ready")},
	)
	ds := s.receiveN(q, 3, wait)
	byBody := map[string]*engines.Delivery{}
	for i := range ds {
		byBody[string(ds[i].Body)] = &ds[i]
	}
	if len(byBody) != 3 || byBody["ready"] != nil {
		t.Fatalf("received %v, want the first three in FIFO order", bodies(ds))
	}
	s.ack(*byBody["acked"])
	if err := byBody["nacked"].Nack(s.ctx(wait), 0, "once"); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	// An engine that keeps leases in shared storage (a database) lets the
	// lease outstanding at the Close run out rather than ending it, so it
	// is made short; the others end it at the Close or the next Open.
	if s.caps.Visibility {
		if err := byBody["leased"].Extend(s.ctx(wait), 100*time.Millisecond); err != nil {
			t.Fatalf("Extend: %v", err)
		}
	}
	s.stop()

	s.start()
	q = s.open(engines.QueueSpec{Name: name}) // attaches with the stored settings
	got := map[string]engines.Delivery{}
	for _, d := range s.receiveN(q, 3, wait) {
		got[string(d.Body)] = d
	}
	if _, ok := got["acked"]; ok {
		t.Fatal("an acked message came back after the restart")
	}
	for _, w := range []struct {
		body              string
		id                string
		attempt, failures int
	}{
		{"nacked", msgs[1].ID, 2, 1},
		{"leased", msgs[2].ID, 2, 1},
		{"ready", msgs[3].ID, 1, 0},
	} {
		d, ok := got[w.body]
		if !ok {
			t.Fatalf("after the restart received %v, want nacked, leased and ready", keys(got))
		}
		if d.ID != w.id {
			t.Errorf("%s came back with ID %q, want %q", w.body, d.ID, w.id)
		}
		if !s.caps.DeadLetter {
			continue
		}
		failures := w.failures
		if w.body == "leased" && !s.caps.Durable && d.Failures == 0 {
			// A clean Close of a non-durable engine may hand the lease
			// back uncounted; a durable one counts it as the crash it
			// would be (QueueSpec.Retry).
			failures = 0
		}
		if d.Attempt != w.attempt || d.Failures != failures {
			t.Errorf("%s after the restart: Attempt %d Failures %d, want %d, %d", w.body, d.Attempt, d.Failures, w.attempt, failures)
		}
	}
	if a := got["nacked"].Attributes["k"]; a != "v" {
		t.Errorf("nacked message's attribute k = %q after the restart, want %q", a, "v")
	}
	s.expectNone(q, "after the restart, beyond the three messages not acked")
	if s.caps.Durable {
		st := s.stats(q)
		if st.EnqueuedTotal != 4 || st.AckedTotal != 1 || st.NackedTotal != 1 || st.ExpiredLeaseTotal != 1 || st.InFlight != 3 {
			t.Errorf("Stats after the restart: %+v; want 4 enqueued, 1 acked, 1 nacked, 1 expired lease, 3 in flight (a durable engine keeps its counters)", st)
		}
	}
	for _, d := range got {
		s.ack(d)
	}
	s.stop()

	s.start()
	s.expectNone(s.open(engines.QueueSpec{Name: name}), "after acking everything and restarting again")
}

func keys(m map[string]engines.Delivery) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// testCrashLeaseCountsOnce kills a process while it holds a lease, as many
// times as the queue's MaxAttempts: each lease outstanding at a crash counts
// as one failure (QueueSpec.Retry), never more however often the engine
// restarts after, so the message that kills its consumer reaches the
// dead-letter queue instead of circulating forever, and keeps its attempts
// and failures there.
func testCrashLeaseCountsOnce(t *testing.T, s *storage) {
	s.needCrash()
	if !s.r.SyncCommits {
		t.Skip("harness declares Restart.SyncCommits false: a lease may not be stored when the process dies, so a crash may count it not at all")
	}
	const maxAttempts = 2
	name := s.name()
	// Short, for engines whose leases expire by time rather than at the
	// next open, yet far longer than the parent takes to kill the child
	// once it reported, so the crash, not the child's own engine, ends the
	// lease.
	spec := engines.QueueSpec{Name: name, VisibilityTimeout: time.Second, MaxAttempts: maxAttempts, DeadLetter: name + "_dlq"}
	for round := range maxAttempts {
		id := ""
		if round == 0 {
			id = "poison"
		}
		cmd, out := s.child("lease", spec, id)
		line, err := out.ReadString('\n')
		s.kill(cmd, out, fmt.Sprintf("round %d", round), nil)
		if err != nil {
			t.Fatalf("round %d: the child reported nothing (%v); does TestMain call enginetest.Child?", round, err)
		}
		if want := fmt.Sprintf("LEASED poison %d %d", round+1, round); strings.TrimSpace(line) != want {
			t.Fatalf("round %d: the child reported %q, want %q: each crash counts one failure", round, strings.TrimSpace(line), want)
		}
		if round == maxAttempts-1 {
			break
		}
		// Restarts with nobody receiving in between: the crashed lease is
		// found (or runs out) once, and later starts count it no more.
		for i := range 2 {
			s.start()
			q := s.open(engines.QueueSpec{Name: name})
			st := s.waitStats(q, "the crashed lease to expire", func(st engines.Stats) bool { return st.ExpiredLeaseTotal > int64(round) })
			if st.ExpiredLeaseTotal != int64(round+1) || st.Ready != 1 || st.Depth() != 1 {
				t.Fatalf("round %d, start %d: %+v; want %d expired leases and the message ready", round, i+1, st, round+1)
			}
			if p, ok := q.(engines.Peeker); ok {
				ps, err := p.Peek(s.ctx(wait), 1)
				if err != nil || len(ps) != 1 || ps[0].Attempt != round+1 || ps[0].Failures != round+1 {
					t.Fatalf("round %d, start %d: Peek = %+v, %v; want the message at attempt %d with %d failures", round, i+1, ps, err, round+1, round+1)
				}
			}
			s.stop()
		}
	}

	// Twice: a restart after the one that found the last lease must not
	// count it again.
	for i := range 2 {
		s.start()
		q := s.open(engines.QueueSpec{Name: name})
		dlq := s.open(engines.QueueSpec{Name: spec.DeadLetter})
		st := s.waitStats(q, "the crashed lease to be dead-lettered", func(st engines.Stats) bool { return st.DeadLetteredTotal > 0 })
		if st.ExpiredLeaseTotal != maxAttempts || st.DeadLetteredTotal != 1 || st.Depth() != 0 {
			t.Fatalf("start %d after the crashes: %+v; want %d expired leases, 1 dead-lettered, nothing left", i+1, st, maxAttempts)
		}
		s.waitReady(dlq, 1)
		if st := s.stats(dlq); st.Depth() != 1 {
			t.Fatalf("start %d: dead-letter queue %+v, want the one message", i+1, st)
		}
		if i == 1 {
			s.ack(s.checkDeadLetter(dlq, engines.Message{Body: []byte("kills its consumer")}, name, "", maxAttempts, maxAttempts))
		}
		s.stop()
	}
}

// testCrashLosesNothingEnqueued kills a producing and consuming process at
// random points: every message whose Enqueue returned is delivered at
// least once afterwards, and, where Restart.SyncCommits, none whose
// Ack returned is delivered again.
func testCrashLosesNothingEnqueued(t *testing.T, s *storage) {
	s.needCrash()
	crashWorkload(t, s, 3)
}

// SoakCrash is the long form of the crash_loses_nothing_enqueued case:
// rounds kills instead of three. Engines call it from a test named
// TestSoak..., which make soak runs.
func SoakCrash(t *testing.T, h Harness, rounds int) {
	s := newStorage(t, h)
	s.needCrash()
	crashWorkload(t, s, rounds)
}

func crashWorkload(t *testing.T, s *storage, rounds int) {
	strict := s.r.SyncCommits
	// Leases long enough not to lapse in a healthy child, short enough
	// that the final drain need not wait long for those of the last child
	// on an engine that keeps leases in shared storage.
	spec := engines.QueueSpec{Name: s.name(), VisibilityTimeout: 2 * time.Second}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	enqueued := map[string]bool{} // Enqueue returned
	acked := map[string]bool{}    // Ack returned
	// maybeAcked are the messages whose Ack was in progress at a kill: the
	// only ones that may be gone without a confirmed ack.
	maybeAcked := map[string]bool{}
	for round := range rounds {
		pending := [2][]string{} // per consumer: received, not yet settled
		cmd, out := s.child("workload", spec, strconv.Itoa(round))
		killAfter := 20 + rng.IntN(4000)
		lines := 0
		report := func(line string) {
			lines++
			kind, id, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
			if kind == "E" {
				enqueued[id] = true
				return
			}
			if len(kind) != 2 || (kind[1] != '0' && kind[1] != '1') {
				t.Fatalf("round %d: the child reported %q", round, line)
			}
			c := kind[1] - '0'
			switch kind[0] {
			case 'D':
				if strict && acked[id] {
					t.Errorf("round %d: %s delivered again after its ack returned", round, id)
				}
				pending[c] = append(pending[c], id)
				return
			case 'A':
				acked[id] = true
			}
			if len(pending[c]) == 0 || pending[c][0] != id {
				t.Fatalf("round %d: consumer %d settled %s out of order", round, c, id)
			}
			pending[c] = pending[c][1:]
		}
		for lines < killAfter {
			line, err := out.ReadString('\n')
			if err != nil {
				t.Fatalf("round %d: reading the child after %d lines: %v", round, lines, err)
			}
			report(line)
		}
		// Everything the child reported before it died counts.
		s.kill(cmd, out, fmt.Sprintf("round %d", round), report)
		for _, p := range pending {
			if len(p) > 0 {
				maybeAcked[p[0]] = true
			}
		}
		t.Logf("round %d: killed after %d reports; %d enqueues and %d acks confirmed so far", round, lines, len(enqueued), len(acked))
	}

	// Drain: nothing acked comes back, everything confirmed and not acked
	// is there. Leases of the last child run out first on an engine that
	// keeps them in shared storage, so the drain ends when the queue is
	// empty, not when a receive comes back empty.
	s.start()
	// A long lease, so an engine that syncs every Ack cannot lose one of a
	// large batch to expiry while the drain acks the rest.
	q := s.open(engines.QueueSpec{Name: spec.Name, VisibilityTimeout: time.Minute})
	left := map[string]bool{}
	// One deadline for the whole drain: a Receive that runs out of it
	// fails the test (the contract forbids it to keep what it leased, and
	// receive_cancel_race holds every engine to that).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for s.stats(q).Depth() > 0 {
		ds, err := engines.ReceiveN(ctx, q, 256)
		if err != nil {
			t.Fatalf("draining after %d: %v; the queue still holds %+v", len(left), err, s.stats(q))
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
		}
		// Together, so an engine that syncs every settle shares commits.
		ps := make([]*engines.Delivery, len(ds))
		ss := make([]engines.Settlement, len(ds))
		errs := make([]error, len(ds))
		for i := range ds {
			ps[i], ss[i] = &ds[i], engines.Settlement{Verdict: engines.Ack}
		}
		engines.SettleAll(s.ctx(wait), q, ps, ss, errs)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("draining: Ack %s: %v", ds[i].ID, err)
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
	t.Logf("%d confirmed enqueues, %d acks, %d left after %d kills: nothing lost", len(enqueued), len(acked), len(left), rounds)
}
