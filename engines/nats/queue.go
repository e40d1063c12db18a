package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// queueState is one queue as this engine knows it, shared by its handles.
type queueState struct {
	e       *Engine
	name    string
	stream  string
	subject string
	str     jetstream.Stream
	cons    jetstream.Consumer // nil for a producer-only engine
	spec    atomic.Pointer[engines.QueueSpec]

	// held are the leases this engine holds, handed back at Close.
	heldMu sync.Mutex
	held   map[*lease]struct{}

	// batch is the size of the last Receive, the size of a fetch ahead.
	batch    atomic.Int64
	aheadMu  sync.Mutex
	ahead    *ahead // a batch fetched ahead, waiting for a Receive
	fetching bool   // a fetch ahead is under way
}

// Queue is a handle on one queue.
type Queue struct {
	*queueState
	closed atomic.Bool
}

var (
	_ engines.Queue        = (*Queue)(nil)
	_ engines.GroupSettler = (*Queue)(nil)
)

// streamName and subject name the JetStream objects of queue name.
func (e *Engine) streamName(name string) string { return e.opts.Prefix + name }
func (e *Engine) subject(name string) string    { return "qrun." + e.opts.Prefix + name }

// Open implements engines.Engine: it creates the queue's stream and its
// durable consumer when they are missing, and sets the consumer's ack
// wait from a full spec.
func (e *Engine) Open(ctx context.Context, spec engines.QueueSpec) (engines.Queue, error) {
	if e.isClosed() {
		return nil, fmt.Errorf("open queue %q: %w", spec.Name, engines.ErrClosed)
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("open queue %q: %w", spec.Name, err)
	}
	if err := checkName(spec.Name); err != nil {
		return nil, fmt.Errorf("open queue: %w", err)
	}
	if spec.Ordered {
		return nil, fmt.Errorf("open queue %q: ordered delivery: %w", spec.Name, engines.ErrUnsupported)
	}
	attach := spec == engines.QueueSpec{Name: spec.Name}
	var full *engines.QueueSpec
	if !attach {
		s := spec
		if s.VisibilityTimeout == 0 {
			s.VisibilityTimeout = engines.DefaultVisibilityTimeout
		}
		full = &s
	}
	qs, err := e.queue(ctx, spec.Name, full)
	if err != nil {
		return nil, err
	}
	if dl := qs.spec.Load().DeadLetter; dl != "" {
		if err := checkName(dl); err != nil {
			return nil, fmt.Errorf("open queue %q: dead-letter queue: %w", spec.Name, err)
		}
		if _, err := e.queue(ctx, dl, nil); err != nil {
			return nil, fmt.Errorf("open queue %q: %w", spec.Name, err)
		}
	}
	return &Queue{queueState: qs}, nil
}

