package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// scriptTimeout bounds a script call that runs without its caller's
// cancellation (a receive must read back what it leased).
const scriptTimeout = 30 * time.Second

// keys are one queue's Redis keys. The queue name sits in a hash tag, so
// on a cluster all of one queue's keys share a slot.
type keys struct {
	stream, delayed, leases, stats, settings string
}

func (e *Engine) keys(name string) keys {
	p := e.opts.KeyPrefix + "{" + name + "}:"
	return keys{stream: p + "s", delayed: p + "d", leases: p + "l", stats: p + "c", settings: p + "q"}
}

// queue is a handle on one queue.
type queue struct {
	e    *Engine
	name string
	k    keys
	// keysAll are the scripts' KEYS: S D L C Q.
	keysAll []string

	closeOnce sync.Once
	closed    chan struct{}
	reaped    chan struct{} // closed when the reaper has stopped

	bmu   sync.Mutex
	batch []*pending
	armed bool // a linger timer will send the batch

	ahead ahead // leased ahead by a settle's pipeline: see prefetch.go
}

// Open implements engines.Engine. It creates the stream and its consumer
// group when missing, and in a consuming engine starts the queue's reaper.
func (e *Engine) Open(ctx context.Context, spec engines.QueueSpec) (engines.Queue, error) {
	if err := checkName(spec.Name); err != nil {
		return nil, err
	}
	if spec.Ordered {
		return nil, fmt.Errorf("redis: open %q: ordered delivery: %w", spec.Name, engines.ErrUnsupported)
	}
	if spec.VisibilityTimeout < 0 || spec.MaxAttempts < 0 || spec.DeadLetter == spec.Name {
		return nil, fmt.Errorf("redis: open %q: negative visibility timeout or max attempts, or a dead-letter queue naming itself: %w", spec.Name, engines.ErrInvalid)
	}
	if spec.DeadLetter != "" {
		if err := checkName(spec.DeadLetter); err != nil {
			return nil, err
		}
	}
	if err := e.live(); err != nil {
		return nil, fmt.Errorf("redis: open %q: %w", spec.Name, err)
	}
	q := &queue{e: e, name: spec.Name, k: e.keys(spec.Name), closed: make(chan struct{}), reaped: make(chan struct{})}
	q.keysAll = []string{q.k.stream, q.k.delayed, q.k.leases, q.k.stats, q.k.settings}
	if err := q.configure(ctx, spec); err != nil {
		return nil, err
	}
	// "0": a stream that already holds entries (dead letters written
	// before the dead-letter queue was first opened) is read from its start.
	err := e.client.XGroupCreateMkStream(ctx, q.k.stream, group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return nil, fmt.Errorf("redis: open %q: create stream group: %w", spec.Name, err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("redis: open %q: %w", spec.Name, engines.ErrClosed)
	}
	e.queues[q] = struct{}{}
	e.mu.Unlock()
	if e.opts.Producer {
		close(q.reaped)
	} else {
		go q.reap()
	}
	return q, nil
}

// configure writes spec into the queue's settings hash, which every
// script reads: a spec holding more than a name replaces the settings (the
// latest wins), one holding only the name keeps them, or writes the
// defaults for a new queue.
func (q *queue) configure(ctx context.Context, spec engines.QueueSpec) error {
	lease := spec.VisibilityTimeout
	if lease == 0 {
		lease = engines.DefaultVisibilityTimeout
	}
	mult := spec.Retry.Multiplier
	if mult < 1 {
		mult = 1
	}
	vals := []any{"lease", micros(lease), "maxa", spec.MaxAttempts, "dl", spec.DeadLetter,
		"ri", micros(spec.Retry.Initial), "rm", micros(spec.Retry.Max),
		"rx", strconv.FormatFloat(mult, 'g', -1, 64), "rj", strconv.FormatFloat(spec.Retry.Jitter, 'g', -1, 64)}
	var err error
	if spec == (engines.QueueSpec{Name: spec.Name}) {
		p := q.e.client.TxPipeline()
		for i := 0; i < len(vals); i += 2 {
			p.HSetNX(ctx, q.k.settings, vals[i].(string), vals[i+1])
		}
		_, err = p.Exec(ctx)
	} else {
		err = q.e.client.HSet(ctx, q.k.settings, vals...).Err()
	}
	if err != nil {
		return fmt.Errorf("redis: open %q: write settings: %w", spec.Name, err)
	}
	return nil
}

// live returns ErrClosed once the engine closed.
func (e *Engine) live() error {
	if e.isClosed() {
		return engines.ErrClosed
	}
	return nil
}

// checkName refuses names Redis keys hold but qrun's key layout cannot:
// braces would break the hash tag.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("redis: empty queue name: %w", engines.ErrInvalid)
	}
	for _, c := range name {
		if c == '{' || c == '}' {
			return fmt.Errorf("redis: queue name %q holds a brace: %w", name, engines.ErrInvalid)
		}
	}
	return nil
}

