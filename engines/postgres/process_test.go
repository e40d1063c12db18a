package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// testDeadline bounds each process test.
var testDeadline = 4 * time.Minute

// binDir holds the qrun binary the process tests build once; TestMain
// removes it.
var (
	binDir    string
	buildQrun = sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "qrun-bin-")
		if err != nil {
			return "", err
		}
		binDir = dir
		bin := filepath.Join(dir, "qrun")
		goBin, err := exec.LookPath("go")
		if err != nil {
			return "", fmt.Errorf("the process tests build qrun and need the go command: %w", err)
		}
		out, err := exec.Command(goBin, "build", "-o", bin, "github.com/qrun-dev/qrun/cmd/qrun").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go build ./cmd/qrun: %v\n%s", err, out)
		}
		return bin, nil
	})
)

// syncBuffer collects a subprocess's output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// node is a qrun process consuming from the shared schema.
type node struct {
	name string
	cmd  *exec.Cmd
	cfg  string // its config file
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
	// stopping is set before the test ends the process on purpose.
	stopping atomic.Bool
}

// startNode writes a config for a qrun process whose consumers forward
// each message of "work" (lease 30s) and "work_short" (lease 3s) to
// "done_<name>", and starts it.
func startNode(t *testing.T, name, schema string) *node {
	t.Helper()
	bin, err := buildQrun()
	if err != nil {
		t.Fatal(err)
	}
	wasm, err := filepath.Abs("../../plugins/examples/wat/forward/forward.wasm")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
runtime {
  data_dir      = %q
  admin_listen  = "off"
  log_level     = "warn"
  log_format    = "json"
  drain_timeout = "2s"
}
engine "pg" {
  type          = "postgres"
  dsn           = %q
  schema        = %q
  poll_interval = "100ms"
  max_conns     = 6
}
queue "work" {
  engine             = "pg"
  visibility_timeout = "30s"
}
queue "work_short" {
  engine             = "pg"
  visibility_timeout = "3s"
}
queue "done_%[4]s" { engine = "pg" }
consumer "fwd" {
  queue       = "work"
  plugin      = %[5]q
  concurrency = 4
  batch       = 64
  config      = { forward_to = "done_%[4]s" }
  publish     = ["done_%[4]s"]
}
consumer "fwd_short" {
  queue       = "work_short"
  plugin      = %[5]q
  timeout     = "1s"
  concurrency = 4
  batch       = 64
  config      = { forward_to = "done_%[4]s" }
  publish     = ["done_%[4]s"]
}
`, filepath.Join(dir, "data"), srv.DSN+" application_name=qrun-"+name, schema, name, wasm)
	path := filepath.Join(dir, "qrun.hcl")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, cfg: path, out: new(syncBuffer), done: make(chan struct{})}
	n.cmd = exec.Command(bin, "run", "-c", path)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := n.cmd.Wait()
		if !n.stopping.Load() {
			t.Errorf("qrun %s exited by itself: %v\n%s", name, err, n.out.String())
		}
		close(n.done)
	}()
	t.Cleanup(func() {
		n.stopping.Store(true)
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(20 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("qrun %s output:\n%s", name, n.out.String())
		}
	})
	return n
}

// collector drains done queues in the background, tolerating errors (the
// database may be restarting), and counts each body.
type collector struct {
	mu   sync.Mutex
	seen map[string]int
	by   map[string]int // deliveries per done queue
	tick chan struct{}
}

func collect(ctx context.Context, t *testing.T, qs ...engines.Queue) *collector {
	c := &collector{seen: map[string]int{}, by: map[string]int{}, tick: make(chan struct{}, 1)}
	for _, q := range qs {
		go func() {
			buf := make([]engines.Delivery, 100)
			for ctx.Err() == nil {
				n, err := q.Receive(ctx, buf)
				if err != nil {
					select {
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond): // the database is away; try again
					}
					continue
				}
				for i := range buf[:n] {
					for {
						err := buf[i].Ack(ctx)
						if err == nil || errors.Is(err, engines.ErrLeaseLost) || ctx.Err() != nil {
							break
						}
						time.Sleep(50 * time.Millisecond) // retry until the database is back
					}
				}
				c.mu.Lock()
				for i := range buf[:n] {
					c.seen[string(buf[i].Body)]++
				}
				c.by[q.Name()] += n
				c.mu.Unlock()
				select {
				case c.tick <- struct{}{}:
				default:
				}
			}
		}()
	}
	return c
}

// waitSettled polls q's stats until nothing is in flight and returns them:
// a lease's expiry is on the database's clock and has no event here.
func waitSettled(ctx context.Context, t *testing.T, q engines.Queue) engines.Stats {
	t.Helper()
	for {
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.InFlight == 0 {
			return st
		}
		select {
		case <-time.After(100 * time.Millisecond): // polling the condition; the deadline only bounds a hang
		case <-ctx.Done():
			t.Fatalf("%d messages still in flight before the deadline", st.InFlight)
		}
	}
}

// waitIdle waits until no connection named app (application_name) is
// running a statement: a frozen process's last statements have finished.
func waitIdle(ctx context.Context, t *testing.T, app string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, srv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var active int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'", app).Scan(&active)
		if err != nil {
			t.Fatal(err)
		}
		if active == 0 {
			return
		}
		select {
		case <-time.After(10 * time.Millisecond): // polling the condition; the deadline only bounds a hang
		case <-ctx.Done():
			t.Fatalf("%d statements of %s still running before the deadline", active, app)
		}
	}
}

// byQueue is how many messages arrived from the named output queue.
func (c *collector) byQueue(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[name]
}

// waitCount waits until at least want distinct bodies with prefix arrived.
func (c *collector) waitCount(ctx context.Context, t *testing.T, prefix string, want int) {
	t.Helper()
	for {
		c.mu.Lock()
		got := 0
		for b := range c.seen {
			if strings.HasPrefix(b, prefix) {
				got++
			}
		}
		c.mu.Unlock()
		if got >= want {
			return
		}
		if t.Failed() {
			t.FailNow()
		}
		select {
		case <-c.tick:
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatalf("%d of %d %q messages delivered before the deadline", got, want, prefix)
		}
	}
}

func (c *collector) dups(prefix string) (distinct, extra int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for b, n := range c.seen {
		if strings.HasPrefix(b, prefix) {
			distinct++
			extra += n - 1
		}
	}
	return distinct, extra
}

// publish enqueues n messages body prefix-i in batches, retrying a batch
// until it succeeds; DedupIDs make a retried batch that had in fact
// committed harmless.
func publish(ctx context.Context, t *testing.T, q engines.Queue, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i += 250 {
		msgs := make([]engines.Message, min(250, n-i))
		for j := range msgs {
			b := fmt.Sprintf("%s-%d", prefix, i+j)
			msgs[j] = engines.Message{Body: []byte(b), DedupID: b}
		}
		for {
			err := q.Enqueue(ctx, msgs...)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("publishing %s: %v", prefix, err)
			}
			time.Sleep(100 * time.Millisecond) // a retry's backoff while the database is down, not a wait for an event
		}
	}
}

// TestQrunProcesses: two real qrun processes on one database split 10,000
// messages with none handled twice while its lease holds; then one is
// killed with SIGKILL mid-run and the other gets its leased messages after
// the visibility timeout.
func TestQrunProcesses(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{})
	ctx := ctxT(t, testDeadline)
	// The queues exist before either process starts, as `qrun migrate` plus
	// the first start would leave them.
	work := open(t, e, engines.QueueSpec{Name: "work", VisibilityTimeout: 30 * time.Second})
	short := open(t, e, engines.QueueSpec{Name: "work_short", VisibilityTimeout: 3 * time.Second})
	doneA := open(t, e, engines.QueueSpec{Name: "done_a"})
	doneB := open(t, e, engines.QueueSpec{Name: "done_b"})
	c := collect(ctx, t, doneA, doneB)

	a := startNode(t, "a", schema)
	b := startNode(t, "b", schema)
	const n = 10000
	publish(ctx, t, work, "m", n)
	c.waitCount(ctx, t, "m-", n)
	if distinct, extra := c.dups("m-"); distinct != n || extra != 0 {
		t.Fatalf("phase 1: %d distinct messages handled, %d handled more than once; want %d and 0", distinct, extra, n)
	}
	c.mu.Lock()
	split := fmt.Sprintf("a=%d b=%d", c.by["done_a"], c.by["done_b"])
	bothWorked := c.by["done_a"] > 0 && c.by["done_b"] > 0
	c.mu.Unlock()
	if !bothWorked {
		t.Fatalf("phase 1: work split %s; both processes should have taken some", split)
	}
	t.Logf("phase 1: 10,000 messages, split %s, none twice", split)

	// Phase 2: kill -9 one process while it holds leases, and the other
	// gets them after the visibility timeout. b stops first (drained: it
	// holds none), so every lease of work_short is then the victim's. The
	// victim is frozen (SIGSTOP) and killed only if the database shows
	// leases once none of its connections is running a statement: frozen,
	// it can neither settle nor take more, so each of those leases is
	// still held when SIGKILL lands and must expire. A freeze that finds
	// none (every worker between batches) thaws it for a moment and
	// freezes it again.
	b.stopping.Store(true)
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-b.done
	waitSettled(ctx, t, short)
	const m = 20000
	victim := a
	// Rounds of m messages, k0-0.. then k1-0.. and so on: a loaded machine
	// can let the victim finish a round between two freezes that found it
	// holding nothing, and then a new round gives it leases to hold.
	rounds := 0
	round := func() string { return fmt.Sprintf("k%d-", rounds-1) }
	publishRound := func() {
		rounds++
		publish(ctx, t, short, strings.TrimSuffix(round(), "-"), m)
	}
	publishRound()
	var held int64
	for held == 0 {
		for above := c.byQueue("done_a"); c.byQueue("done_a") <= above; { // until it works on the round
			if distinct, _ := c.dups(round()); distinct == m {
				publishRound()
			}
			select {
			case <-c.tick:
			case <-time.After(time.Second):
			case <-ctx.Done():
				t.Fatal("no message from done_a before the deadline")
			}
		}
		if err := freeze(victim.cmd.Process); err != nil {
			t.Fatal(err)
		}
		waitIdle(ctx, t, "qrun-a")
		st, err := short.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if held = st.InFlight; held == 0 {
			if err := thaw(victim.cmd.Process); err != nil {
				t.Fatal(err)
			}
		}
	}
	victim.stopping.Store(true)
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.done
	startNode(t, "b", schema) // the other process, back to take over
	for r := range rounds {
		c.waitCount(ctx, t, fmt.Sprintf("k%d-", r), m)
	}
	// Every message can have arrived while leases of the victim are still
	// outstanding: it forwards a message before its ack, which the kill
	// loses, and that lease expires a visibility timeout later. Once
	// nothing is in flight every lease it held has expired.
	st := waitSettled(ctx, t, short)
	if st.ExpiredLeaseTotal < held {
		t.Fatalf("ExpiredLeaseTotal = %d; the killed process held %d leases, which should have expired and been redelivered", st.ExpiredLeaseTotal, held)
	}
	_, extra := c.dups("k")
	if int64(extra) > st.ExpiredLeaseTotal {
		t.Fatalf("%d messages handled twice but only %d leases expired: something was handled twice under a live lease", extra, st.ExpiredLeaseTotal)
	}
	waitFor(t, ctx, "work_short to empty", func() bool {
		s, err := short.Stats(ctx)
		return err == nil && s.Depth() == 0
	})
	t.Logf("phase 2: killed holding %d leases; %d leases expired and were redelivered; %d messages handled twice", held, st.ExpiredLeaseTotal, extra)
}

// TestServerRestart restarts PostgreSQL (pg_ctl restart) under a running
// qrun: it reconnects by itself, logs the outage without flooding, and
// every message is delivered. Not parallel: the restart cuts every
// connection to the server.
func TestServerRestart(t *testing.T) {
	s := pgtest.Need(t, srv)
	if !s.Owned() {
		t.Skip("SKIPPING: the server comes from " + pgtest.EnvDSN + " and is not this test's to restart")
	}
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{PollInterval: 100 * time.Millisecond})
	ctx := ctxT(t, testDeadline)
	// The short lease: a message whose verdict could not be written while
	// the server was down comes back within seconds.
	work := open(t, e, engines.QueueSpec{Name: "work_short", VisibilityTimeout: 3 * time.Second})
	done := open(t, e, engines.QueueSpec{Name: "done_a"})
	c := collect(ctx, t, done)
	a := startNode(t, "a", schema)

	const n = 4000
	publish(ctx, t, work, "r", n/2)
	c.waitCount(ctx, t, "r-", n/8)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	publish(ctx, t, work, "r", n) // the first half again (deduplicated) and the rest
	c.waitCount(ctx, t, "r-", n)
	waitFor(t, ctx, "the listener to reconnect", e.Listening)
	lines := strings.Count(a.out.String(), "\n")
	if lines > 60 {
		t.Fatalf("qrun wrote %d log lines over one restart; an outage must not flood the log:\n%s", lines, a.out.String())
	}
	t.Logf("all %d messages delivered across the restart; qrun logged %d lines", n, lines)
}

// TestQrunMigrate runs `qrun migrate` twice on a fresh schema: the first
// run migrates it, the second finds it up to date, and an engine with
// migrations off then opens it.
func TestQrunMigrate(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	bin, err := buildQrun()
	if err != nil {
		t.Fatal(err)
	}
	schema := s.Schema(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "qrun.hcl")
	src := fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "pg" {
  type    = "postgres"
  dsn     = %q
  schema  = %q
  migrate = false
}
queue "q" { engine = "pg" }
`, s.DSN, schema)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{"migrated to version", "is up to date"}
	for i, w := range want {
		out, err := exec.Command(bin, "migrate", "-c", cfg).CombinedOutput()
		if err != nil || !strings.Contains(string(out), w) {
			t.Fatalf("qrun migrate run %d: %v\n%s\nwant output containing %q", i+1, err, out, w)
		}
	}
	newEngine(t, schema, postgres.Options{NoMigrate: true})
	out, err := exec.Command(bin, "migrate", "-c", cfg, "--engine", "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no postgres engine named") {
		t.Fatalf("qrun migrate --engine nope: %v\n%s", err, out)
	}
}

// TestQrunSend: `qrun send` publishes straight into the database, next to
// a running qrun that handles the message.
func TestQrunSend(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{})
	ctx := ctxT(t, testDeadline)
	done := open(t, e, engines.QueueSpec{Name: "done_a"})
	a := startNode(t, "a", schema)
	bin, _ := buildQrun()
	out, err := exec.CommandContext(ctx, bin, "send", "-c", a.cfg, "-q", "work", "hello from qrun send").CombinedOutput()
	if err != nil {
		t.Fatalf("qrun send: %v\n%s", err, out)
	}
	if got := drain(ctx, t, done, 1); got["hello from qrun send"] != 1 {
		t.Fatalf("handled %v, want the sent message", got)
	}
}
