package redis_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/redis"
	"github.com/qrun-dev/qrun/engines/redis/redistest"
)

// leaseQueue opens queue name with lease vt on a new engine and key
// prefix, enqueues bodies, and returns the queue, a raw client on the
// same server and the queue's stream and lease set keys.
func leaseQueue(t *testing.T, name string, vt time.Duration, bodies ...string) (engines.Queue, *goredis.Client, string, string) {
	t.Helper()
	s := redistest.Need(t, srv)
	prefix := s.Prefix(t)
	e := newEngine(t, prefix, redis.Options{})
	q, err := e.Open(context.Background(), engines.QueueSpec{Name: name, VisibilityTimeout: vt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	msgs := make([]engines.Message, len(bodies))
	for i, b := range bodies {
		msgs[i].Body = []byte(b)
	}
	if err := q.Enqueue(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	opt, err := goredis.ParseURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	k := prefix + "{" + name + "}:"
	return q, c, k + "s", k + "l"
}

// wantLeases checks how many consumers the queue's group has and how many
// members its lease set: one per batch lease still holding something.
func wantLeases(t *testing.T, c *goredis.Client, stream, leases, step string, n int) {
	t.Helper()
	ctx := context.Background()
	cs, err := c.XInfoConsumers(ctx, stream, "qrun").Result()
	if err != nil {
		t.Fatal(err)
	}
	z, err := c.ZCard(ctx, leases).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != n || z != int64(n) {
		t.Fatalf("%s: %d consumers and %d lease members, want %d of each", step, len(cs), z, n)
	}
}

// TestBatchLease: a Receive leases its batch with one lease member and one
// consumer; an Extend moves its delivery to a lease of its own (the rest
// of the batch keeps its expiry), and settling the last delivery of a
// lease removes both, so neither piles up.
func TestBatchLease(t *testing.T) {
	q, c, stream, leases := leaseQueue(t, "batch", time.Hour, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ds := make([]engines.Delivery, 3)
	if n, err := q.Receive(ctx, ds); err != nil || n != 3 {
		t.Fatalf("Receive = %d, %v; want 3", n, err)
	}
	wantLeases(t, c, stream, leases, "after Receive", 1)
	old := ds[1].LeaseExpires
	if err := ds[0].Extend(ctx, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	wantLeases(t, c, stream, leases, "after Extend of one", 2)
	if err := ds[1].Extend(ctx, 3*time.Hour); err != nil {
		t.Fatal(err)
	}
	wantLeases(t, c, stream, leases, "after Extend of another", 3)
	// The last one left under the batch's lease extends it in place.
	if err := ds[2].Extend(ctx, 4*time.Hour); err != nil {
		t.Fatal(err)
	}
	wantLeases(t, c, stream, leases, "after Extend of the last", 3)
	if !ds[1].LeaseExpires.After(old.Add(time.Hour)) {
		t.Fatalf("LeaseExpires after Extend(3h) = %v, want well after %v", ds[1].LeaseExpires, old)
	}
	for i := range ds {
		if err := ds[i].Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantLeases(t, c, stream, leases, "after every Ack", 0)
	if err := ds[0].Ack(ctx); err == nil {
		t.Fatal("second Ack succeeded")
	}
	// A Receive that finds nothing leaves no consumer behind.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if n, _ := q.Receive(short, ds); n != 0 {
		t.Fatalf("Receive of an empty queue = %d", n)
	}
	wantLeases(t, c, stream, leases, "after an empty Receive", 0)
}

// TestOrphanedReadReaped: entries read by an XREADGROUP whose lease was
// never written (the process died between the read and its lease script,
// or an older engine read them as one shared consumer) are not stranded:
// once their consumer has been idle for a lease, the reaper counts one
// failure and delivers them again.
func TestOrphanedReadReaped(t *testing.T) {
	const vt = 300 * time.Millisecond
	q, c, stream, _ := leaseQueue(t, "orphan", vt, "lost")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "qrun", Consumer: "crashed", Streams: []string{stream, ">"}, Count: 10}).Result()
	if err != nil || len(res) != 1 || len(res[0].Messages) != 1 {
		t.Fatalf("raw XREADGROUP = %v, %v; want the message", res, err)
	}
	read := time.Now()
	ds := make([]engines.Delivery, 1)
	if n, err := q.Receive(ctx, ds); err != nil || n != 1 {
		t.Fatalf("Receive = %d, %v; want the orphaned message", n, err)
	}
	if since := time.Since(read); since < vt {
		t.Fatalf("delivered again %v after the read, before its consumer was idle for a lease (%v)", since, vt)
	}
	if string(ds[0].Body) != "lost" || ds[0].Attempt != 2 || ds[0].Failures != 1 {
		t.Fatalf("got %q attempt %d failures %d; want %q attempt 2 failures 1", ds[0].Body, ds[0].Attempt, ds[0].Failures, "lost")
	}
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if s := stats(t, q); s.ExpiredLeaseTotal != 1 || s.InFlight != 0 || s.Ready != 0 {
		t.Fatalf("stats %+v; want one expired lease and nothing left", s)
	}
}

// TestReceiveAfterScriptFlush: a server that lost its scripts refuses the
// lease script of a Receive's MULTI after the XREADGROUP in it ran; the
// Receive runs the script again, so the batch is leased (and its Ack
// accepted), not left pending under no lease.
func TestReceiveAfterScriptFlush(t *testing.T) {
	q, c, stream, leases := leaseQueue(t, "flush", time.Hour, "x")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ds := make([]engines.Delivery, 1)
	if n, err := q.Receive(ctx, ds); err != nil || n != 1 {
		t.Fatalf("Receive = %d, %v; want 1", n, err)
	}
	wantLeases(t, c, stream, leases, "after Receive", 1)
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	wantLeases(t, c, stream, leases, "after Ack", 0)
}

// TestTokenLength: a batch's consumer is named with a 16-character token
// (Redis writes the name into its append-only file once per entry read).
func TestTokenLength(t *testing.T) {
	q, c, stream, _ := leaseQueue(t, "token", time.Hour, "x")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ds := make([]engines.Delivery, 1)
	if n, err := q.Receive(ctx, ds); err != nil || n != 1 {
		t.Fatalf("Receive = %d, %v; want 1", n, err)
	}
	cs, err := c.XInfoConsumers(ctx, stream, "qrun").Result()
	if err != nil || len(cs) != 1 || len(cs[0].Name) != 16 {
		t.Fatalf("consumers %+v, %v; want one named with 16 characters", cs, err)
	}
}