// Name implements engines.Queue.
func (q *queue) Name() string { return q.name }

// Close implements engines.Queue.
func (q *queue) Close() error {
	err := engines.ErrClosed
	q.closeOnce.Do(func() {
		close(q.closed)
		q.e.mu.Lock()
		delete(q.e.queues, q)
		q.e.mu.Unlock()
		err = nil
	})
	<-q.reaped
	q.closeAhead()
	return err
}

// live returns ErrClosed once the handle or engine closed.
func (q *queue) live() error {
	select {
	case <-q.closed:
		return fmt.Errorf("redis: queue %q: %w", q.name, engines.ErrClosed)
	case <-q.e.done:
		return fmt.Errorf("redis: queue %q: %w", q.name, engines.ErrClosed)
	default:
		return nil
	}
}

func micros(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	return strconv.FormatInt(int64(d/time.Microsecond), 10)
}

// Enqueue implements engines.Queue: one script per message in a MULTI, so
// a batch is stored whole or not at all.
func (q *queue) Enqueue(ctx context.Context, msgs ...engines.Message) error {
	if err := q.live(); err != nil {
		return err
	}
	for i := range msgs {
		m := &msgs[i]
		if len(m.Body) > q.e.opts.MaxMessageSize {
			return fmt.Errorf("redis: enqueue to %q: body of %d bytes exceeds %d: %w", q.name, len(m.Body), q.e.opts.MaxMessageSize, engines.ErrTooLarge)
		}
		if m.Delay < 0 || m.TTL < 0 || m.Priority > engines.MaxPriority {
			return fmt.Errorf("redis: enqueue to %q: negative delay or TTL: %w", q.name, engines.ErrInvalid)
		}
	}
	now := time.Now()
	cmds := make([]*redis.Cmd, len(msgs))
	var buf []byte
	_, err := q.e.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i := range msgs {
			m := &msgs[i]
			if m.ID == "" {
				m.ID = newID()
			}
			buf = encode(buf[:0], m, now)
			window, dedup := "", q.k.stats
			if m.DedupID != "" {
				window = strconv.FormatInt(q.e.opts.DedupWindow.Milliseconds(), 10)
				dedup = q.e.opts.KeyPrefix + "{" + q.name + "}:u:" + m.DedupID
			}
			cmds[i] = enqueueScript.EvalSha(ctx, p, []string{q.k.stream, q.k.delayed, q.k.stats, dedup},
				string(buf), micros(m.Delay), micros(m.TTL), window, m.ID)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		if redis.HasErrorPrefix(err, "NOSCRIPT") && q.reload(ctx) == nil {
			return q.Enqueue(ctx, msgs...)
		}
		return fmt.Errorf("redis: enqueue %d messages to %q: %w", len(msgs), q.name, err)
	}
	for i, c := range cmds {
		if prev, err := c.Text(); err == nil && prev != "" {
			msgs[i].ID = prev // a duplicate takes the ID of what it duplicates
		}
	}
	return nil
}