// queue returns the state of queue name, making its stream and consumer
// if needed. A spec (nil to attach) replaces the queue's settings: they
// are kept in the consumer's description, so a node that attaches to the
// queue later (or after a restart) finds them there.
func (e *Engine) queue(ctx context.Context, name string, spec *engines.QueueSpec) (*queueState, error) {
	update := spec != nil
	e.mu.Lock()
	qs := e.queues[name]
	e.mu.Unlock()
	if qs != nil && !update {
		return qs, nil
	}
	existing := qs != nil
	if !existing {
		qs = &queueState{e: e, held: map[*lease]struct{}{}, name: name, stream: e.streamName(name), subject: e.subject(name)}
	}
	str, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        qs.stream,
		Description: "qrun queue " + name,
		Subjects:    []string{qs.subject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     e.storageType(),
		Replicas:    e.opts.Replicas,
		Duplicates:  e.opts.DedupWindow,
		MaxMsgSize:  int32(e.opts.MaxMessageSize + headerRoom),
	})
	if err != nil {
		return nil, fmt.Errorf("queue %q: stream %s: %w", name, qs.stream, err)
	}
	if !existing {
		qs.str = str
	}
	if !e.opts.Producer {
		def := engines.QueueSpec{Name: name, VisibilityTimeout: engines.DefaultVisibilityTimeout}
		if spec == nil {
			spec = &def
		}
		cfg := jetstream.ConsumerConfig{
			Durable:       consumerName,
			Description:   describe(spec),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       e.ackWait(spec.VisibilityTimeout),
			MaxDeliver:    -1,
			MaxAckPending: e.opts.MaxAckPending,
			MaxWaiting:    4096,
		}
		var c jetstream.Consumer
		if update {
			c, err = e.js.CreateOrUpdateConsumer(ctx, qs.stream, cfg)
		} else if c, err = e.js.Consumer(ctx, qs.stream, consumerName); errors.Is(err, jetstream.ErrConsumerNotFound) {
			c, err = e.js.CreateOrUpdateConsumer(ctx, qs.stream, cfg)
		}
		if err != nil {
			return nil, fmt.Errorf("queue %q: consumer: %w", name, err)
		}
		if update {
			qs.spec.Store(spec)
		} else if qs.spec.Load() == nil {
			stored := specOf(c.CachedInfo().Config.Description, name)
			qs.spec.Store(&stored)
		}
		if !existing {
			qs.cons = c
		}
	} else if qs.spec.Load() == nil {
		def := engines.QueueSpec{Name: name, VisibilityTimeout: engines.DefaultVisibilityTimeout}
		qs.spec.Store(&def)
	}
	if existing {
		return qs, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.queues[name]; old != nil {
		return old, nil // opened meanwhile by another caller
	}
	e.queues[name] = qs
	return qs, nil
}

// SetVisibility is used by Open's update: the spec must be stored before
// the consumer is updated so its ack wait follows the new timeout.
func (q *Queue) check() error {
	if q.closed.Load() || q.e.isClosed() {
		return fmt.Errorf("queue %q: %w", q.name, engines.ErrClosed)
	}
	return nil
}

// Name implements engines.Queue.
func (q *Queue) Name() string { return q.name }

// Close implements engines.Queue.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return fmt.Errorf("queue %q: %w", q.name, engines.ErrClosed)
	}
	return nil
}

// Enqueue implements engines.Queue: every message is published at once
// and then every acknowledgement awaited, so a batch costs about one round
// trip. A message is stored once its Enqueue returns (the server has
// acknowledged it); a batch is not atomic: on an error, some may be.
func (q *Queue) Enqueue(ctx context.Context, msgs ...engines.Message) error {
	if err := q.check(); err != nil {
		return err
	}
	now := time.Now()
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if len(m.Body) > q.e.opts.MaxMessageSize {
			return fmt.Errorf("enqueue to %q: body of %d bytes, limit %d: %w", q.name, len(m.Body), q.e.opts.MaxMessageSize, engines.ErrTooLarge)
		}
		if m.Delay < 0 || m.TTL < 0 {
			return fmt.Errorf("enqueue to %q: negative delay or TTL: %w", q.name, engines.ErrInvalid)
		}
	}
	for i := range msgs {
		m := &msgs[i]
		md := meta{ID: m.ID, Attrs: m.Attributes, ContentType: m.ContentType, Correlation: m.CorrelationID,
			OrderingKey: m.OrderingKey, Priority: m.Priority}
		if m.Delay > 0 {
			md.NotBefore = now.Add(m.Delay).UnixNano()
		}
		nm, err := encode(q.subject, &md, m.Body, m.DedupID)
		if err != nil {
			return fmt.Errorf("enqueue to %q: %w", q.name, err)
		}
		if futures[i], err = q.e.js.PublishMsgAsync(nm); err != nil {
			return fmt.Errorf("enqueue to %q: %w", q.name, err)
		}
	}
	for i, f := range futures {
		var ack *jetstream.PubAck
		select {
		case ack = <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("enqueue to %q: %w", q.name, err)
		case <-ctx.Done():
			return fmt.Errorf("enqueue to %q: %w", q.name, ctx.Err())
		}
		m := &msgs[i]
		if ack.Duplicate {
			q.count(ctx, func(c *counters) { c.Duplicate++ })
			if err := q.originalID(ctx, m, ack.Sequence); err != nil {
				return err
			}
			continue
		}
		if m.ID == "" {
			m.ID = strconv.FormatUint(ack.Sequence, 10)
		}
		if m.Delay > 0 && q.e.state != nil {
			// The record says the message is delayed before any
			// consumer sees it, so Stats counts it so.
			rec := record{Until: now.Add(m.Delay).UnixNano()}
			if err := q.putRecord(ctx, ack.Sequence, &rec); err != nil {
				return fmt.Errorf("enqueue to %q: %w", q.name, err)
			}
		}
	}
	return nil
}

