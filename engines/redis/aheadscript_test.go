package redis_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/redis"
	"github.com/qrun-dev/qrun/engines/redis/redistest"
)

// privateAheadQueue is aheadQueue on a redis-server of the test's own, so
// that the server's command log holds only this test's calls (and its
// queue's reaper's), with a client on it.
func privateAheadQueue(t *testing.T, n int) (engines.Queue, *goredis.Client) {
	t.Helper()
	s, err := redistest.Start()
	if errors.Is(err, redistest.ErrNoServer) {
		redistest.Need(t, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	opt, err := goredis.ParseURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	_, q := aheadQueueOn(t, s.URL, time.Hour, n)
	return q, c
}

// TestLeaseAheadOneScript: the end of a batch that leases the next one
// ahead makes one script call, which both settles the batch and leases
// the read (the server's slow log, at threshold 0, lists every call).
func TestLeaseAheadOneScript(t *testing.T) {
	q, c := privateAheadQueue(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := make([]engines.Delivery, 3)
	receiveFull(t, q, a, 0)
	for _, kv := range [][2]string{{"slowlog-max-len", "100000"}, {"slowlog-log-slower-than", "0"}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SlowLogReset(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ackBatch(t, q, a)
	if err := c.ConfigSet(ctx, "slowlog-log-slower-than", "-1").Err(); err != nil {
		t.Fatal(err)
	}
	logs, err := c.SlowLogGet(ctx, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var token string
	for _, l := range logs {
		if len(l.Args) > 3 && strings.EqualFold(l.Args[0], "XREADGROUP") {
			token = l.Args[3]
		}
	}
	if token == "" {
		t.Fatalf("no XREADGROUP leased the next batch ahead: %v", logs)
	}
	// The batch's calls: those naming its acked entries or the read's token.
	named := []string{token}
	for i := range a {
		named = append(named, redis.EntryID(&a[i]))
	}
	scripts := 0
	for _, l := range logs {
		if len(l.Args) == 0 || !strings.EqualFold(l.Args[0], "EVALSHA") {
			continue
		}
		if slices.ContainsFunc(l.Args, func(s string) bool { return slices.Contains(named, s) }) {
			scripts++
		}
	}
	if scripts != 1 {
		t.Fatalf("the batch's end made %d script calls; want 1 (settle and lease ahead together)", scripts)
	}
	ackLeasedAhead(t, q)
}

// TestLeaseAheadAfterScriptFlush: a server that lost its scripts refuses
// the settle script of a batch's end after the XREADGROUP that leases
// ahead ran in the same MULTI; the read is leased by the receive script
// run on its own and the settle runs again, so both batches are acked
// and nothing is left pending under no lease.
func TestLeaseAheadAfterScriptFlush(t *testing.T) {
	q, c := privateAheadQueue(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := make([]engines.Delivery, 3)
	receiveFull(t, q, a, 0)
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ackBatch(t, q, a)
	if s := stats(t, q); s.InFlight != 3 || s.Ready != 0 || s.AckedTotal != 3 {
		t.Fatalf("after the first batch: stats %+v; want 3 acked and 3 leased ahead", s)
	}
	ackLeasedAhead(t, q)
}

// ackLeasedAhead takes the second batch of three, which the first batch's
// end leased ahead, acks it and checks that all six are acked and
// nothing is left.
func ackLeasedAhead(t *testing.T, q engines.Queue) {
	t.Helper()
	b := make([]engines.Delivery, 3)
	receiveFull(t, q, b, 3)
	ackBatch(t, q, b)
	if s := stats(t, q); s.InFlight != 0 || s.Ready != 0 || s.AckedTotal != 6 {
		t.Fatalf("stats %+v; want all 6 acked and nothing left", s)
	}
}