// reload loads the scripts again, after a server restart emptied its
// script cache.
func (q *queue) reload(ctx context.Context) error {
	for _, s := range []*redis.Script{enqueueScript, receiveScript, settleScript, extendScript, purgeScript, redriveScript, orphanScript} {
		if err := s.Load(ctx, q.e.client).Err(); err != nil {
			return err
		}
	}
	return nil
}

// receiveReply is the answer of a read (XREADGROUP) and the receive
// script after it.
type receiveReply struct {
	now, next time.Time // next is zero when nothing is due
	last      string
	moved     int64 // messages housekeeping put into the stream
	token     string
	entries   []any // XREADGROUP's entries: {ID, {field, value, ...}} each
	stats     []any
	lease     time.Duration // the queue's lease length, from its settings
}

// read is a read queued in a MULTI: XREADGROUP as the token's consumer,
// then the receive script that leases what it read.
type read struct {
	token string
	xr    *redis.Cmd // nil for housekeeping only
	rs    *redis.Cmd
}

// queueRead adds a read of up to count entries (0: housekeeping only) to
// the MULTI p.
func (q *queue) queueRead(ctx context.Context, p redis.Pipeliner, count int, stats bool) read {
	r := q.queueXRead(ctx, p, count)
	r.rs = receiveScript.EvalSha(ctx, p, q.keysAll, group, r.token, q.name, q.e.opts.KeyPrefix, flag(stats))
	return r
}

// queueXRead adds the XREADGROUP of up to count entries (none for 0), as
// a consumer named after a new token, to the MULTI p; a script after it
// in the same MULTI leases what it read.
func (q *queue) queueXRead(ctx context.Context, p redis.Pipeliner, count int) read {
	var r read
	if count > 0 {
		r.token = newToken()
		r.xr = p.Do(ctx, "XREADGROUP", "GROUP", group, r.token, "COUNT", count, "STREAMS", q.k.stream, ">")
	}
	return r
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// finish reads a read's answers after its MULTI ran. A receive script
// refused with NOSCRIPT (a server restarted empty of scripts) runs again
// on its own: what the XREADGROUP read is leased then, never left to
// nobody (and should this process die first, orphanScript finds it).
func (q *queue) finish(ctx context.Context, r read, stats bool) (receiveReply, error) {
	v, err := r.rs.Slice()
	return q.finishWith(ctx, r, v, err, stats)
}

// finishWith is finish with the receive script's answer v (or err) given,
// from the receive script or the settle script that leased the read.
func (q *queue) finishWith(ctx context.Context, r read, v []any, err error, stats bool) (receiveReply, error) {
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		v, err = receiveScript.Run(ctx, q.e.client, q.keysAll, group, r.token, q.name, q.e.opts.KeyPrefix, flag(stats)).Slice()
	}
	if err != nil {
		return receiveReply{}, err
	}
	rep, err := parseReceive(v)
	if err != nil {
		return rep, err
	}
	rep.token = r.token
	if r.xr != nil {
		x, err := r.xr.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return rep, err
		}
		// One stream: RESP3 answers a map of it, RESP2 a list of pairs.
		switch x := x.(type) {
		case map[any]any:
			for _, es := range x {
				rep.entries, _ = es.([]any)
			}
		case []any:
			if len(x) > 0 {
				if st, ok := x[0].([]any); ok && len(st) == 2 {
					rep.entries, _ = st[1].([]any)
				}
			}
		}
	}
	return rep, nil
}

// run reads up to count entries (0: housekeeping only) in one MULTI. It
// runs to completion whatever happens to ctx: what it leased is read back
// and returned, never left leased to nobody.
func (q *queue) run(ctx context.Context, count int, stats bool) (receiveReply, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scriptTimeout)
	defer cancel()
	p := q.e.client.TxPipeline()
	r := q.queueRead(ctx, p, count, stats)
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		return receiveReply{}, err
	}
	return q.finish(ctx, r, stats)
}