// originalID writes into m the ID of the message m duplicates.
func (q *Queue) originalID(ctx context.Context, m *engines.Message, seq uint64) error {
	raw, err := q.str.GetMsg(ctx, seq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// Consumed and gone: its ID is its sequence unless it had
			// its own, which only the caller can know.
			if m.ID == "" {
				m.ID = strconv.FormatUint(seq, 10)
			}
			return nil
		}
		return fmt.Errorf("enqueue to %q: reading duplicated message %d: %w", q.name, seq, err)
	}
	md, err := decodeMeta(raw.Header)
	if err != nil {
		return fmt.Errorf("enqueue to %q: message %d: %w", q.name, seq, err)
	}
	m.ID = messageOf(&md, seq, nil).ID
	return nil
}

// stateKey is the state bucket's key of message seq.
func (q *queueState) stateKey(seq uint64) string {
	return "m." + q.name + "." + strconv.FormatUint(seq, 10)
}

func (q *queueState) putRecord(ctx context.Context, seq uint64, rec *record) error {
	b := recordBytes(rec)
	if _, err := q.e.state.Put(ctx, q.stateKey(seq), b); err != nil {
		return fmt.Errorf("state of message %d: %w", seq, err)
	}
	return nil
}

func (q *queueState) getRecord(ctx context.Context, seq uint64) (record, bool, error) {
	var rec record
	ent, err := q.e.state.Get(ctx, q.stateKey(seq))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("state of message %d: %w", seq, err)
	}
	return parseRecord(ent.Value()), true, nil
}

// dropRecord forgets message seq's history once it has left the queue.
func (q *queueState) dropRecord(ctx context.Context, seq uint64) {
	if err := q.e.state.Purge(ctx, q.stateKey(seq)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		q.e.log.Warn("forgetting a settled message's history", zap.String("queue", q.name), zap.Uint64("seq", seq), zap.Error(err))
	}
}

// fetchWait is how long one pull request waits on the server for a
// message. A Receive whose context ends waits for its request to end
// (and keeps what it brought), so it bounds how late a cancelled Receive
// returns, never a message's latency.
const fetchWait = 500 * time.Millisecond

