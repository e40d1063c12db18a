package redis_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/redis"
	"github.com/qrun-dev/qrun/engines/redis/redistest"
)

// unreachable is the engine's log line for the start of an outage.
const unreachable = "redis unreachable; retrying with backoff"

// countEvents counts the engine's reconnects.
type countEvents struct{ errors, reconnects atomic.Int64 }

func (c *countEvents) Error(string, error) { c.errors.Add(1) }
func (c *countEvents) Reconnected()        { c.reconnects.Add(1) }

// TestBrokerRestart kills the Redis server (SIGKILL) while a producer and
// a consumer work, and starts it again on the same data: every message
// whose Enqueue returned is delivered and none is left, the consumer
// carries on by itself, and the outage is one "unreachable" line and one
// "recovered" line.
func TestBrokerRestart(t *testing.T) {
	redistest.Need(t, srv)
	own, err := redistest.Start() // a server of its own: the others' tests keep theirs
	if err != nil {
		t.Fatal(err)
	}
	defer own.Stop()
	core, logs := observer.New(zapcore.InfoLevel)
	ev := &countEvents{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := redis.New(ctx, redis.Options{URL: own.URL, Logger: zap.New(core), Events: ev, BlockInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// A receive whose reply the crash cut off leased messages nobody got:
	// they come back after the lease, so it is short.
	q, err := e.Open(ctx, engines.QueueSpec{Name: "work", VisibilityTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const total = 300
	var mu sync.Mutex
	got := map[string]int{}
	received := make(chan struct{}, 2) // a quarter, then all of them
	done := make(chan error, 1)
	go func() { // the consumer: Receive retries through the outage
		buf := make([]engines.Delivery, 10)
		for {
			n, err := q.Receive(ctx, buf)
			if err != nil {
				done <- err
				return
			}
			for i := range buf[:n] {
				// An ack that failed in the outage is tried again: the lease
				// still holds, or the first try did apply and the lease is
				// gone with the message.
				for err := buf[i].Ack(ctx); err != nil && !errors.Is(err, engines.ErrLeaseLost); err = buf[i].Ack(ctx) {
					if ctx.Err() != nil {
						done <- ctx.Err()
						return
					}
				}
				mu.Lock()
				got[buf[i].ID]++
				n := len(got)
				mu.Unlock()
				if n == total/4 || n == total {
					received <- struct{}{}
				}
			}
		}
	}()
	// The producer retries an enqueue that failed in the outage; the dedup
	// ID makes a retry of one that did get stored a no-op.
	enqueue := func(i int) {
		m := engines.Message{ID: fmt.Sprint("m", i), Body: []byte("x"), DedupID: fmt.Sprint("m", i)}
		for {
			err := q.Enqueue(ctx, m)
			if err == nil {
				return
			}
			t.Logf("enqueue %d: %v", i, err)
			if ctx.Err() != nil {
				t.Fatalf("enqueue %d: %v", i, err)
			}
		}
	}
	for i := range total / 2 {
		enqueue(i)
	}
	<-received // the consumer is busy when the server dies
	if err := own.Kill(); err != nil {
		t.Fatal(err)
	}
	// The server stays down until the engine has seen the outage: the
	// consumer talks to it every few milliseconds (acks, or a blocking
	// read), but a restart quicker than go-redis's own retries would be
	// absorbed by them and show nothing to log.
	for logs.FilterMessage(unreachable).Len() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the engine never reported the outage")
		}
		time.Sleep(5 * time.Millisecond) // polling the log, with the test's deadline
	}
	if err := own.Restart(); err != nil {
		t.Fatal(err)
	}
	for i := total / 2; i < total; i++ {
		enqueue(i)
	}
	select {
	case <-received:
	case err := <-done:
		t.Fatalf("consumer stopped: %v", err)
	case <-ctx.Done():
		t.Fatal("not every message was received")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("consumer: %v", err)
	}
	if s, err := q.Stats(context.Background()); err != nil || s.Depth() != 0 {
		t.Fatalf("after the run: %+v, %v; want nothing left", s, err)
	}
	down := logs.FilterMessage(unreachable).Len()
	up := logs.FilterMessage("redis connection recovered").Len()
	if down < 1 || down != up || ev.reconnects.Load() != int64(up) {
		t.Fatalf("%d unreachable lines, %d recovered lines, %d reconnect events; want one of each per outage", down, up, ev.reconnects.Load())
	}
}

// TestTwoEnginesShareWork: two engines (two qrun processes, as far as
// Redis can tell) on one queue never hold the same message at once, and
// between them receive every message exactly once.
func TestTwoEnginesShareWork(t *testing.T) {
	prefix := redistest.Need(t, srv).Prefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var qs [2]engines.Queue
	for i := range qs {
		e := newEngine(t, prefix, redis.Options{})
		q, err := e.Open(ctx, engines.QueueSpec{Name: "shared", VisibilityTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		qs[i] = q
	}
	const total = 200
	msgs := make([]engines.Message, total)
	for i := range msgs {
		msgs[i].Body = []byte(fmt.Sprint(i))
	}
	if err := qs[0].Enqueue(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	// A's batch, held: B must get none of it.
	held, err := engines.ReceiveN(ctx, qs[0], 5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, d := range held {
		seen[d.ID]++
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, q := range qs {
		wg.Go(func() {
			buf := make([]engines.Delivery, 7)
			for {
				mu.Lock()
				n := len(seen)
				mu.Unlock()
				if n == total {
					return
				}
				rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
				k, err := q.Receive(rctx, buf)
				rcancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("receive: %v", err)
					return
				}
				mu.Lock()
				for i := range buf[:k] {
					seen[buf[i].ID]++
				}
				mu.Unlock()
				for i := range buf[:k] {
					if err := buf[i].Ack(ctx); err != nil {
						t.Errorf("ack: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	for _, d := range held {
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("ack held: %v", err)
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	if s, err := qs[1].Stats(ctx); err != nil || s.AckedTotal != total || s.Depth() != 0 {
		t.Fatalf("stats %+v, %v; want %d acked, none left", s, err, total)
	}
}

// TestWarnsWhenNotDurable: docs/redis.md promises a warning at start when
// the server would lose acknowledged writes in a crash.
func TestWarnsWhenNotDurable(t *testing.T) {
	redistest.Need(t, srv)
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	warned := func() int {
		core, logs := observer.New(zapcore.WarnLevel)
		e, err := redis.New(ctx, redis.Options{URL: own.URL, Logger: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		_ = e.Close()
		return logs.FilterMessageSnippet("may lose acknowledged messages").Len()
	}
	if n := warned(); n != 0 {
		t.Fatalf("%d warnings with appendfsync always", n)
	}
	admin, err := redis.New(ctx, redis.Options{URL: own.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Client().ConfigSet(ctx, "appendfsync", "everysec").Err(); err != nil {
		t.Fatal(err)
	}
	if n := warned(); n != 1 {
		t.Fatalf("%d warnings with appendfsync everysec, want 1", n)
	}
}