// parseReceive reads the receive script's answer.
func parseReceive(v []any) (receiveReply, error) {
	if len(v) != 7 {
		return receiveReply{}, fmt.Errorf("receive script returned %d values, want 7", len(v))
	}
	var rep receiveReply
	rep.now = usTime(v[0])
	if n, _ := strconv.ParseFloat(fmt.Sprint(v[1]), 64); n > 0 {
		rep.next = time.UnixMicro(int64(n))
	}
	rep.last, _ = v[2].(string)
	rep.moved, _ = v[3].(int64)
	rep.stats, _ = v[4].([]any)
	rep.lease = usTime(v[5]).Sub(time.UnixMicro(0))
	return rep, nil
}

func usTime(v any) time.Time {
	n, _ := strconv.ParseFloat(fmt.Sprint(v), 64)
	return time.UnixMicro(int64(n))
}

// Receive implements engines.Queue. It first hands out a batch leased
// ahead, if the handle holds one (prefetch.go). Each round is one MULTI:
// XREADGROUP for up to len(buf) entries, then the receive script (the
// batch's lease, housekeeping); with nothing to deliver it waits for a new entry with
// XREAD BLOCK, at most until the next delay ends or lease expires, and for
// at most BlockInterval, so that it notices its context and Close.
func (q *queue) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	if len(buf) == 0 {
		return 0, fmt.Errorf("redis: receive from %q: empty buffer: %w", q.name, engines.ErrInvalid)
	}
	if err := q.live(); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if n := q.takeAhead(buf); n > 0 {
		return n, nil
	}
	backoff := time.Duration(0)
	for {
		if err := q.live(); err != nil {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		rep, err := q.run(ctx, len(buf), false)
		if err == nil {
			q.e.outage.ok()
			backoff = 0
			if n := q.fill(buf, rep); n > 0 {
				q.wantAhead(n, len(buf))
				return n, nil
			}
			if rep.moved > 0 || len(rep.entries) > 0 {
				continue // housekeeping made messages ready, or all read had expired
			}
			err = q.wait(ctx, rep)
			if err == nil || errors.Is(err, redis.Nil) {
				continue
			}
		}
		if lerr := q.live(); lerr != nil {
			return 0, lerr
		}
		if !retryable(err) {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("redis: receive from %q: %w", q.name, err)
		}
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			_ = q.reload(ctx)
		}
		q.e.outage.fail("receive", err)
		backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
		if err := q.pause(ctx, backoff); err != nil {
			return 0, err
		}
	}
}

// pause waits d, or less when ctx ends or the handle closes.
func (q *queue) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-q.closed:
		return q.live()
	case <-q.e.done:
		return q.live()
	}
}

// wait blocks on the stream for an entry after rep.last.
func (q *queue) wait(ctx context.Context, rep receiveReply) error {
	block := q.e.opts.BlockInterval
	if !rep.next.IsZero() {
		block = min(block, rep.next.Sub(rep.now)+time.Millisecond)
	}
	if dl, ok := ctx.Deadline(); ok {
		block = min(block, time.Until(dl)+time.Millisecond)
	}
	if block < time.Millisecond {
		return nil
	}
	return q.e.client.XRead(ctx, &redis.XReadArgs{Streams: []string{q.k.stream, rep.last}, Count: 1, Block: block}).Err()
}

// lease is a delivery's ticket: its stream entry and the batch lease
// (token) it is pending under. Extend may move it to a token of its own,
// and a settle started marks it, so a second settle of the same delivery
// is refused without asking the server.
type lease struct {
	sid     string
	mu      sync.Mutex
	token   string
	settled bool
}

