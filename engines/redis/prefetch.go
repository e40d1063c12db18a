package redis

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// Leasing ahead. The dispatcher's worker loop is receive, handle, wait for
// the verdicts, receive again, so each batch costs two round trips to the
// server, each waiting for its fsync (appendfsync always). When a queue
// has a backlog (the last Receive filled its buffer), the settle that a
// Wait sends at the end of a batch carries the next batch's read
// (XREADGROUP, leased by the settle script) in the same MULTI: Redis runs
// them in one event-loop turn and syncs its append-only file once, and the
// worker's next Receive finds the batch already leased. Nothing is leased
// ahead for a queue without a backlog: each full Receive allows one batch
// end to lease ahead, and a handle holds at most aheadBatches batches
// leased ahead (or being leased), so that each of a few workers sharing
// the handle finds one.
//
// A batch leased ahead that nobody takes within aheadHold (a quarter of
// the lease at most) goes back into the stream as it was, with no attempt
// and no failure counted, and so does one the handle holds when it
// closes. Only a crash of the process leaves it to expire, which counts one
// failure, as for the batch the worker was handling.

// aheadHold is the longest a batch leased ahead waits for a Receive:
// the worker calls Receive right after its Wait, so one that has not
// within this has paused or stopped, and the messages go back to whoever
// asks.
const aheadHold = 200 * time.Millisecond

// aheadBatches is the most batches a queue handle holds leased ahead,
// those in flight included: one for each of up to four workers whose
// batches end at about the same time. With one batch, the workers that
// ended while it was held received on their own, a round trip and a
// script call more per batch.
const aheadBatches = 4

// ahead is a queue handle's batches leased ahead.
type ahead struct {
	mu      sync.Mutex
	size    int            // entries to lease at a batch end: the last full Receive's buffer
	credits int            // full Receives not yet followed by a batch leased ahead
	flying  int            // prefetches in flight
	closed  bool           // the handle closed: lease nothing more
	gen     uint64         // counts stores, so that a timer finds its own batch
	held    []*aheadBatch  // leased ahead, not yet handed out, oldest first
	flight  sync.WaitGroup // in-flight prefetches, waited for by closeAhead
}

// aheadBatch is one batch leased ahead.
type aheadBatch struct {
	ds    []engines.Delivery
	gen   uint64
	timer *time.Timer // gives ds back after aheadHold
}

// wantAhead records a Receive that handed out n deliveries into a buffer
// of size: a full buffer means a backlog, worth leasing a batch ahead at
// the next batch end; one that came back short, none.
func (q *queue) wantAhead(n, size int) {
	a := &q.ahead
	a.mu.Lock()
	a.want(n, size)
	a.mu.Unlock()
}

// want is wantAhead with a.mu held.
func (a *ahead) want(n, size int) {
	if n < size {
		a.credits = 0
		return
	}
	a.size = size
	a.credits = min(a.credits+1, aheadBatches)
}

// takeAhead hands out deliveries leased ahead into buf, from the oldest
// batch held.
func (q *queue) takeAhead(buf []engines.Delivery) int {
	a := &q.ahead
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.held) == 0 {
		return 0
	}
	b := a.held[0]
	n := copy(buf, b.ds)
	clear(b.ds[:n])
	b.ds = b.ds[n:]
	if len(b.ds) == 0 {
		b.timer.Stop()
		a.held[0] = nil
		a.held = a.held[1:]
	}
	a.want(n, len(buf))
	return n
}

// claimAhead reports how many entries the settle being sent should lease
// ahead: none unless a Wait sent it (end), a full Receive since the last
// claim says the queue has a backlog, and the handle holds fewer than
// aheadBatches batches leased ahead or being leased.
func (q *queue) claimAhead(end bool) int {
	a := &q.ahead
	a.mu.Lock()
	defer a.mu.Unlock()
	if !end || a.credits == 0 || a.closed || len(a.held)+a.flying >= aheadBatches || q.live() != nil {
		return 0
	}
	a.credits--
	a.flying++
	a.flight.Add(1)
	return a.size
}