// Receive implements engines.Queue.
func (q *Queue) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	if len(buf) == 0 {
		return 0, fmt.Errorf("receive from %q: empty buffer: %w", q.name, engines.ErrInvalid)
	}
	if err := q.check(); err != nil {
		return 0, err
	}
	if q.cons == nil {
		return 0, fmt.Errorf("receive from %q: engine opened to produce only: %w", q.name, engines.ErrUnsupported)
	}
	q.batch.Store(int64(len(buf)))
	if n := q.takeAhead(ctx, buf); n > 0 {
		return n, nil
	}
	failures := 0
	for {
		if err := q.check(); err != nil {
			return 0, err
		}
		// First what is there now, the whole batch in one round trip.
		b, err := q.cons.FetchNoWait(len(buf))
		n := 0
		if err == nil {
			n, err = q.take(ctx, b, buf)
		}
		if n > 0 {
			return n, nil
		}
		if err == nil && ctx.Err() == nil {
			// Nothing ready: wait on the server for one message; the
			// next Receive takes the rest in one batch.
			wait := fetchWait
			if dl, ok := ctx.Deadline(); ok {
				wait = min(wait, max(time.Until(dl), time.Millisecond))
			}
			if b, err = q.cons.Fetch(1, jetstream.FetchMaxWait(wait)); err == nil {
				n, err = q.take(ctx, b, buf)
			}
			if n > 0 && n < len(buf) && err == nil {
				// Work arrived: take what else is there in one more
				// round trip rather than hand the worker one message.
				if b, err2 := q.cons.FetchNoWait(len(buf) - n); err2 == nil {
					k, _ := q.take(ctx, b, buf[n:])
					n += k
				}
			}
			if n > 0 {
				return n, nil
			}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if err != nil {
			if q.e.isClosed() {
				return 0, q.check()
			}
			if !transient(err) {
				return 0, fmt.Errorf("receive from %q: %w", q.name, err)
			}
			// The connection is down or the server busy: wait and try
			// again; the connection handler logs the outage once.
			q.e.opts.Events.Error("fetch", err)
			failures++
			if failures == 1 || failures%100 == 0 {
				q.e.log.Debug("fetch failed; retrying", zap.String("queue", q.name), zap.Int("failures", failures), zap.Error(err))
			}
			t := time.NewTimer(reconnectDelay(failures))
			select {
			case <-ctx.Done():
				t.Stop()
				return 0, ctx.Err()
			case <-q.e.done:
				t.Stop()
			case <-t.C:
			}
			continue
		}
		failures = 0
	}
}

// take turns a pull's messages into deliveries in buf. It reads the batch
// to its end, whatever ctx says, so that no message the server leased to
// this pull is left unreturned.
func (q *Queue) take(ctx context.Context, b jetstream.MessageBatch, buf []engines.Delivery) (int, error) {
	n := 0
	for m := range b.Messages() {
		if n >= len(buf) {
			// Cannot happen (the batch is at most len(buf)); hand it
			// back rather than lose it.
			_ = m.Nak()
			continue
		}
		if q.deliver(ctx, m, &buf[n], time.Now()) {
			n++
		}
	}
	err := b.Error()
	if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
		err = nil
	}
	return n, err
}

