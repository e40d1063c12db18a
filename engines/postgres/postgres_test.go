package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
	"github.com/qrun-dev/qrun/internal/testenv"
)

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func open(t testing.TB, e *postgres.Engine, spec engines.QueueSpec) engines.Queue {
	t.Helper()
	q, err := e.Open(ctxT(t, 30*time.Second), spec)
	if err != nil {
		t.Fatalf("Open(%+v): %v", spec, err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// drain receives and acks until want messages arrived or ctx ends, and
// returns how often each body was seen.
func drain(ctx context.Context, t testing.TB, q engines.Queue, want int) map[string]int {
	t.Helper()
	seen := make(map[string]int, want)
	got := 0
	buf := make([]engines.Delivery, 100)
	for got < want {
		n, err := q.Receive(ctx, buf)
		if err != nil {
			t.Fatalf("Receive from %s after %d of %d: %v", q.Name(), got, want, err)
		}
		for i := range buf[:n] {
			seen[string(buf[i].Body)]++
			if err := buf[i].Ack(ctx); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
		got += n
	}
	return seen
}

// expectEmpty asserts that nothing is delivered for a while.
func expectEmpty(t testing.TB, q engines.Queue, why string) {
	t.Helper()
	ds, err := engines.ReceiveN(ctxT(t, 300*time.Millisecond), q, 10)
	if err == nil {
		t.Fatalf("%s: got %d unexpected deliveries, first %q", why, len(ds), ds[0].Body)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: Receive: %v", why, err)
	}
}

func TestMigrate(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	ctx := ctxT(t, time.Minute)

	// Two migrations racing on a fresh schema: the advisory lock lets one
	// apply everything and the other find nothing left to do.
	var wg sync.WaitGroup
	results := make([][]int, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, s.DSN)
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close(ctx)
			results[i], errs[i] = postgres.Migrate(ctx, conn, schema)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migration %d: %v", i, err)
		}
	}
	all := append(slices.Clone(results[0]), results[1]...)
	if want := postgres.SchemaVersion(); len(all) != want || all[len(all)-1] != want {
		t.Fatalf("the two racing migrations applied %v and %v; want versions 1..%d applied once in all", results[0], results[1], want)
	}

	// With migrations off, an up-to-date schema opens and a missing one is
	// refused with ErrSchemaVersion rather than failing at the first query.
	newEngine(t, schema, postgres.Options{NoMigrate: true})
	_, err := postgres.New(ctx, postgres.Options{DSN: s.DSN, Schema: s.Schema(t), NoMigrate: true})
	if !errors.Is(err, postgres.ErrSchemaVersion) {
		t.Fatalf("New(NoMigrate) on an empty schema: %v, want ErrSchemaVersion", err)
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	for _, o := range []postgres.Options{
		{DSN: "host=/nonexistent", Schema: strings.Repeat("s", 59)},
		{DSN: "host=/nonexistent", MaxConns: 1},
		{DSN: "host=/nonexistent", PollInterval: time.Microsecond},
		{DSN: "host=/nonexistent", MaxMessageSize: -1},
		{DSN: "host=/nonexistent", Topics: []postgres.Topic{{Name: "t", Subscriptions: []string{"t"}}}},
		{DSN: "not a dsn ==="},
	} {
		if _, err := postgres.New(context.Background(), o); !errors.Is(err, postgres.ErrConfig) {
			t.Errorf("New(%+v): %v, want ErrConfig", o, err)
		}
	}
}

// TestBadInput: what PostgreSQL's text cannot hold exactly is refused up
// front, and the refused batch leaves nothing behind.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEngine(t, "", postgres.Options{})
	ctx := ctxT(t, 30*time.Second)
	for _, name := range []string{"", "nul\x00name", "bad\xffutf8", strings.Repeat("n", 201)} {
		if _, err := e.Open(ctx, engines.QueueSpec{Name: name}); !errors.Is(err, engines.ErrInvalid) {
			t.Errorf("Open(%q): %v, want ErrInvalid", name, err)
		}
	}
	q := open(t, e, engines.QueueSpec{Name: "q"})
	for i, m := range []engines.Message{
		{ID: "nul\x00"},
		{Attributes: map[string]string{"k": "\xff"}},
		{Attributes: map[string]string{"\x00": "v"}},
		{OrderingKey: "\xfe"},
		{TTL: -time.Second},
	} {
		err := q.Enqueue(ctx, engines.Message{Body: []byte("good")}, m)
		if !errors.Is(err, engines.ErrInvalid) {
			t.Errorf("case %d: Enqueue: %v, want ErrInvalid", i, err)
		}
	}
	if s, err := q.Stats(ctx); err != nil || s.Depth() != 0 || s.EnqueuedTotal != 0 {
		t.Fatalf("after refused batches: %+v, %v; want nothing stored", s, err)
	}
	// Bodies are bytes: anything goes, NULs and invalid UTF-8 included.
	body := []byte("\x00\xff\xfe binary")
	if err := q.Enqueue(ctx, engines.Message{Body: body}); err != nil {
		t.Fatal(err)
	}
	if got := drain(ctx, t, q, 1); got[string(body)] != 1 {
		t.Fatalf("binary body came back as %v", got)
	}
}

// TestEnqueueFromSQL: the real psql client publishes with qrun.enqueue in a
// transaction that commits and one that rolls back; only the committed
// message is delivered, with what SQL gave it.
func TestEnqueueFromSQL(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	psql := pgtest.Psql()
	if psql == "" {
		testenv.Missing(t, "psql is not installed; the transactional-enqueue test needs the real client")
	}
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{})
	q := open(t, e, engines.QueueSpec{Name: "orders"})
	ctx := ctxT(t, time.Minute)

	// A receiver already waiting must be woken by the committed NOTIFY.
	type res struct {
		ds  []engines.Delivery
		err error
	}
	got := make(chan res, 1)
	go func() {
		ds, err := engines.ReceiveN(ctx, q, 10)
		got <- res{ds, err}
	}()

	fn := pgx.Identifier{schema, "enqueue"}.Sanitize()
	script := fmt.Sprintf(`\set ON_ERROR_STOP on
BEGIN;
SELECT %[1]s('orders', 'rolled back');
ROLLBACK;
BEGIN;
SELECT %[1]s('orders', '{"id": 1}', attributes => '{"source": "psql"}', content_type => 'application/json', priority => 9);
COMMIT;
`, fn)
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", s.DSN)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("Receive: %v", r.err)
	}
	if len(r.ds) != 1 {
		t.Fatalf("received %d messages, want only the committed one", len(r.ds))
	}
	d := r.ds[0]
	if string(d.Body) != `{"id": 1}` || d.Attributes["source"] != "psql" || d.ContentType != "application/json" || d.Priority != 9 {
		t.Fatalf("delivered %q attrs %v type %q priority %d; want what psql published", d.Body, d.Attributes, d.ContentType, d.Priority)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	expectEmpty(t, q, "after the committed message (the rolled-back one must never appear)")

	// A queue that does not exist is an error, not a silent drop.
	cmd = exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", fmt.Sprintf("SELECT %s('no_such_queue', 'x')", fn), s.DSN)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no queue or topic named") {
		t.Fatalf("enqueue to a missing queue: err %v, output %s; want a clear error", err, out)
	}
}

