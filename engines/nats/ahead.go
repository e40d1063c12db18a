package nats

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// ahead is a batch fetched before any Receive asked for it: the round
// trip that confirmed a batch's acks (see flusher) was a fetch of the
// queue's next batch, which waits here for the next Receive. Its leases
// started on the server when it arrived, so Receive starts the engine's
// timers at that time too, and a batch no Receive takes within a quarter
// of the visibility timeout goes back to the server as no attempt.
type ahead struct {
	msgs  []jetstream.Msg
	at    time.Time // arrival: the leases' start
	timer *time.Timer
}

// aheadKeep is how long a batch fetched ahead waits for a Receive before
// it is handed back: a quarter of the lease, so what Receive takes still
// has at least three quarters of its lease to run.
func aheadKeep(vt time.Duration) time.Duration { return vt / 4 }

// fetchAhead is the round trip that confirms a batch's acks when the
// queue has room for a batch fetched ahead: a no-wait fetch of the size
// of the last Receive, sent after the acks. It reports whether the
// server answered it with messages; an empty answer cannot be told from
// a lost request, so the caller then confirms with a PING (an idle queue
// pays the round trip it paid before).
func (q *queueState) fetchAhead() bool {
	n := int(q.batch.Load())
	q.aheadMu.Lock()
	busy := q.ahead != nil || q.fetching
	if !busy {
		q.fetching = true
	}
	q.aheadMu.Unlock()
	if busy || n <= 0 || q.cons == nil || q.e.isClosed() {
		if !busy {
			q.aheadMu.Lock()
			q.fetching = false
			q.aheadMu.Unlock()
		}
		return false
	}
	b, err := q.cons.FetchNoWait(n)
	var msgs []jetstream.Msg
	if err == nil {
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
	}
	at := time.Now()
	q.aheadMu.Lock()
	q.fetching = false
	if len(msgs) > 0 {
		a := &ahead{msgs: msgs, at: at}
		q.ahead = a
		a.timer = time.AfterFunc(aheadKeep(q.spec.Load().VisibilityTimeout), func() { q.dropAhead(a) })
	}
	q.aheadMu.Unlock()
	if len(msgs) > 0 && q.e.isClosed() {
		q.releaseAhead() // closed meanwhile: release may have run already
	}
	return len(msgs) > 0
}

// takeAhead fills buf from the batch fetched ahead, if any.
func (q *Queue) takeAhead(ctx context.Context, buf []engines.Delivery) int {
	q.aheadMu.Lock()
	a := q.ahead
	if a == nil {
		q.aheadMu.Unlock()
		return 0
	}
	k := min(len(buf), len(a.msgs))
	msgs := a.msgs[:k]
	if a.msgs = a.msgs[k:]; len(a.msgs) == 0 {
		a.timer.Stop()
		q.ahead = nil
	}
	q.aheadMu.Unlock()
	n := 0
	for _, m := range msgs {
		if q.deliver(ctx, m, &buf[n], a.at) {
			n++
		}
	}
	return n
}

// dropAhead hands back batch a if no Receive took it in time.
func (q *queueState) dropAhead(a *ahead) {
	q.aheadMu.Lock()
	if q.ahead != a {
		q.aheadMu.Unlock()
		return
	}
	q.ahead = nil
	msgs := a.msgs
	q.aheadMu.Unlock()
	q.e.log.Debug("handing back a batch fetched ahead that no receive took", zap.String("queue", q.name), zap.Int("messages", len(msgs)))
	q.handBackAhead(msgs)
}

// releaseAhead hands back the batch fetched ahead, at Close.
func (q *queueState) releaseAhead() {
	q.aheadMu.Lock()
	a := q.ahead
	q.ahead = nil
	q.aheadMu.Unlock()
	if a != nil {
		a.timer.Stop()
		q.handBackAhead(a.msgs)
	}
}

// handBackAhead returns messages no handler saw to the server as holds:
// no attempt and no failure, due again at once (or when they were due).
func (q *queueState) handBackAhead(msgs []jetstream.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			_ = m.Nak()
			continue
		}
		mt, _ := decodeMeta(m.Headers())
		l := &lease{q: q, msg: m, seq: md.Sequence.Stream}
		if md.NumDelivered > 1 || mt.NotBefore != 0 {
			rec, ok, err := q.getRecord(ctx, l.seq)
			if err != nil {
				// Without the record a hold would lose the history: let
				// the message come back as an expired lease instead.
				q.e.log.Warn("reading a message's history; handing it back as an expired lease", zap.String("queue", q.name), zap.Uint64("seq", l.seq), zap.Error(err))
				_ = m.Nak()
				continue
			}
			l.rec = rec
			if !ok && mt.NotBefore != 0 {
				l.rec.Until = mt.NotBefore
			}
		}
		var delay time.Duration
		if l.rec.Until != 0 {
			delay = max(time.Until(time.Unix(0, l.rec.Until)), 0)
		}
		l.hold(ctx, delay)
	}
}
