package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/qrun-dev/qrun/engines"
)

// handle is one Open's view of a queue or topic. Closing it ends its own
// calls and wakes its own receivers; leases taken through it stay valid,
// since the engine, not the handle, settles them.
type handle struct {
	e       *Engine
	name    string
	id      int32
	topic   bool
	ordered bool

	closed atomic.Bool
	once   sync.Once
	done   chan struct{}
}

var (
	_ engines.Queue    = (*handle)(nil)
	_ engines.Peeker   = (*handle)(nil)
	_ engines.Purger   = (*handle)(nil)
	_ engines.Redriver = (*handle)(nil)
)

// Name returns the queue name.
func (h *handle) Name() string { return h.name }

// Close closes the handle; a second Close is harmless.
func (h *handle) Close() error {
	h.once.Do(func() {
		h.closed.Store(true)
		close(h.done)
	})
	return nil
}

func (h *handle) check(op string) error {
	if h.closed.Load() || h.e.closed.Load() {
		return h.e.errClosed(op, h.name)
	}
	return nil
}

// forever is where a duration stops meaning a time and starts meaning
// "never": anything this long is stored as infinity rather than overflow
// PostgreSQL's timestamps.
const forever = 100 * 365 * 24 * time.Hour

// micros converts a delay for SQL: 0 now, -1 never.
func micros(d time.Duration) int64 {
	switch {
	case d <= 0:
		return 0
	case d >= forever:
		return -1
	case d < time.Microsecond:
		return 1
	}
	return d.Microseconds()
}

// Enqueue stores msgs in one statement (one transaction), so a batch is
// all-or-nothing. Every message is checked before anything is sent.
func (h *handle) Enqueue(ctx context.Context, msgs ...engines.Message) error {
	if err := h.check("enqueue to"); err != nil {
		return err
	}
	if err := h.validate(msgs); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	dedup, lock := h.needs(msgs)
	var (
		w   wakeups
		err error
	)
	if !dedup && !lock {
		err = retrySafe(func() (err error) {
			w, err = h.insert(ctx, h.e.pool, msgs, indexes(len(msgs)))
			return err
		})
	} else {
		err = pgx.BeginFunc(ctx, h.e.pool, func(tx pgx.Tx) (err error) {
			w, err = h.enqueueIn(ctx, tx, msgs, dedup, lock)
			return err
		})
	}
	if err != nil {
		return h.e.opErr("enqueue to", h.name, err)
	}
	// Only now, committed, are the messages there to be found.
	w.send(h.e)
	return nil
}

// needs says what storing msgs takes beyond a plain insert: dedup when a
// message has a DedupID; lock when keys of an ordered queue (or a topic's
// ordered subscriptions) must be locked in the insert's transaction (see
// lock_key in the schema).
func (h *handle) needs(msgs []engines.Message) (dedup, lock bool) {
	keyed := false
	for i := range msgs {
		dedup = dedup || msgs[i].DedupID != ""
		keyed = keyed || msgs[i].OrderingKey != ""
	}
	return dedup, keyed && (h.ordered || h.topic)
}

// enqueueIn runs the statements that store msgs in tx: the ordering keys'
// locks when lock is set, then the insert, deduplicated when dedup is set.
// Enqueue runs it in a transaction of its own, EnqueueTx in the caller's.
func (h *handle) enqueueIn(ctx context.Context, tx execQuerier, msgs []engines.Message, dedup, lock bool) (wakeups, error) {
	if lock {
		keys := make([]string, len(msgs))
		for i := range msgs {
			keys[i] = msgs[i].OrderingKey
		}
		if _, err := tx.Exec(ctx, h.e.sql.lockKeys, h.id, keys); err != nil {
			return wakeups{}, err
		}
	}
	if dedup {
		return h.enqueueDedup(ctx, tx, msgs)
	}
	return h.insert(ctx, tx, msgs, indexes(len(msgs)))
}

// indexes returns 0, 1, ..., n-1: every message of a batch.
func indexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// wakeups are what an enqueue tells receivers once it has committed.
type wakeups struct {
	queues  []int32
	soonest time.Duration // the shortest delay enqueued, 0 for none
}

func (w wakeups) send(e *Engine) {
	for _, id := range w.queues {
		e.wake(id)
	}
	if w.soonest > 0 {
		e.reaper.kick(e.now() + int64(w.soonest))
	}
}