// deliver builds the delivery of m, which arrived at now (its lease's
// start), in d, or settles m itself and returns false: a message not yet
// due is held (taken back with the delay that remains), one whose holder
// died is counted a failure and backs off or is dead-lettered.
func (q *Queue) deliver(ctx context.Context, m jetstream.Msg, d *engines.Delivery, now time.Time) bool {
	md, err := m.Metadata()
	if err != nil {
		q.e.log.Error("message without JetStream metadata; terminating it", zap.String("queue", q.name), zap.Error(err))
		_ = m.Term()
		return false
	}
	spec := q.spec.Load()
	mt, err := decodeMeta(m.Headers())
	if err != nil {
		q.e.log.Error("message with a malformed qrun header; delivering it without", zap.String("queue", q.name), zap.Error(err))
	}
	seq, n := md.Sequence.Stream, int(md.NumDelivered)
	l := &lease{q: q.queueState, msg: m, seq: seq}
	if n > 1 || mt.NotBefore != 0 {
		// A message handed back before or not yet due: its history is
		// read, and maybe written, even when the Receive's context ends
		// meanwhile, since the message was leased to this pull. (A first
		// delivery of a due message, the hot path, touches no bucket.)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		rec, ok, err := q.getRecord(ctx, seq)
		if err != nil {
			// Without the history the counts would be wrong; try again
			// a little later.
			q.e.log.Warn("reading a message's history; retrying it", zap.String("queue", q.name), zap.Uint64("seq", seq), zap.Error(err))
			_ = m.NakWithDelay(time.Second)
			return false
		}
		l.rec, l.hasRec = rec, ok
		if !ok && mt.NotBefore != 0 {
			l.rec.Until = mt.NotBefore
		}
	}
	// Deliveries that ended without a settle by the engine were leases
	// whose holder died: failures, each counted once, here.
	expired := n - 1 - l.rec.Settled
	if expired > 0 {
		l.rec.Settled += expired
		l.rec.Failures += expired
		l.dirty = true
		q.count(ctx, func(c *counters) { c.ExpiredLease += int64(expired) })
	}
	l.failures = mt.Failures + l.rec.Failures
	l.attempt = mt.Attempt + n - l.rec.Holds
	if expired > 0 {
		if spec.MaxAttempts > 0 && l.failures >= spec.MaxAttempts {
			l.deadLetter(ctx, fmt.Sprintf("lease expired: attempt %d of %d", l.failures, spec.MaxAttempts), true)
			return false
		}
		if delay := spec.Retry.Delay(l.failures - 1); delay > 0 {
			l.rec.Until = now.Add(delay).UnixNano()
		}
	}
	if until := time.Unix(0, l.rec.Until); l.rec.Until != 0 && until.After(now) {
		l.hold(ctx, until.Sub(now))
		return false
	}
	if l.rec.Back {
		l.rec.Back = false // leased again
		l.dirty = true
	}
	if l.dirty {
		l.rec.Until = 0
		if err := q.putRecord(ctx, seq, &l.rec); err != nil {
			q.e.log.Warn("recording expired leases", zap.String("queue", q.name), zap.Uint64("seq", seq), zap.Error(err))
		}
		l.hasRec = true
	}
	msg := messageOf(&mt, seq, m.Data())
	l.vt = spec.VisibilityTimeout
	exp := l.start(now)
	*d = engines.NewDelivery(engines.Delivery{
		Message:      msg,
		Queue:        q.name,
		Attempt:      l.attempt,
		Failures:     l.failures,
		EnqueuedAt:   enqueuedAt(&mt, md.Timestamp),
		LeaseExpires: exp,
	}, q.queueState, engines.Ticket{Ref: l})
	return true
}

// Stats implements engines.Queue. The gauges come from the consumer
// (undelivered, pending an ack) and the state bucket's records of
// messages handed back or not yet due; EnqueuedTotal is the stream's last
// sequence and AckedTotal what left the stream other than as a dead
// letter; the other totals are the queue's counters in the bucket.
func (q *Queue) Stats(ctx context.Context) (engines.Stats, error) {
	if err := q.check(); err != nil {
		return engines.Stats{}, err
	}
	c, err := q.readCounters(ctx)
	if err != nil {
		return engines.Stats{}, fmt.Errorf("stats of %q: %w", q.name, err)
	}
	info, err := q.str.Info(ctx)
	if err != nil {
		return engines.Stats{}, fmt.Errorf("stats of %q: %w", q.name, err)
	}
	s := engines.Stats{
		EnqueuedTotal:     int64(info.State.LastSeq),
		AckedTotal:        max(int64(info.State.LastSeq)-int64(info.State.Msgs)-c.DeadLettered-c.Removed, 0),
		NackedTotal:       c.Nacked,
		ExpiredLeaseTotal: c.ExpiredLease,
		DeadLetteredTotal: c.DeadLettered,
		DuplicateTotal:    c.Duplicate,
	}
	if q.cons == nil {
		s.Ready = int64(info.State.Msgs)
		return s, nil
	}
	ci, err := q.cons.Info(ctx)
	if err != nil {
		return s, fmt.Errorf("stats of %q: %w", q.name, err)
	}
	g, err := q.gauges(ctx, ci.Delivered.Stream)
	if err != nil {
		return s, fmt.Errorf("stats of %q: %w", q.name, err)
	}
	s.Ready = max(int64(ci.NumPending)-g.undeliveredDelayed, 0) + g.backReady
	s.InFlight = max(int64(ci.NumAckPending)-g.backDelayed-g.backReady, 0)
	s.Delayed = g.undeliveredDelayed + g.backDelayed
	return s, nil
}