// settleAndPrefetch runs the settle script with args and, in the same
// MULTI, a read of want entries, which it keeps for the next Receive. The
// XREADGROUP goes first and the settle script leases what it read: one
// script call per batch, not two (the read takes only entries after the
// group's last delivered one, which no verdict of the settle names). It
// returns the settle script's answer for the verdicts.
func (q *queue) settleAndPrefetch(ctx context.Context, args []any, want int) ([]int64, error) {
	p := q.e.client.TxPipeline()
	r := q.queueXRead(ctx, p, want)
	args[3] = r.token
	sc := settleScript.EvalSha(ctx, p, q.keysAll, args...)
	_, _ = p.Exec(ctx) // each command's error is its own
	v, err := sc.Slice()
	var rv []any
	if err == nil && len(v) == 2 {
		rv, _ = v[1].([]any)
		v, _ = v[0].([]any)
	} else if err == nil {
		err = fmt.Errorf("settle script returned %d values with a read, want 2", len(v))
	}
	var ds []engines.Delivery
	lease := time.Duration(0)
	if rep, rerr := q.finishWith(ctx, r, rv, err, false); rerr == nil {
		ds = make([]engines.Delivery, want)
		ds = ds[:q.fill(ds, rep)]
		lease = rep.lease
	}
	q.storeAhead(ds, lease)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A server restarted empty of scripts: finishWith leased the read
		// with the receive script, and Run loads the settle script again.
		args[3] = ""
		return settleScript.Run(ctx, q.e.client, q.keysAll, args...).Int64Slice()
	}
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(v))
	for i, x := range v {
		out[i], _ = x.(int64)
	}
	return out, nil
}

// storeAhead keeps ds for a Receive, and arms the timer that gives them
// back if none comes; on a closed handle it gives them back at once.
func (q *queue) storeAhead(ds []engines.Delivery, lease time.Duration) {
	a := &q.ahead
	a.mu.Lock()
	defer a.flight.Done()
	a.flying--
	if len(ds) == 0 {
		a.mu.Unlock()
		return
	}
	if a.closed || q.live() != nil {
		a.mu.Unlock()
		q.giveBack(ds)
		return
	}
	a.gen++
	b := &aheadBatch{ds: ds, gen: a.gen}
	gen := a.gen
	b.timer = time.AfterFunc(min(q.e.aheadHold, lease/4), func() { q.expireAhead(gen) })
	a.held = append(a.held, b)
	a.mu.Unlock()
}

// expireAhead gives back the batch stored as gen if nobody took it.
func (q *queue) expireAhead(gen uint64) {
	a := &q.ahead
	a.mu.Lock()
	var ds []engines.Delivery
	for i, b := range a.held {
		if b.gen == gen {
			ds = b.ds
			a.held = slices.Delete(a.held, i, i+1)
			break
		}
	}
	a.mu.Unlock()
	q.giveBack(ds)
}

// closeAhead stops leasing ahead, waits for the prefetches in flight and
// gives back what the handle still holds.
func (q *queue) closeAhead() {
	a := &q.ahead
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.flight.Wait()
	a.mu.Lock()
	var ds []engines.Delivery
	for _, b := range a.held {
		b.timer.Stop()
		ds = append(ds, b.ds...)
	}
	a.held = nil
	a.mu.Unlock()
	q.giveBack(ds)
}

// giveBack returns deliveries leased ahead and never handed out to the
// stream as they were: no attempt and no failure counted. One whose lease
// is gone already is skipped by the script.
func (q *queue) giveBack(ds []engines.Delivery) {
	if len(ds) == 0 {
		return
	}
	vs := make([]verdict, 0, len(ds))
	for i := range ds {
		if l, ok := ds[i].Ticket().Ref.(*lease); ok {
			vs = append(vs, verdict{sid: l.sid, token: l.token, code: "u"})
		}
	}
	args, _, _ := q.settleArgv(vs)
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	if err := settleScript.Run(ctx, q.e.client, q.keysAll, args...).Err(); err != nil {
		q.e.log.Warn("could not give back messages leased ahead; they return when their leases expire",
			zap.String("queue", q.name), zap.Int("messages", len(vs)), zap.Error(err))
	}
}