// TestFanOut: a message published to a topic reaches each of its three
// subscriptions exactly once, with one ID; a subscription added later sees
// only what is published after it.
func TestFanOut(t *testing.T) {
	t.Parallel()
	subs := []string{"billing", "audit", "search"}
	e := newEngine(t, "", postgres.Options{Topics: []postgres.Topic{{Name: "events", Subscriptions: subs}}})
	ctx := ctxT(t, time.Minute)
	topic := open(t, e, engines.QueueSpec{Name: "events"})
	const n = 300
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i].Body = fmt.Appendf(nil, "event-%d", i)
	}
	for i := 0; i < n; i += 100 {
		if err := topic.Enqueue(ctx, msgs[i:i+100]...); err != nil {
			t.Fatal(err)
		}
	}
	idOf := map[string]string{}
	for _, m := range msgs {
		idOf[string(m.Body)] = m.ID
	}
	var wg sync.WaitGroup
	for _, sub := range subs {
		q := open(t, e, engines.QueueSpec{Name: sub})
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := map[string]int{}
			buf := make([]engines.Delivery, 64)
			for got := 0; got < n; {
				k, err := q.Receive(ctx, buf)
				if err != nil {
					t.Errorf("%s: Receive after %d: %v", sub, got, err)
					return
				}
				for _, d := range buf[:k] {
					seen[string(d.Body)]++
					if d.ID != idOf[string(d.Body)] {
						t.Errorf("%s: %s has ID %q, the publisher was told %q", sub, d.Body, d.ID, idOf[string(d.Body)])
					}
					if err := d.Ack(ctx); err != nil {
						t.Errorf("%s: Ack: %v", sub, err)
					}
				}
				got += k
			}
			for _, m := range msgs {
				if seen[string(m.Body)] != 1 {
					t.Errorf("%s saw %s %d times, want once", sub, m.Body, seen[string(m.Body)])
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, sub := range subs {
		expectEmpty(t, open(t, e, engines.QueueSpec{Name: sub}), sub+" after every event")
	}
	if err := e.Subscribe(ctx, "events", "late"); err != nil {
		t.Fatal(err)
	}
	if err := e.Unsubscribe(ctx, "events", "search"); err != nil {
		t.Fatal(err)
	}
	if err := topic.Enqueue(ctx, engines.Message{Body: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"billing", "audit", "late"} {
		if got := drain(ctx, t, open(t, e, engines.QueueSpec{Name: sub}), 1); got["after"] != 1 {
			t.Fatalf("%s got %v, want the one later event", sub, got)
		}
	}
	expectEmpty(t, open(t, e, engines.QueueSpec{Name: "search"}), "unsubscribed queue")
	if _, err := engines.ReceiveN(ctx, topic, 1); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("Receive on a topic: %v, want ErrInvalid", err)
	}
}

// TestOrderedManyKeys: 100 keys x 100 messages, 8 consumers. Within a key
// delivery follows enqueue order and never two are in flight at once;
// different keys are in flight together.
func TestOrderedManyKeys(t *testing.T) {
	t.Parallel()
	const keys, per, consumers = 100, 100, 8
	e := newEngine(t, "", postgres.Options{MaxConns: 10})
	q := open(t, e, engines.QueueSpec{Name: "ordered", Ordered: true, VisibilityTimeout: time.Minute})
	ctx := ctxT(t, 3*time.Minute)
	// Enqueued key by key, the layout that makes a naive "skip the locked
	// head" design stall behind the first keys.
	for k := 0; k < keys; k++ {
		msgs := make([]engines.Message, per)
		for i := range msgs {
			msgs[i] = engines.Message{Body: fmt.Appendf(nil, "%d", i), OrderingKey: fmt.Sprintf("k%03d", k)}
		}
		if err := q.Enqueue(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu       sync.Mutex
		next     = map[string]int{}
		inFlight = map[string]bool{}
		maxKeys  int
		done     atomic.Int64
		wg       sync.WaitGroup
	)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for c := 0; c < consumers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]engines.Delivery, 16)
			for {
				n, err := q.Receive(cctx, buf)
				if err != nil {
					if cctx.Err() == nil {
						t.Errorf("Receive: %v", err)
					}
					return
				}
				mu.Lock()
				for _, d := range buf[:n] {
					if inFlight[d.OrderingKey] {
						t.Errorf("key %s has two messages in flight", d.OrderingKey)
					}
					inFlight[d.OrderingKey] = true
					if want := fmt.Sprint(next[d.OrderingKey]); string(d.Body) != want {
						t.Errorf("key %s: got message %s, want %s", d.OrderingKey, d.Body, want)
					}
					next[d.OrderingKey]++
				}
				maxKeys = max(maxKeys, len(inFlightKeys(inFlight)))
				mu.Unlock()
				for _, d := range buf[:n] {
					mu.Lock()
					delete(inFlight, d.OrderingKey)
					mu.Unlock()
					if err := d.Ack(cctx); err != nil {
						t.Errorf("Ack: %v", err)
					}
				}
				if done.Add(int64(n)) == keys*per {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if got := done.Load(); got != keys*per {
		t.Fatalf("delivered %d, want %d", got, keys*per)
	}
	if maxKeys < 2 {
		t.Fatalf("at most %d key(s) were in flight at once; keys must run in parallel", maxKeys)
	}
	t.Logf("up to %d keys in flight at once", maxKeys)
}

func inFlightKeys(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	return out
}

// TestTwoEnginesShareWork: two engines (as two nodes would) on one schema
// split a queue; with leases longer than the test no message is delivered
// twice.
func TestTwoEnginesShareWork(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	a := newEngine(t, schema, postgres.Options{})
	b := newEngine(t, schema, postgres.Options{})
	qa := open(t, a, engines.QueueSpec{Name: "work", VisibilityTimeout: 5 * time.Minute})
	qb := open(t, b, engines.QueueSpec{Name: "work", VisibilityTimeout: 5 * time.Minute})
	ctx := ctxT(t, time.Minute)
	const n = 5000
	var (
		mu    sync.Mutex
		seen  = map[string]int{}
		byEng = [2]int{}
		total atomic.Int64
		wg    sync.WaitGroup
	)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, q := range []engines.Queue{qa, qb, qa, qb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]engines.Delivery, 16)
			for {
				k, err := q.Receive(cctx, buf)
				if err != nil {
					return
				}
				mu.Lock()
				for _, d := range buf[:k] {
					seen[string(d.Body)]++
				}
				byEng[i%2] += k
				mu.Unlock()
				for _, d := range buf[:k] {
					if err := d.Ack(cctx); err != nil && cctx.Err() == nil {
						t.Errorf("Ack: %v", err)
					}
				}
				if total.Add(int64(k)) >= n {
					cancel()
				}
			}
		}()
	}
	// Published through b while a and b both wait: a learns of the work
	// only through NOTIFY (or its poll).
	for i := 0; i < n; i += 100 {
		msgs := make([]engines.Message, 100)
		for j := range msgs {
			msgs[j].Body = fmt.Appendf(nil, "m%d", i+j)
		}
		if err := qb.Enqueue(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d distinct messages delivered, want %d", len(seen), n)
	}
	for body, c := range seen {
		if c != 1 {
			t.Fatalf("%s delivered %d times under a lease that had not expired", body, c)
		}
	}
	if byEng[0] == 0 || byEng[1] == 0 {
		t.Fatalf("work split %v between the engines; both should have taken some", byEng)
	}
}

// TestPeekPurgeRedrive exercises the operator extensions.
func TestPeekPurgeRedrive(t *testing.T) {
	t.Parallel()
	e := newEngine(t, "", postgres.Options{})
	ctx := ctxT(t, time.Minute)
	q := open(t, e, engines.QueueSpec{Name: "src", MaxAttempts: 1, DeadLetter: "src_dlq"})
	dlq := open(t, e, engines.QueueSpec{Name: "src_dlq"})
	msgs := []engines.Message{
		{Body: []byte("a"), Attributes: map[string]string{"k": "v"}},
		{Body: []byte("b"), ID: "chosen"},
		{Body: []byte("c")},
		{Body: []byte("later"), Delay: time.Hour},
	}
	if err := q.Enqueue(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	peek, err := q.(engines.Peeker).Peek(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := bodiesOf(peek); got != "a b c later" {
		t.Fatalf("Peek = %s, want a b c later", got)
	}
	if err := peek[0].Ack(ctx); !errors.Is(err, engines.ErrNotLeased) {
		t.Fatalf("Ack of a peeked message: %v, want ErrNotLeased", err)
	}
	ds, err := engines.ReceiveN(ctx, q, 3)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Receive: %d, %v", len(ds), err)
	}
	if ds[0].Attempt != 1 {
		t.Fatalf("Peek counted an attempt: first delivery is attempt %d", ds[0].Attempt)
	}
	for _, d := range ds {
		if err := d.Nack(ctx, 0, "boom"); err != nil {
			t.Fatal(err)
		}
	}
	// Redrive two by ID (a generated one and a chosen one), then the rest.
	n, err := dlq.(engines.Redriver).Redrive(ctx, []string{msgs[0].ID, "chosen", "no-such-id"})
	if err != nil || n != 2 {
		t.Fatalf("Redrive(ids) = %d, %v; want 2", n, err)
	}
	back := drain(ctx, t, q, 2)
	if back["a"] != 1 || back["b"] != 1 {
		t.Fatalf("redriven: %v, want a and b", back)
	}
	if n, err := dlq.(engines.Redriver).Redrive(ctx, nil); err != nil || n != 1 {
		t.Fatalf("Redrive(all) = %d, %v; want 1", n, err)
	}
	d, err := engines.ReceiveN(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(d[0].Body) != "c" || d[0].Attempt != 1 || d[0].Failures != 0 || d[0].Attributes[engines.AttrDeadLetterSource] != "" {
		t.Fatalf("redriven message: %q attempt %d failures %d attrs %v", d[0].Body, d[0].Attempt, d[0].Failures, d[0].Attributes)
	}
	if err := d[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	purged, err := q.(engines.Purger).Purge(ctx)
	if err != nil || purged != 1 {
		t.Fatalf("Purge = %d, %v; want 1 (the delayed message)", purged, err)
	}
	if s, err := q.Stats(ctx); err != nil || s.Depth() != 0 {
		t.Fatalf("after Purge: %+v, %v", s, err)
	}
}

func bodiesOf(ds []engines.Delivery) string {
	var b []string
	for _, d := range ds {
		b = append(b, string(d.Body))
	}
	return strings.Join(b, " ")
}

// TestListenerRecovers: the LISTEN connection is killed from the server
// side; receivers keep working (polling), the listener reconnects by
// itself, and no connection is leaked along the way.
func TestListenerRecovers(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{PollInterval: 100 * time.Millisecond})
	q := open(t, e, engines.QueueSpec{Name: "q"})
	ctx := ctxT(t, time.Minute)
	waitFor(t, ctx, "listener up", e.Listening)
	admin, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	listeners := func() int {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'qrun' AND query LIKE 'LISTEN "qrun_' || $1 || '"%'`, schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for round := 0; round < 3; round++ {
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name = 'qrun' AND query LIKE 'LISTEN "qrun_' || $1 || '"%'`, schema); err != nil {
			t.Fatal(err)
		}
		if err := q.Enqueue(ctx, engines.Message{Body: fmt.Appendf(nil, "r%d", round)}); err != nil {
			t.Fatal(err)
		}
		if got := drain(ctx, t, q, 1); got[fmt.Sprintf("r%d", round)] != 1 {
			t.Fatalf("round %d: got %v", round, got)
		}
		waitFor(t, ctx, "listener back", func() bool { return e.Listening() && listeners() == 1 })
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "listener connection closed with the engine", func() bool { return listeners() == 0 })
}

// waitFor polls cond: the state it waits on lives in another process (the
// database), which offers no event to wait for.
func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestOrderedHeadLeaves: a key's next message follows whenever its head
// leaves the queue by any road (ack, TTL, dead-letter), a message published
// from SQL waits behind its key like any other, and Ordered cannot change
// under messages.
func TestOrderedHeadLeaves(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{})
	ctx := ctxT(t, time.Minute)
	q := open(t, e, engines.QueueSpec{Name: "ord", Ordered: true, MaxAttempts: 1, VisibilityTimeout: time.Minute})
	key := func(k string, bodies ...string) {
		t.Helper()
		for _, b := range bodies {
			m := engines.Message{Body: []byte(b), OrderingKey: k}
			if b == "ttl" {
				m.TTL = 50 * time.Millisecond // the clock probe below waits as long
			}
			if err := q.Enqueue(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	one := func(want string) engines.Delivery {
		t.Helper()
		ds, err := engines.ReceiveN(ctx, q, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || string(ds[0].Body) != want {
			t.Fatalf("received %s, want only %s", bodiesOf(ds), want)
		}
		return ds[0]
	}
	// SQL: A2 goes in through the SQL function while A1 is the head.
	key("A", "A1")
	if _, err := e.Pool().Exec(ctx, "SELECT "+pgx.Identifier{schema, "enqueue"}.Sanitize()+"('ord', 'A2', ordering_key => 'A')"); err != nil {
		t.Fatal(err)
	}
	a1 := one("A1")
	expectEmpty(t, q, "A2 behind the leased A1")
	if err := a1.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if a2 := one("A2"); a2.Ack(ctx) != nil {
		t.Fatal("Ack A2")
	}
	// TTL: the expired head is dropped and its key handed on.
	key("B", "ttl", "B2")
	// The TTL runs on the database's clock and its passing has no event;
	// a probe delayed by as long, enqueued after it, comes due on that
	// same clock no sooner, so receiving the probe is waiting for expiry.
	probe := open(t, e, engines.QueueSpec{Name: "ord-clock"})
	if err := probe.Enqueue(ctx, engines.Message{Body: []byte("clock"), Delay: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if ds, err := engines.ReceiveN(ctx, probe, 1); err != nil || ds[0].Ack(ctx) != nil {
		t.Fatalf("receiving the clock probe: %v", err)
	}
	if b2 := one("B2"); b2.Ack(ctx) != nil {
		t.Fatal("Ack B2")
	}
	// Dead letter: the head reaches max attempts; the next follows.
	key("C", "C1", "C2")
	if c1 := one("C1"); c1.Nack(ctx, 0, "no") != nil {
		t.Fatal("Nack C1")
	}
	c2 := one("C2")
	if _, err := e.Open(ctx, engines.QueueSpec{Name: "ord", Ordered: false, VisibilityTimeout: time.Minute}); !errors.Is(err, engines.ErrInvalid) {
		t.Fatalf("turning Ordered off under messages: %v, want ErrInvalid", err)
	}
	if err := c2.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := q.Stats(ctx); err != nil || st.Depth() != 0 || st.ExpiredTotal != 1 || st.DeadLetteredTotal != 1 {
		t.Fatalf("Stats: %+v, %v; want empty, 1 expired, 1 dead-lettered", st, err)
	}
}

// TestHugeVisibilityTimeout: a lease of "forever" is stored as far as a
// timestamp reaches instead of overflowing it.
func TestHugeVisibilityTimeout(t *testing.T) {
	t.Parallel()
	e := newEngine(t, "", postgres.Options{})
	ctx := ctxT(t, 30*time.Second)
	q := open(t, e, engines.QueueSpec{Name: "q", VisibilityTimeout: time.Duration(1<<63 - 1)})
	if err := q.Enqueue(ctx, engines.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ds, err := engines.ReceiveN(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !ds[0].LeaseExpires.After(time.Now().Add(50 * 365 * 24 * time.Hour)) {
		t.Fatalf("LeaseExpires = %v, want decades away", ds[0].LeaseExpires)
	}
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestProducerEngine: an engine opened with Producer migrates nothing
// (an empty schema is refused), declares no topics, starts only the NOTIFY
// loop, and still enqueues what a full engine elsewhere receives; an ack
// it makes is written before it returns.
func TestProducerEngine(t *testing.T) {
	t.Parallel()
	s := pgtest.Need(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := postgres.New(ctx, postgres.Options{DSN: s.DSN, Schema: s.Schema(t), Producer: true})
	if !errors.Is(err, postgres.ErrSchemaVersion) {
		t.Fatalf("New(Producer) on an empty schema: %v, want ErrSchemaVersion (no migration)", err)
	}

	schema := s.Schema(t)
	consumer := newEngine(t, schema, postgres.Options{})
	if got := postgres.Loops(consumer); !slices.Equal(got, []string{"notify", "listen", "acks", "reaper"}) {
		t.Fatalf("a full engine started loops %v", got)
	}
	producer := newEngine(t, schema, postgres.Options{Producer: true,
		Topics: []postgres.Topic{{Name: "never_declared", Subscriptions: []string{"sub"}}}})
	if got := postgres.Loops(producer); !slices.Equal(got, []string{"notify"}) {
		t.Fatalf("a producer engine started loops %v, want only notify", got)
	}
	var topics int
	if err := producer.Pool().QueryRow(ctx, "SELECT count(*) FROM "+schema+".queues WHERE kind = 'topic'").Scan(&topics); err != nil || topics != 0 {
		t.Fatalf("a producer declared %d topics (%v), want none", topics, err)
	}

	pq, err := producer.Open(ctx, engines.QueueSpec{Name: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	defer pq.Close()
	if err := pq.Enqueue(ctx, engines.Message{Body: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	cq, err := consumer.Open(ctx, engines.QueueSpec{Name: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	defer cq.Close()
	ds, err := engines.ReceiveN(ctx, cq, 1)
	if err != nil || len(ds) != 1 || string(ds[0].Body) != "hello" {
		t.Fatalf("consumer received %v, %v; want the producer's message", ds, err)
	}
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}

	// A producer that receives writes its ack at once: no loop batches it.
	if err := pq.Enqueue(ctx, engines.Message{Body: []byte("again")}); err != nil {
		t.Fatal(err)
	}
	ds, err = engines.ReceiveN(ctx, pq, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("producer Receive: %v, %v", ds, err)
	}
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := producer.Pool().QueryRow(ctx, "SELECT count(*) FROM "+schema+".messages WHERE body = 'again'").Scan(&left); err != nil || left != 0 {
		t.Fatalf("the producer's message is still stored (%d, %v) after its ack returned, want gone", left, err)
	}
	// The consumer's ack of "hello" is batched: it may still be waiting
	// for its writer. Stats writes it first.
	if _, err := cq.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if err := producer.Pool().QueryRow(ctx, "SELECT count(*) FROM "+schema+".messages").Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d messages left after both acks were written (%v), want 0", left, err)
	}
}

// TestReceiveCancelledAfterSend cancels a Receive once its leasing
// statement is on its way, and lets it read the answer only after
// PostgreSQL has committed the leases: the one moment at which cutting the
// statement would leave messages leased to nobody, hidden for a whole
// lease and then failed. The Receive must return them instead.
func TestReceiveCancelledAfterSend(t *testing.T) {
	t.Parallel()
	schema := pgtest.Need(t, srv).Schema(t)
	e := newEngine(t, schema, postgres.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := e.Open(ctx, engines.QueueSpec{Name: "cut", VisibilityTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const total = 5
	for i := range total {
		if err := q.Enqueue(ctx, engines.Message{Body: []byte{byte('a' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	leased := func() int {
		var n int
		if err := e.Pool().QueryRow(ctx, "SELECT count(*) FROM "+schema+".messages WHERE state = 2").Scan(&n); err != nil {
			t.Fatalf("count leases: %v", err)
		}
		return n
	}
	postgres.SetLeaseSent(e, func(string) {
		if rctx.Err() != nil {
			return // once
		}
		rcancel()
		// On another connection, wait for the commit: the statement runs
		// on the server whether or not its client reads the answer.
		for leased() < total {
		}
	})
	buf := make([]engines.Delivery, total)
	n, err := q.Receive(rctx, buf)
	if err != nil || n != total {
		t.Fatalf("Receive cancelled after its leases were committed: %d, %v; want all %d messages", n, err, total)
	}
	if rctx.Err() == nil {
		t.Fatal("the hook did not cancel the Receive")
	}
	// They are the caller's to settle: a requeue makes them ready at once,
	// with no failure counted.
	for i := range buf[:n] {
		if err := buf[i].Requeue(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := engines.ReceiveN(ctx, q, total)
	if err != nil || len(ds) != total {
		t.Fatalf("Receive after the requeue: %d, %v; want all %d at once", len(ds), err, total)
	}
	for _, d := range ds {
		if d.Attempt != 2 || d.Failures != 0 {
			t.Errorf("%s: Attempt %d Failures %d, want 2, 0", d.ID, d.Attempt, d.Failures)
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// recordedEvents counts what an engine reports through engines.Events and
// signals each reconnect.
type recordedEvents struct {
	reconnects chan struct{}
	mu         sync.Mutex
	errs       map[string]int
}

func newRecordedEvents() *recordedEvents {
	return &recordedEvents{reconnects: make(chan struct{}, 100), errs: map[string]int{}}
}

func (r *recordedEvents) Error(op string, _ error) {
	r.mu.Lock()
	r.errs[op]++
	r.mu.Unlock()
}

func (r *recordedEvents) Reconnected() { r.reconnects <- struct{}{} }

func (r *recordedEvents) waitReconnect(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-r.reconnects:
	case <-ctx.Done():
		t.Fatalf("no reconnect reported after %s", what)
	}
}

// TestReconnectsAreReported: the LISTEN connection and a pool connection,
// killed from the server side, each count one reconnect once replaced;
// the first connections count none.
func TestReconnectsAreReported(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	ev := newRecordedEvents()
	e := newEngine(t, schema, postgres.Options{Events: ev, MaxConns: 2})
	ctx := ctxT(t, time.Minute)
	waitFor(t, ctx, "listener up", e.Listening)
	if len(ev.reconnects) != 0 {
		t.Fatalf("%d reconnects reported for first connections", len(ev.reconnects))
	}
	admin, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'qrun' AND query LIKE 'LISTEN "qrun_' || $1 || '"%'`, schema); err != nil {
		t.Fatal(err)
	}
	ev.waitReconnect(t, ctx, "the LISTEN connection was killed")
	ev.mu.Lock()
	listenErrs := ev.errs["listen"]
	ev.mu.Unlock()
	if listenErrs < 1 {
		t.Fatal("the lost LISTEN connection reported no listen error")
	}

	// A pool connection dies under the pool: found broken when next used,
	// dropped, and the next one the pool makes is a reconnect.
	c, err := e.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int32
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a query on a terminated connection succeeded")
	}
	c.Release()
	// Both of the pool's two connections at once: at least one is new.
	c1, err := e.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := e.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c1.Release()
	c2.Release()
	ev.waitReconnect(t, ctx, "a pool connection was killed")
}
