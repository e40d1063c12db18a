package dispatch

import "github.com/qrun-dev/qrun/engines"

// Overlapped commits. On an engines.GroupTxSettler (disk, postgres) each
// delivery's commit of effects is started as its handler returns, and the
// batch's commits share engine transactions. Waiting for them at the end
// of the batch, before the next Receive, left the worker idle for a group
// commit per batch: on postgres about a fifth of a batch's time, while an
// ack-only handler's acks are deleted by the engine in the background and
// its next Receive overlaps their durability. So at the end of a batch its
// started commits are handed to a goroutine that waits for them (on
// postgres, the first Wait runs the group commit itself) and accounts
// each one as committed does: counters, OnCommit, logs, the Observer, and
// a conflict requeued without a failure the moment its commit says so.
// Meanwhile the worker receives and handles the next batch into its other
// receive buffer.
//
// One batch is in flight per worker, never more: before it hands over
// batch N+1's commits (so before it receives batch N+2, into batch N's
// buffer) the worker waits until batch N's have landed. It also waits
// before it parks for a pause, and before it returns (stop, drain, abort),
// so Pause and Stop return with every commit accounted. The goroutine
// holds what the commits point to: the deliveries in the set-aside receive
// buffer, and the Effects, which the plugin handed over for good (plugin's
// txState.take). Nothing else waits for it: a throttle slot or per-key cap
// is released as the handler returns, as before, and the batch sizing
// counts handler time only.
//
// Verdicts without effects (GroupSettler) are still waited for at the end
// of their batch (flush): the redis engine sends the next batch's read
// with the first Wait of the last one (docs/redis.md, "Leasing ahead"),
// which needs that Wait to come before the next Receive.

// landing is a batch of commits in flight on a goroutine of its own.
type landing struct {
	done    chan struct{} // closed when every commit is accounted; nil: none in flight
	commits []outcome     // the batch's, owned by the goroutine until done
	buf     []engines.Delivery
}

// handOver starts the goroutine that lands the batch's commits, once the
// previous batch's have landed, and gives the worker the other receive
// buffer: the commits point into the one just used.
func (w *worker) handOver() {
	w.landCommits()
	if len(w.commits) == 0 {
		return
	}
	l := &w.landing
	batch := w.commits
	w.commits = l.commits[:0]
	l.commits = batch
	if l.buf == nil {
		l.buf = make([]engines.Delivery, len(w.buf))
	}
	w.buf, l.buf = l.buf, w.buf
	done := make(chan struct{})
	l.done = done
	ctx := w.c.settleCtx
	go func() {
		defer close(done)
		for _, o := range batch {
			w.committed(o, o.p.Wait(ctx))
		}
	}()
}

// landCommits waits until the commits in flight, if any, are accounted.
func (w *worker) landCommits() {
	l := &w.landing
	if l.done == nil {
		return
	}
	<-l.done
	l.done = nil
	clear(l.commits) // drop the Effects and deliveries they held
}
