package postgres

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// waiter wakes the receivers of one queue in this process. A receiver takes
// the channel before it looks for messages and waits on it after finding
// none; a wake closes it, so a wake-up between the look and the wait is
// never lost. Broadcasting is simpler than handing messages to chosen
// receivers and cannot strand one; the ones that find nothing wait again.
type waiter struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *waiter) channel() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *waiter) wake() {
	w.mu.Lock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
	w.mu.Unlock()
}

func (e *Engine) waiter(id int32) *waiter {
	e.wakeMu.Lock()
	defer e.wakeMu.Unlock()
	w := e.waiters[id]
	if w == nil {
		w = new(waiter)
		e.waiters[id] = w
	}
	return w
}

// wakeLocal wakes this process's receivers of a queue.
func (e *Engine) wakeLocal(id int32) {
	e.wakeMu.Lock()
	w := e.waiters[id]
	e.wakeMu.Unlock()
	if w != nil {
		w.wake()
	}
}

func (e *Engine) wakeAll() {
	e.wakeMu.Lock()
	ws := make([]*waiter, 0, len(e.waiters))
	for _, w := range e.waiters {
		ws = append(ws, w)
	}
	e.wakeMu.Unlock()
	for _, w := range ws {
		w.wake()
	}
}

// wake tells every process that a queue has messages ready: this one at
// once, the others through NOTIFY.
func (e *Engine) wake(id int32) {
	e.wakeLocal(id)
	e.notify.add(id)
}

// listen keeps one connection LISTENing on the schema's channel and wakes
// the receivers of each queue named in a notification. When the connection
// is lost, receivers fall back to polling while it reconnects with backoff;
// after reconnecting it wakes everyone, since notifications sent meanwhile
// are gone. The connection is closed whenever the loop leaves it, so none
// leaks, and Close ends the loop.
func (e *Engine) listen() {
	log := newRateLog(e.log, "LISTEN connection lost; receivers poll until it is back")
	backoff := time.Duration(0)
	connected := false // once: every later connection is a reconnect
	for e.ctx.Err() == nil {
		err := e.listenOnce(func() {
			backoff = 0
			log.ok()
			if connected {
				e.opts.Events.Reconnected()
			}
			connected = true
		})
		e.listening.Store(false)
		if e.ctx.Err() != nil {
			return
		}
		e.opts.Events.Error("listen", err)
		log.fail(err)
		backoff = min(max(backoff*2, 100*time.Millisecond), 5*time.Second)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-e.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (e *Engine) listenOnce(up func()) error {
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	conn, err := pgx.ConnectConfig(ctx, e.connCfg)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(ctx)
		cancel()
	}()
	if _, err := conn.Exec(e.ctx, "LISTEN "+pgx.Identifier{e.channel}.Sanitize()); err != nil {
		return err
	}
	e.listening.Store(true)
	up()
	e.wakeAll()
	for {
		n, err := conn.WaitForNotification(e.ctx)
		if err != nil {
			return err
		}
		if id, err := strconv.ParseInt(n.Payload, 10, 32); err == nil {
			e.wakeLocal(int32(id))
		}
	}
}

// Listening reports whether the LISTEN connection is up (for health checks
// and tests).
func (e *Engine) Listening() bool { return e.listening.Load() }

// notifier sends NOTIFYs for queues that gained ready messages, outside
// the transactions that made them ready: NOTIFY inside a transaction takes
// a database-wide lock at commit, which would serialise every enqueue.
// Wake-ups that pile up while one NOTIFY is in flight go out together, each
// queue once. A NOTIFY lost to a crash only delays other processes until
// their next poll.
type notifier struct {
	e    *Engine
	kick chan struct{}
	log  *rateLog

	mu  sync.Mutex
	ids map[int32]struct{}
}

func newNotifier(e *Engine) *notifier {
	return &notifier{
		e:    e,
		kick: make(chan struct{}, 1),
		log:  newRateLog(e.log, "NOTIFY failed; other processes notice new messages at their next poll"),
		ids:  make(map[int32]struct{}),
	}
}

func (n *notifier) add(id int32) {
	n.mu.Lock()
	n.ids[id] = struct{}{}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *notifier) run() {
	for {
		select {
		case <-n.kick:
			n.send(n.e.ctx)
		case <-n.e.ctx.Done():
			// What this process published just before closing (`qrun send`
			// does little else) must still wake the others now.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			n.send(ctx)
			cancel()
			return
		}
	}
}

func (n *notifier) send(ctx context.Context) {
	n.mu.Lock()
	ids := make([]int32, 0, len(n.ids))
	for id := range n.ids {
		ids = append(ids, id)
		delete(n.ids, id)
	}
	n.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	if _, err := n.e.pool.Exec(ctx, n.e.sql.notify, n.e.channel, ids); err != nil {
		if ctx.Err() == nil {
			n.log.fail(err)
		}
		return
	}
	n.log.ok()
}
