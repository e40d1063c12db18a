package postgres_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// forever mirrors the engine's cap on durations: 100 years.
const forever = 100 * 365 * 24 * time.Hour

// TestReapBackoffMatchesRetryPolicy: the reaper's backoff() in SQL is
// engines.RetryPolicy.Delay in microseconds, read from the settings Open
// stored with the queue, so an expired lease on postgres waits what it
// would on every other engine; and a long failure streak saturates instead
// of overflowing (which would fail reap for every queue in the schema).
func TestReapBackoffMatchesRetryPolicy(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{})
	ctx := ctxT(t, time.Minute)
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	qs := pgx.Identifier{schema}.Sanitize()
	backoff := func(queue string, failures int) time.Duration {
		t.Helper()
		var us int64
		if err := conn.QueryRow(ctx, "SELECT "+qs+".backoff(q, $2) FROM "+qs+".queues q WHERE name = $1", queue, failures).Scan(&us); err != nil {
			t.Fatalf("backoff(%s, %d): %v", queue, failures, err)
		}
		return time.Duration(us) * time.Microsecond
	}
	// near allows float rounding (logarithms in SQL, a power in Go).
	near := func(got, want time.Duration) bool {
		return math.Abs(float64(got-want)) <= float64(time.Microsecond)+1e-9*float64(want)
	}
	for _, c := range []struct {
		name     string
		p        engines.RetryPolicy
		failures []int
	}{
		{"none", engines.RetryPolicy{}, []int{0, 1, 50}},
		{"default", engines.RetryPolicy{Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2}, []int{0, 1, 2, 3, 8, 9, 40, 1 << 30}},
		{"constant", engines.RetryPolicy{Initial: 1500 * time.Millisecond, Max: time.Hour, Multiplier: 1}, []int{0, 7}},
		{"multiplier_below_one", engines.RetryPolicy{Initial: time.Second, Multiplier: 0.5}, []int{0, 3}},
		{"uncapped", engines.RetryPolicy{Initial: time.Millisecond, Multiplier: 3}, []int{0, 5, 20}},
	} {
		open(t, e, engines.QueueSpec{Name: c.name, Retry: c.p})
		for _, n := range c.failures {
			if got, want := backoff(c.name, n), c.p.Delay(n); !near(got, want) {
				t.Errorf("%s: backoff after %d failures = %v, want %v", c.name, n, got, want)
			}
		}
	}
	// No cap and a streak whose power overflows a float: 100 years, the
	// engine's "forever", not an error.
	open(t, e, engines.QueueSpec{Name: "overflow", Retry: engines.RetryPolicy{Initial: time.Minute, Multiplier: 10}})
	if got := backoff("overflow", 100000); got != forever {
		t.Errorf("overflow: backoff = %v, want %v", got, forever)
	}
	// A sub-microsecond initial delay is kept as 1µs, not lost to rounding.
	open(t, e, engines.QueueSpec{Name: "tiny", Retry: engines.RetryPolicy{Initial: 10 * time.Nanosecond, Multiplier: 1}})
	if got := backoff("tiny", 0); got != time.Microsecond {
		t.Errorf("tiny: backoff = %v, want 1µs", got)
	}
	// Jitter spreads within ±Jitter and does vary.
	p := engines.RetryPolicy{Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}
	open(t, e, engines.QueueSpec{Name: "jitter", Retry: p})
	seen := map[time.Duration]bool{}
	for range 20 {
		got := backoff("jitter", 3) // 8s ±20 %
		if got < 6400*time.Millisecond || got > 9600*time.Millisecond {
			t.Fatalf("jitter: backoff after 3 failures = %v, want 6.4s to 9.6s", got)
		}
		seen[got] = true
	}
	if len(seen) < 2 {
		t.Errorf("jitter: 20 backoffs were all %v; the jitter is not applied", seen)
	}
}

// TestRetrySettingsStored: every Open with settings stores the retry
// policy with the queue, the same values from every node that opens it
// with the same config; a name-only Open attaches without changing them;
// a policy the reaper could not compute with is refused.
func TestRetrySettingsStored(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	schema := s.Schema(t)
	node1 := newEngine(t, schema, postgres.Options{})
	node2 := newEngine(t, schema, postgres.Options{})
	ctx := ctxT(t, time.Minute)
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	type row struct {
		initial, max int64
		mult, jitter float64
	}
	read := func() row {
		t.Helper()
		var r row
		err := conn.QueryRow(ctx, "SELECT retry_initial_us, retry_max_us, retry_multiplier, retry_jitter FROM "+
			pgx.Identifier{schema, "queues"}.Sanitize()+" WHERE name = 'q'").Scan(&r.initial, &r.max, &r.mult, &r.jitter)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	spec := engines.QueueSpec{Name: "q", MaxAttempts: 5, Retry: engines.RetryPolicy{Initial: 1500 * time.Millisecond, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}}
	want := row{1_500_000, 300_000_000, 2, 0.2}
	open(t, node1, spec)
	if got := read(); got != want {
		t.Fatalf("after node 1 opened: %+v, want %+v", got, want)
	}
	open(t, node2, spec)
	if got := read(); got != want {
		t.Fatalf("after node 2 opened with the same config: %+v, want %+v", got, want)
	}
	open(t, node2, engines.QueueSpec{Name: "q"})
	if got := read(); got != want {
		t.Fatalf("after a name-only open: %+v, want %+v unchanged", got, want)
	}
	// The latest Open with settings wins, as for every other setting.
	open(t, node1, engines.QueueSpec{Name: "q", MaxAttempts: 5})
	if got, want := read(), (row{0, 0, 0, 0}); got != want {
		t.Fatalf("after an open without a retry policy: %+v, want %+v", got, want)
	}
	for _, p := range []engines.RetryPolicy{
		{Initial: time.Second, Multiplier: math.NaN()},
		{Initial: time.Second, Multiplier: math.Inf(1)},
		{Initial: time.Second, Multiplier: 2, Jitter: math.NaN()},
	} {
		if _, err := node1.Open(ctx, engines.QueueSpec{Name: "q", Retry: p}); !errors.Is(err, engines.ErrInvalid) {
			t.Errorf("Open with retry %+v: %v, want ErrInvalid", p, err)
		}
	}
}