// fill turns the entries a read leased into deliveries. Entries whose TTL
// ran out before this delivery are removed and counted as expired.
func (q *queue) fill(buf []engines.Delivery, rep receiveReply) int {
	n := 0
	expires := rep.now.Add(rep.lease)
	if rep.lease > time.Duration(math.MaxInt64)-time.Duration(rep.now.UnixNano()) {
		expires = time.Unix(0, math.MaxInt64)
	}
	var gone []verdict
	for _, ev := range rep.entries {
		e, _ := ev.([]any)
		if len(e) != 2 {
			continue
		}
		sid, _ := e[0].(string)
		fs, _ := e[1].([]any)
		var d engines.Delivery
		x, err := q.entry(&d, fs)
		if err != nil {
			// A message this engine cannot read would fail every holder:
			// log it and let its lease run out into the dead-letter path.
			q.e.log.Error("unreadable message in stream", zap.String("queue", q.name), zap.String("entry", sid), zap.Error(err))
			continue
		}
		if x != 0 && x <= rep.now.UnixMicro() {
			gone = append(gone, verdict{sid: sid, token: rep.token, code: "e"})
			continue
		}
		d.LeaseExpires = expires
		buf[n] = engines.NewDelivery(d, q, engines.Ticket{Ref: &lease{sid: sid, token: rep.token}})
		n++
	}
	if len(gone) > 0 {
		q.expire(gone)
	}
	return n
}

// expire removes entries whose TTL ran out before their delivery.
func (q *queue) expire(vs []verdict) {
	args, _, _ := q.settleArgv(vs)
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	if err := settleScript.Run(ctx, q.e.client, q.keysAll, args...).Err(); err != nil {
		q.e.log.Warn("could not remove expired messages; they return when their lease expires",
			zap.String("queue", q.name), zap.Int("messages", len(vs)), zap.Error(err))
	}
}

// entry decodes a stream entry's fields into d: m (the message), a the
// attempts and f the failures before this delivery, r and o the
// dead-letter reason and source queue. It returns x, when the TTL of an
// undelivered message runs out (0: none).
func (q *queue) entry(d *engines.Delivery, fs []any) (x int64, err error) {
	var m, reason, source string
	var a, f int
	for i := 0; i+1 < len(fs); i += 2 {
		k, _ := fs[i].(string)
		v, _ := fs[i+1].(string)
		switch k {
		case "m":
			m = v
		case "r":
			reason = v
		case "o":
			source = v
		case "a", "f", "x":
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil || n < 0 {
				return 0, fmt.Errorf("%w: entry field %s", errCorrupt, k)
			}
			switch k {
			case "a":
				a = int(n)
			case "f":
				f = int(n)
			default:
				x = n
			}
		}
	}
	if err := decode(m, d); err != nil {
		return 0, err
	}
	d.Queue = q.name
	d.Attempt, d.Failures = a+1, f
	if source != "" || reason != "" {
		attrs := make(map[string]string, len(d.Attributes)+2)
		maps.Copy(attrs, d.Attributes)
		attrs[engines.AttrDeadLetterReason] = reason
		attrs[engines.AttrDeadLetterSource] = source
		d.Attributes = attrs
	}
	return x, nil
}

// Stats implements engines.Queue. It does the queue's housekeeping first,
// so that an expired lease is counted even while nobody receives.
func (q *queue) Stats(ctx context.Context) (engines.Stats, error) {
	if err := q.live(); err != nil {
		return engines.Stats{}, err
	}
	rep, err := q.run(ctx, 0, true)
	if err != nil {
		return engines.Stats{}, fmt.Errorf("redis: stats of %q: %w", q.name, err)
	}
	if len(rep.stats) != 4 {
		return engines.Stats{}, fmt.Errorf("redis: stats of %q: %d values, want 4", q.name, len(rep.stats))
	}
	xlen, _ := rep.stats[0].(int64)
	leased, _ := rep.stats[1].(int64) // entries pending in the group
	delayed, _ := rep.stats[2].(int64)
	s := engines.Stats{Ready: xlen - leased, InFlight: leased, Delayed: delayed}
	h, _ := rep.stats[3].([]any)
	for i := 0; i+1 < len(h); i += 2 {
		k, _ := h[i].(string)
		vs, _ := h[i+1].(string)
		v, _ := strconv.ParseInt(vs, 10, 64)
		switch k {
		case "enqueued":
			s.EnqueuedTotal = v
		case "acked":
			s.AckedTotal = v
		case "nacked":
			s.NackedTotal = v
		case "expired_lease":
			s.ExpiredLeaseTotal = v
		case "dead_lettered":
			s.DeadLetteredTotal = v
		case "expired":
			s.ExpiredTotal = v
		case "duplicate":
			s.DuplicateTotal = v
		}
	}
	return s, nil
}