func (h *handle) validate(msgs []engines.Message) error {
	limit := h.e.opts.MaxMessageSize
	for i := range msgs {
		m := &msgs[i]
		if len(m.Body) > limit {
			return fmt.Errorf("postgres: enqueue to %q: message %d body is %d bytes, limit %d: %w", h.name, i, len(m.Body), limit, engines.ErrTooLarge)
		}
		if m.TTL < 0 {
			return fmt.Errorf("postgres: enqueue to %q: message %d has negative TTL %v: %w", h.name, i, m.TTL, engines.ErrInvalid)
		}
		if !validText(m.ID) || !validText(m.ContentType) || !validText(m.CorrelationID) || !validText(m.OrderingKey) || !validText(m.DedupID) {
			return fmt.Errorf("postgres: enqueue to %q: message %d: ID, ContentType, CorrelationID, OrderingKey and DedupID must be valid UTF-8 without NUL: %w", h.name, i, engines.ErrInvalid)
		}
		for k, v := range m.Attributes {
			if !validText(k) || !validText(v) {
				return fmt.Errorf("postgres: enqueue to %q: message %d: attribute %q is not valid UTF-8 without NUL: %w", h.name, i, k, engines.ErrInvalid)
			}
		}
	}
	return nil
}

// execQuerier is what a transaction and a connection inside a transaction
// of its own (SettleTx's batches) share.
type execQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// rowQuerier is what the pool and a transaction share for queries.
type rowQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// insert stores msgs[idx...] and writes their IDs back.
func (h *handle) insert(ctx context.Context, q rowQuerier, msgs []engines.Message, idx []int) (wakeups, error) {
	n := len(idx)
	if h.plain(msgs, idx) {
		bodies := make([][]byte, n)
		for j, i := range idx {
			bodies[j] = msgs[i].Body
		}
		rows, err := q.Query(ctx, h.e.sql.enqueuePlain, h.id, bodies)
		if err != nil {
			return wakeups{}, err
		}
		if err := scanSeqs(rows, msgs, idx); err != nil {
			return wakeups{}, err
		}
		return wakeups{queues: []int32{h.id}}, nil
	}
	var (
		ids    = make([]string, n)
		bodies = make([][]byte, n)
		prios  = make([]int16, n)
		delays = make([]int64, n)
		ttls   = make([]int64, n)
		keys   = make([]string, n)
		cts    = make([]string, n)
		corrs  = make([]string, n)
		attrs  = make([]string, n)
	)
	var soonest time.Duration
	ready := false
	for j, i := range idx {
		m := &msgs[i]
		if h.topic && m.ID == "" {
			// Every copy carries the same ID, so it is chosen here.
			m.ID = fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
		}
		ids[j], bodies[j], prios[j] = m.ID, m.Body, int16(m.Priority)
		delays[j], ttls[j] = micros(m.Delay), micros(m.TTL)
		keys[j], cts[j], corrs[j] = m.OrderingKey, m.ContentType, m.CorrelationID
		if len(m.Attributes) > 0 {
			b, err := json.Marshal(m.Attributes)
			if err != nil {
				return wakeups{}, fmt.Errorf("attributes of message %d: %w", i, err)
			}
			attrs[j] = string(b)
		}
		if delays[j] == 0 {
			ready = true
		} else if delays[j] > 0 && (soonest == 0 || m.Delay < soonest) {
			soonest = m.Delay
		}
	}
	sql := h.e.sql.enqueue
	if h.topic {
		sql = h.e.sql.enqueueTopic
	}
	rows, err := q.Query(ctx, sql, h.id, ids, bodies, prios, delays, ttls, keys, cts, corrs, attrs, h.ordered)
	if err != nil {
		return wakeups{}, err
	}
	w := wakeups{soonest: soonest}
	if !h.topic {
		if ready {
			w.queues = append(w.queues, h.id)
		}
		return w, scanSeqs(rows, msgs, idx)
	}
	defer rows.Close()
	for rows.Next() {
		var qid int32
		if err := rows.Scan(&qid); err != nil {
			return wakeups{}, err
		}
		if ready {
			w.queues = append(w.queues, qid)
		}
	}
	if err := rows.Err(); err != nil {
		return wakeups{}, err
	}
	return w, nil
}