// gauges are the counts Stats reads from the state bucket's records.
type gauges struct {
	undeliveredDelayed int64 // enqueued with a delay, not yet delivered
	backDelayed        int64 // handed back, waiting out a delay
	backReady          int64 // handed back, due, not yet delivered again
}

// gauges reads the records of the queue's messages; delivered is the
// last stream sequence the consumer delivered.
func (q *queueState) gauges(ctx context.Context, delivered uint64) (gauges, error) {
	var g gauges
	prefix := "m." + q.name + "."
	w, err := q.e.state.WatchFiltered(ctx, []string{prefix + "*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return g, err
	}
	defer func() { _ = w.Stop() }()
	now := time.Now().UnixNano()
	for {
		select {
		case ent := <-w.Updates():
			if ent == nil {
				return g, nil
			}
			rec := parseRecord(ent.Value())
			seq, _ := strconv.ParseUint(strings.TrimPrefix(ent.Key(), prefix), 10, 64)
			switch {
			case rec.Back && rec.Until > now:
				g.backDelayed++
			case rec.Back:
				g.backReady++
			case rec.Until > now && seq > delivered:
				g.undeliveredDelayed++
			}
		case <-ctx.Done():
			return g, ctx.Err()
		}
	}
}

func (q *queueState) track(l *lease) {
	q.heldMu.Lock()
	q.held[l] = struct{}{}
	q.heldMu.Unlock()
}

func (q *queueState) untrack(l *lease) {
	q.heldMu.Lock()
	delete(q.held, l)
	q.heldMu.Unlock()
}

// release hands the leases still held back to the server at Close: each
// with a Nak whose delay is what remains of the lease, recorded as no
// settle, so that it ends when it would have and counts as the expired
// lease it is (a failure, then the retry delay) for whoever receives it.
func (q *queueState) release() {
	q.releaseAhead()
	q.heldMu.Lock()
	ls := make([]*lease, 0, len(q.held))
	for l := range q.held {
		ls = append(ls, l)
	}
	q.held = map[*lease]struct{}{}
	q.heldMu.Unlock()
	for _, l := range ls {
		l.mu.Lock()
		if !l.held {
			l.mu.Unlock()
			continue
		}
		l.held = false
		l.timer.Stop()
		left := time.Until(l.deadline)
		l.mu.Unlock()
		_ = q.e.nc.PublishMsg(&nats.Msg{Subject: l.msg.Reply(), Data: nakDelay(max(left, time.Millisecond))})
	}
}

// specPrefix starts a consumer description that holds a queue's settings.
const specPrefix = "qrun queue; settings: "

// storedSpec is the part of a QueueSpec kept on the server.
type storedSpec struct {
	VisibilityTimeout time.Duration       `json:"vt"`
	MaxAttempts       int                 `json:"max_attempts,omitempty"`
	DeadLetter        string              `json:"dead_letter,omitempty"`
	Retry             engines.RetryPolicy `json:"retry"`
}

func describe(s *engines.QueueSpec) string {
	b, _ := json.Marshal(storedSpec{s.VisibilityTimeout, s.MaxAttempts, s.DeadLetter, s.Retry})
	return specPrefix + string(b)
}

// specOf reads the settings a consumer description holds; a description
// that holds none gives the defaults.
func specOf(desc, name string) engines.QueueSpec {
	s := engines.QueueSpec{Name: name, VisibilityTimeout: engines.DefaultVisibilityTimeout}
	var st storedSpec
	if rest, ok := strings.CutPrefix(desc, specPrefix); ok && json.Unmarshal([]byte(rest), &st) == nil && st.VisibilityTimeout > 0 {
		s.VisibilityTimeout, s.MaxAttempts, s.DeadLetter, s.Retry = st.VisibilityTimeout, st.MaxAttempts, st.DeadLetter, st.Retry
	}
	return s
}