// reap does the queue's housekeeping while nobody receives from it: a
// lease that expires is counted and its message moved on (back after its
// backoff, or to the dead-letter queue) at its expiry, not at the next
// Receive, and delayed messages reach the stream when due. It wakes at the
// next expiry or due time the script reports, and at least every second
// for leases taken by other processes.
func (q *queue) reap() {
	defer close(q.reaped)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-q.closed:
			return
		case <-q.e.done:
			return
		case <-t.C:
		}
		wait := time.Second
		if err := orphanScript.Run(ctx, q.e.client, []string{q.k.stream, q.k.leases, q.k.settings}, group).Err(); err != nil && q.live() == nil {
			q.e.log.Warn("orphan scan failed", zap.String("queue", q.name), zap.Error(err))
		}
		rep, err := q.run(ctx, 0, false)
		if err != nil {
			if q.live() != nil {
				return
			}
			q.e.outage.fail("reap", err)
		} else {
			q.e.outage.ok()
			if !rep.next.IsZero() {
				wait = min(wait, max(rep.next.Sub(rep.now)+time.Millisecond, time.Millisecond))
			}
		}
		t.Reset(wait)
	}
}

// Settle implements engines.Settler.
func (q *queue) Settle(ctx context.Context, t engines.Ticket, s engines.Settlement) error {
	v, err := q.settleArgs(t, s)
	if err != nil {
		return err
	}
	args, ans, want := q.settleArgv([]verdict{v})
	r, err := settleScript.Run(ctx, q.e.client, q.keysAll, args...).Int64Slice()
	n := 0
	if err == nil && len(r) == want {
		n = int(r[ans[0]])
	}
	return q.settled(v, n, err)
}