// plain reports whether the messages of msgs at idx are bodies alone, so
// that enqueuePlain stores them as enqueue would; a topic's need an ID.
func (h *handle) plain(msgs []engines.Message, idx []int) bool {
	if h.topic {
		return false
	}
	for _, i := range idx {
		m := &msgs[i]
		if m.ID != "" || m.Priority != 0 || m.Delay != 0 || m.TTL != 0 || m.OrderingKey != "" ||
			m.ContentType != "" || m.CorrelationID != "" || len(m.Attributes) > 0 || m.DedupID != "" {
			return false
		}
	}
	return true
}

// scanSeqs reads the seqs an insert into a queue returns, in input order,
// and gives each message of msgs at idx without an ID its seq as its ID.
func scanSeqs(rows pgx.Rows, msgs []engines.Message, idx []int) error {
	defer rows.Close()
	j := 0
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return err
		}
		if j < len(idx) && msgs[idx[j]].ID == "" {
			msgs[idx[j]].ID = strconv.FormatInt(seq, 10)
		}
		j++
	}
	return rows.Err()
}

// enqueueDedup enqueues a batch in which some messages carry a DedupID. A
// DedupID is claimed (or found taken) in the dedup table inside the same
// transaction as the insert, so two producers racing with one DedupID
// store it once: the second waits on the first's claim and then sees it.
func (h *handle) enqueueDedup(ctx context.Context, tx execQuerier, msgs []engines.Message) (wakeups, error) {
	first := make(map[string]int)
	var keys []string
	for i := range msgs {
		if k := msgs[i].DedupID; k != "" {
			if _, ok := first[k]; !ok {
				first[k] = i
				keys = append(keys, k)
			}
		}
	}
	claimed := make(map[string]bool, len(keys))
	rows, err := tx.Query(ctx, h.e.sql.dedupClaim, h.id, keys, micros(h.e.opts.DedupWindow))
	if err != nil {
		return wakeups{}, err
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return wakeups{}, err
		}
		claimed[k] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return wakeups{}, err
	}
	existing := make(map[string]string)
	if len(claimed) < len(keys) {
		var taken []string
		for _, k := range keys {
			if !claimed[k] {
				taken = append(taken, k)
			}
		}
		rows, err := tx.Query(ctx, h.e.sql.dedupLookup, h.id, taken)
		if err != nil {
			return wakeups{}, err
		}
		for rows.Next() {
			var k, id string
			if err := rows.Scan(&k, &id); err != nil {
				rows.Close()
				return wakeups{}, err
			}
			existing[k] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return wakeups{}, err
		}
	}
	var fresh []int
	for i := range msgs {
		k := msgs[i].DedupID
		if k == "" || (claimed[k] && first[k] == i) {
			fresh = append(fresh, i)
		}
	}
	var w wakeups
	if len(fresh) > 0 {
		var err error
		if w, err = h.insert(ctx, tx, msgs, fresh); err != nil {
			return wakeups{}, err
		}
	}
	var setKeys, setIDs []string
	for _, k := range keys {
		if claimed[k] {
			setKeys = append(setKeys, k)
			setIDs = append(setIDs, msgs[first[k]].ID)
		}
	}
	if len(setKeys) > 0 {
		if _, err := tx.Exec(ctx, h.e.sql.dedupSet, h.id, setKeys, setIDs); err != nil {
			return wakeups{}, err
		}
	}
	dups := int64(0)
	for i := range msgs {
		k := msgs[i].DedupID
		if k == "" || (claimed[k] && first[k] == i) {
			continue
		}
		dups++
		if msgs[i].ID == "" {
			if id, ok := existing[k]; ok {
				msgs[i].ID = id
			} else {
				msgs[i].ID = msgs[first[k]].ID
			}
		}
	}
	if dups > 0 {
		if _, err := tx.Exec(ctx, h.e.sql.countDuplicates, h.id, dups); err != nil {
			return wakeups{}, err
		}
	}
	return w, nil
}

// Receive leases up to len(buf) messages, waiting for a wake-up (a local
// enqueue or settle, a NOTIFY from another process, the reaper) or the poll
// interval when there are none.
func (h *handle) Receive(ctx context.Context, buf []engines.Delivery) (int, error) {
	if len(buf) == 0 {
		return 0, fmt.Errorf("postgres: receive from %q: empty buffer: %w", h.name, engines.ErrInvalid)
	}
	if h.topic {
		return 0, fmt.Errorf("postgres: receive from %q: it is a topic; receive from its subscriptions: %w", h.name, engines.ErrInvalid)
	}
	e := h.e
	w := e.waiter(h.id)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := h.check("receive from"); err != nil {
			return 0, err
		}
		// Take the wake-up channel before looking, so a message that
		// arrives after the look but before the wait is not missed.
		wake := w.channel()
		n, expired, err := h.lease(ctx, buf)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, e.opErr("receive from", h.name, err)
		}
		if n > 0 {
			// Even if ctx ended meanwhile: these are leased now, and
			// only the caller can hand them on (see lease).
			return n, nil
		}
		if expired {
			continue // TTLs ran out on what was locked; look again at once
		}
		if timer == nil {
			timer = time.NewTimer(e.opts.PollInterval)
		} else {
			timer.Reset(e.opts.PollInterval)
		}
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-h.done:
			return 0, e.errClosed("receive from", h.name)
		case <-e.ctx.Done():
			return 0, e.errClosed("receive from", h.name)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// lease runs one leasing statement into buf.
//
// The caller's ctx only covers waiting for a connection, when nothing has
// been sent. Once the statement is on its way it runs under the engine's
// own context (it ends at Close; StatementTimeout bounds it otherwise),
// and its rows are read in full whatever happens to ctx meanwhile. The
// alternative, letting a cancelled ctx cut the statement, cannot be made
// safe: PostgreSQL may already have committed the leases when pgx gives
// up, and then nobody holds them; they stay hidden for a whole visibility
// timeout and then count as an expired lease, a failure and a backoff for
// a message no handler saw. Receive then returns what was leased even if
// ctx ended meanwhile, and the caller settles it like any delivery (the
// dispatcher releases deliveries it receives while stopping or pausing,
// with no failure counted). Releasing them here instead would cost a
// second statement that can fail in turn, and would hand the caller back
// nothing it could not as well hand back itself.
func (h *handle) lease(ctx context.Context, buf []engines.Delivery) (n int, expired bool, err error) {
	e := h.e
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		return 0, false, err
	}
	// Deferred first, so it runs last: after the batch and its rows close.
	defer conn.Release()
	token := int64(rand.Uint64() >> 1)
	// Acks waiting to be written go first, in the same transaction: the
	// consumer's acks of its last batch and its next lease cost one commit.
	acks := e.acks.take()
	b := &pgx.Batch{}
	nacks := e.acks.queue(b, acks)
	b.Queue(e.sql.lease, h.id, len(buf), h.ordered, token)
	start := e.now()
	br := conn.SendBatch(e.ctx, b)
	if e.leaseSent != nil {
		e.leaseSent(h.name)
	}
	_, err = e.acks.results(br, nacks)
	var rows pgx.Rows
	if err == nil {
		rows, err = br.Query()
	}
	defer func() {
		if rows != nil {
			rows.Close()
		}
		if br != nil {
			if cerr := br.Close(); err == nil {
				err = cerr
			}
		}
		if acks != nil {
			e.acks.finish(acks, err)
		}
		if err != nil {
			n, expired = 0, false
		}
	}()
	if err != nil {
		return 0, false, err
	}
	var (
		leases []lease
		expire []int64
		kind   int32
	)
	var (
		seq                   int64
		prio                  int16
		attempt, failures     int32
		vtms                  int64
		attrs                 []byte
		enq                   time.Time
		id, key, ct, corr     string
		body                  []byte
		deadline, soonestDead int64
	)
	for rows.Next() {
		body, attrs = nil, nil
		if err := rows.Scan(&kind, &seq, &id, &prio, &enq, &attempt, &failures, &key, &ct, &corr, &attrs, &body, &vtms); err != nil {
			return 0, false, err
		}
		switch kind {
		case 1:
			expired = true
			continue
		case 2:
			expire = append(expire, seq)
			continue
		}
		if leases == nil {
			leases = make([]lease, len(buf))
		}
		deadline = saturatingAdd(start, time.Duration(vtms)*time.Millisecond)
		if soonestDead == 0 || deadline < soonestDead {
			soonestDead = deadline
		}
		l := &leases[n]
		l.e, l.seq, l.queue, l.ordered = e, seq, h.id, h.ordered
		l.deadline.Store(deadline)
		buf[n] = engines.NewDelivery(engines.Delivery{}, e, engines.Ticket{Ref: l, Token: uint64(token)})
		d := &buf[n]
		n++
		if id == "" {
			id = strconv.FormatInt(seq, 10)
		}
		if body == nil {
			body = []byte{}
		}
		d.ID, d.Body, d.Priority = id, body, uint8(prio)
		d.OrderingKey, d.ContentType, d.CorrelationID = key, ct, corr
		d.Attributes = decodeAttributes(attrs)
		d.Queue = h.name
		d.Attempt, d.Failures = int(attempt), int(failures)
		d.EnqueuedAt = enq
		d.LeaseExpires = e.wall(deadline)
	}
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	rows.Close()
	rows = nil
	err = br.Close()
	br = nil
	if err != nil {
		return 0, false, err
	}
	if n > 0 {
		e.reaper.kick(soonestDead)
	}
	if len(expire) > 0 {
		// Expired heads of ordered queues go with their key handed on.
		if _, err := e.pool.Exec(ctx, e.sql.expire, expire); err != nil && n == 0 {
			return 0, false, err
		}
		expired = true
	}
	return n, expired, nil
}