// settleArgs checks a settle and returns it as a verdict. It marks the
// delivery's lease settled: a second settle of it is refused with
// ErrLeaseLost (settled clears the mark when the first one's outcome is
// unknown).
func (q *queue) settleArgs(t engines.Ticket, s engines.Settlement) (verdict, error) {
	l, ok := t.Ref.(*lease)
	if !ok {
		return verdict{}, engines.ErrNotLeased
	}
	var code string
	switch s.Verdict {
	case engines.Ack:
		code = "a"
	case engines.Nack:
		code = "n"
	case engines.Requeue:
		code = "r"
	case engines.DeadLetter:
		code = "d"
	default:
		return verdict{}, fmt.Errorf("redis: settle %s in %q: verdict %d: %w", l.sid, q.name, s.Verdict, engines.ErrInvalid)
	}
	if q.e.isClosed() {
		return verdict{}, fmt.Errorf("redis: settle %s in %q: %w", l.sid, q.name, engines.ErrClosed)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.settled {
		return verdict{}, fmt.Errorf("redis: %s %s in %q: settled already: %w", s.Verdict, l.sid, q.name, engines.ErrLeaseLost)
	}
	l.settled = true
	return verdict{sid: l.sid, token: l.token, code: code, s: s, l: l}, nil
}

// verdict is one settle for the settle script: entry ID, the batch lease
// it is pending under, verdict code (a, n, r, d; e and u internal, see
// settleScript) and the settlement.
type verdict struct {
	sid, token, code string
	s                engines.Settlement
	l                *lease // nil for the internal codes
}

// settleArgv builds the settle script's ARGV for vs: per token, its acks'
// IDs alone first, in stream order and each once (so that the script
// finds the acks it must delete with XDEL by bisection, with no work per
// ID), then its other verdicts with their delay and reason. The script
// answers one value for each token's acks, then one per other verdict:
// ans[i] is the index of vs[i]'s answer, and n how many answers there are.
func (q *queue) settleArgv(vs []verdict) (args []any, ans []int, n int) {
	args = make([]any, 0, 5+len(vs)+3*len(vs))
	args = append(args, group, q.name, q.e.opts.KeyPrefix, "", "0") // no read to lease: see settleAndPrefetch
	ans = make([]int, len(vs))
	var tokens []string
	for _, v := range vs {
		if !slices.Contains(tokens, v.token) {
			tokens = append(tokens, v.token)
		}
	}
	var acks []streamID
	for _, t := range tokens {
		acks = acks[:0]
		others := 0
		for i, v := range vs {
			if v.token != t {
				continue
			}
			if v.code == "a" {
				acks = append(acks, parseStreamID(v.sid))
				ans[i] = n
			} else {
				others++
			}
		}
		slices.SortFunc(acks, streamID.cmp)
		acks = slices.CompactFunc(acks, func(a, b streamID) bool { return a.s == b.s })
		args = append(args, t, len(acks), others)
		for _, a := range acks {
			args = append(args, a.s)
		}
		n++ // the token's acks' answer
		for i, v := range vs {
			if v.token == t && v.code != "a" {
				args = append(args, v.sid, v.code, micros(v.s.Delay), v.s.Reason)
				ans[i] = n
				n++
			}
		}
	}
	return args, ans, n
}

// streamID is a stream entry ID, "ms-seq", with its two numbers, for
// sorting IDs in stream order.
type streamID struct {
	s       string
	ms, seq uint64
}

func parseStreamID(s string) streamID {
	id := streamID{s: s}
	ms, seq, _ := strings.Cut(s, "-")
	id.ms, _ = strconv.ParseUint(ms, 10, 64)
	id.seq, _ = strconv.ParseUint(seq, 10, 64)
	return id
}

func (a streamID) cmp(b streamID) int {
	if c := cmp.Compare(a.ms, b.ms); c != 0 {
		return c
	}
	if c := cmp.Compare(a.seq, b.seq); c != 0 {
		return c
	}
	return strings.Compare(a.s, b.s)
}

// settled turns the settle script's answer into an error. When the
// outcome is unknown (the call failed) the delivery may be settled again.
func (q *queue) settled(v verdict, n int, err error) error {
	if err != nil {
		if v.l != nil {
			v.l.mu.Lock()
			v.l.settled = false
			v.l.mu.Unlock()
		}
		if retryable(err) {
			q.e.outage.fail("settle", err)
		}
		return fmt.Errorf("redis: %s %s in %q: %w", v.s.Verdict, v.sid, q.name, err)
	}
	q.e.outage.ok()
	if n == 0 {
		return fmt.Errorf("redis: %s %s in %q: %w", v.s.Verdict, v.sid, q.name, engines.ErrLeaseLost)
	}
	return nil
}

func (e *Engine) isClosed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// Extend implements engines.Settler. A delivery that shares its batch
// lease with others of its batch moves to a lease of its own, so Extend
// changes no other delivery's expiry (extendScript).
func (q *queue) Extend(ctx context.Context, t engines.Ticket, by time.Duration) (time.Time, error) {
	l, ok := t.Ref.(*lease)
	if !ok {
		return time.Time{}, engines.ErrNotLeased
	}
	if by <= 0 {
		return time.Time{}, fmt.Errorf("redis: extend %s in %q by %v: %w", l.sid, q.name, by, engines.ErrInvalid)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.settled {
		return time.Time{}, fmt.Errorf("redis: extend %s in %q: settled already: %w", l.sid, q.name, engines.ErrLeaseLost)
	}
	v, err := extendScript.Run(ctx, q.e.client, []string{q.k.stream, q.k.leases}, group, l.token, l.sid, micros(by)).StringSlice()
	if err != nil {
		return time.Time{}, fmt.Errorf("redis: extend %s in %q: %w", l.sid, q.name, err)
	}
	if len(v) != 2 {
		return time.Time{}, fmt.Errorf("redis: extend %s in %q: %w", l.sid, q.name, engines.ErrLeaseLost)
	}
	l.token = v[1]
	return usTime(v[0]), nil
}

// pending is a settle sent in the queue's next pipeline.
type pending struct {
	q    *queue
	v    verdict
	done chan struct{}
	err  error
}

// Wait implements engines.Pending. It first sends whatever settles are
// still queued, its own among them: the dispatcher waits at the end of a
// batch, so a batch's verdicts go out together in one pipeline.
func (p *pending) Wait(ctx context.Context) error {
	if b := p.q.take(false); len(b) > 0 {
		p.q.send(b, true)
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settleLinger is the longest a started settle waits to be sent when
// nobody waits for it: enough for the verdicts of a batch of quick
// handlers to meet in one pipeline (one round trip, and one fsync on the
// server, for all of them), short against any lease, so a verdict
// followed by a slow handler is durable within a few milliseconds.
const settleLinger = 2 * time.Millisecond

// StartSettle implements engines.GroupSettler: verdicts queue up and go
// in one pipeline when the first Wait comes or settleLinger after the
// first of them, whichever is sooner. They go in one settle script, which
// checks each against its own lease; a lease that turns out lost is
// reported by Wait. The send a Wait makes may lease the next batch ahead
// in the same round trip (prefetch.go). Redis replies once a write is in its append-only file
// (appendfsync always), so a settle whose Wait returned nil survives a
// crash of either side.
func (q *queue) StartSettle(ctx context.Context, d *engines.Delivery, s engines.Settlement) (engines.Pending, error) {
	v, err := q.settleArgs(d.Ticket(), s)
	if err != nil {
		return nil, err
	}
	p := &pending{q: q, v: v, done: make(chan struct{})}
	q.bmu.Lock()
	q.batch = append(q.batch, p)
	if !q.armed {
		q.armed = true
		time.AfterFunc(q.e.linger, q.linger)
	}
	q.bmu.Unlock()
	return p, nil
}

// take removes the queued settles and returns them; the linger timer
// passes fired, so that the next settle arms it again.
func (q *queue) take(fired bool) []*pending {
	q.bmu.Lock()
	defer q.bmu.Unlock()
	b := q.batch
	q.batch = nil
	if fired {
		q.armed = false
	}
	return b
}

// linger sends what nobody waited for within settleLinger.
func (q *queue) linger() {
	if b := q.take(true); len(b) > 0 {
		q.send(b, false)
	}
}

// send applies batch in one script call and completes each settle. At
// the end of a batch (end set: a Wait sent it) it may lease the next batch
// in the same round trip (prefetch.go).
func (q *queue) send(batch []*pending, end bool) {
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	vs := make([]verdict, len(batch))
	for i, b := range batch {
		vs[i] = b.v
	}
	args, ans, want := q.settleArgv(vs)
	var v []int64
	var err error
	if count := q.claimAhead(end); count > 0 {
		v, err = q.settleAndPrefetch(ctx, args, count)
	} else {
		v, err = settleScript.Run(ctx, q.e.client, q.keysAll, args...).Int64Slice()
	}
	if err == nil && len(v) != want {
		err = fmt.Errorf("settle script returned %d results, want %d", len(v), want)
	}
	for i, b := range batch {
		n := 0
		if err == nil {
			n = int(v[ans[i]])
		}
		b.err = q.settled(b.v, n, err)
		close(b.done)
	}
}