// decodeAttributes reads the attributes column. Values written from SQL
// may be any JSON; non-strings are kept as their JSON text.
func decodeAttributes(b []byte) map[string]string {
	if len(b) == 0 {
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err == nil {
		return m
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return map[string]string{"qrun.attributes": string(b)}
	}
	m = make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			m[k] = s
		} else {
			m[k] = string(v)
		}
	}
	return m
}

func saturatingAdd(t int64, d time.Duration) int64 {
	if int64(d) > 1<<62-t {
		return 1 << 62
	}
	return t + int64(d)
}

// Stats reports the queue's counters. Acks still being batched are
// written first, so an Ack that returned is counted.
func (h *handle) Stats(ctx context.Context) (engines.Stats, error) {
	if err := h.check("stats of"); err != nil {
		return engines.Stats{}, err
	}
	if err := h.e.acks.sync(ctx); err != nil {
		return engines.Stats{}, h.e.opErr("stats of", h.name, err)
	}
	var s engines.Stats
	err := h.e.pool.QueryRow(ctx, h.e.sql.stats, h.id).Scan(&s.Ready, &s.Delayed, &s.InFlight,
		&s.EnqueuedTotal, &s.AckedTotal, &s.NackedTotal, &s.ExpiredLeaseTotal, &s.DeadLetteredTotal, &s.ExpiredTotal, &s.DuplicateTotal)
	if err != nil {
		return engines.Stats{}, h.e.opErr("stats of", h.name, err)
	}
	return s, nil
}

// Peek implements engines.Peeker: ready messages in delivery order, then
// delayed ones by due time. Nothing is leased or counted.
func (h *handle) Peek(ctx context.Context, max int) ([]engines.Delivery, error) {
	if err := h.check("peek at"); err != nil {
		return nil, err
	}
	if max < 1 {
		return nil, fmt.Errorf("postgres: peek at %q: max %d < 1: %w", h.name, max, engines.ErrInvalid)
	}
	rows, err := h.e.pool.Query(ctx, h.e.sql.peek, h.id, max)
	if err != nil {
		return nil, h.e.opErr("peek at", h.name, err)
	}
	defer rows.Close()
	var out []engines.Delivery
	for rows.Next() {
		var (
			seq               int64
			prio              int16
			attempt, failures int32
			d                 engines.Delivery
			attrs             []byte
		)
		if err := rows.Scan(&seq, &d.ID, &prio, &d.EnqueuedAt, &attempt, &failures, &d.OrderingKey, &d.ContentType, &d.CorrelationID, &attrs, &d.Body); err != nil {
			return nil, h.e.opErr("peek at", h.name, err)
		}
		h.finishPeeked(&d, seq, prio, attempt, failures, attrs)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, h.e.opErr("peek at", h.name, err)
	}
	return out, nil
}

// finishPeeked completes a peeked row's delivery from its raw columns: an
// ID for a message enqueued without one, a non-nil body, the counts and
// the attributes.
func (h *handle) finishPeeked(d *engines.Delivery, seq int64, prio int16, attempt, failures int32, attrs []byte) {
	if d.ID == "" {
		d.ID = strconv.FormatInt(seq, 10)
	}
	if d.Body == nil {
		d.Body = []byte{}
	}
	d.Priority, d.Attempt, d.Failures = uint8(prio), int(attempt), int(failures)
	d.Attributes = decodeAttributes(attrs)
	d.Queue = h.name
}

// PeekPage implements engines.Peeker: a scan in seq order, the cursor
// being the last seq returned. A message keeps its seq through deliveries
// and retries (only a dead-letter move takes it to another queue). Acks
// still being batched are written first, so a message acked before the
// call is not shown.
func (h *handle) PeekPage(ctx context.Context, opts engines.PeekOptions) (engines.PeekPage, error) {
	if err := h.check("peek at"); err != nil {
		return engines.PeekPage{}, err
	}
	if opts.Max < 1 {
		return engines.PeekPage{}, fmt.Errorf("postgres: peek at %q: max %d < 1: %w", h.name, opts.Max, engines.ErrInvalid)
	}
	var after int64
	if opts.After != "" {
		n, err := strconv.ParseInt(opts.After, 10, 64)
		if err != nil || n < 0 {
			return engines.PeekPage{}, fmt.Errorf("postgres: peek at %q: cursor %q is not one this engine made: %w", h.name, opts.After, engines.ErrInvalid)
		}
		after = n
	}
	if err := h.e.acks.sync(ctx); err != nil {
		return engines.PeekPage{}, h.e.opErr("peek at", h.name, err)
	}
	// One row more than the page says whether the scan goes on.
	rows, err := h.e.pool.Query(ctx, h.e.sql.peekPage, h.id, after, opts.InFlight, int64(opts.Max)+1)
	if err != nil {
		return engines.PeekPage{}, h.e.opErr("peek at", h.name, err)
	}
	defer rows.Close()
	var page engines.PeekPage
	var lastSeq int64
	for rows.Next() {
		var (
			seq               int64
			prio, state       int16
			attempt, failures int32
			d                 engines.Delivery
			attrs             []byte
		)
		if err := rows.Scan(&seq, &d.ID, &prio, &d.EnqueuedAt, &attempt, &failures, &d.OrderingKey, &d.ContentType, &d.CorrelationID, &attrs, &d.Body, &state); err != nil {
			return engines.PeekPage{}, h.e.opErr("peek at", h.name, err)
		}
		if len(page.Messages) == opts.Max {
			page.Next = strconv.FormatInt(lastSeq, 10)
			break
		}
		h.finishPeeked(&d, seq, prio, attempt, failures, attrs)
		st := engines.StateReady
		switch state {
		case 1:
			st = engines.StateDelayed
		case 2:
			st = engines.StateInFlight
		}
		page.Messages = append(page.Messages, engines.Peeked{Delivery: d, State: st})
		lastSeq = seq
	}
	if err := rows.Err(); err != nil {
		return engines.PeekPage{}, h.e.opErr("peek at", h.name, err)
	}
	return page, nil
}

// Purge implements engines.Purger.
func (h *handle) Purge(ctx context.Context) (int64, error) {
	if err := h.check("purge"); err != nil {
		return 0, err
	}
	var n int64
	if err := h.e.pool.QueryRow(ctx, h.e.sql.purge, h.id).Scan(&n); err != nil {
		return 0, h.e.opErr("purge", h.name, err)
	}
	return n, nil
}

// Redrive implements engines.Redriver.
func (h *handle) Redrive(ctx context.Context, ids []string) (int, error) {
	if err := h.check("redrive from"); err != nil {
		return 0, err
	}
	var (
		names []string
		seqs  []int64
	)
	if len(ids) > 0 {
		names = make([]string, 0, len(ids))
		for _, id := range ids {
			if !validText(id) {
				continue // no stored ID can match it
			}
			names = append(names, id)
			if n, err := strconv.ParseInt(id, 10, 64); err == nil && strconv.FormatInt(n, 10) == id {
				seqs = append(seqs, n)
			}
		}
		if len(names) == 0 {
			return 0, nil
		}
	}
	rows, err := h.e.pool.Query(ctx, h.e.sql.redrive, h.id, names, seqs)
	if err != nil {
		return 0, h.e.opErr("redrive from", h.name, err)
	}
	defer rows.Close()
	total := 0
	for rows.Next() {
		var target int32
		var n int64
		if err := rows.Scan(&target, &n); err != nil {
			return 0, h.e.opErr("redrive from", h.name, err)
		}
		total += int(n)
		h.e.wake(target)
	}
	if err := rows.Err(); err != nil {
		return 0, h.e.opErr("redrive from", h.name, err)
	}
	return total, nil
}

// isLeaseLost reports a settle that found no lease to settle.
func isLeaseLost(err error) bool { return errors.Is(err, engines.ErrLeaseLost) }
