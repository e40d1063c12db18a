package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// acker sends a lease's acknowledgements (+ACK, -NAK, +TERM) with a reply
// subject, so the server confirms each once it has applied it, and many
// can be under way at once on one subscription. A settle that returned is
// then applied: the message is gone from Stats, and a crash cannot undo
// it. Without the reply, an ack is a fire-and-forget publish.
type acker struct {
	nc     *nats.Conn
	prefix string
	sub    *nats.Subscription

	mu    sync.Mutex
	next  uint64
	waits map[uint64]chan struct{}
}

// ackTimeout bounds the wait for a confirmation the server never sends
// (the connection dropped after the ack left): the settle then reports
// an error and the message may or may not have been settled.
const ackTimeout = 10 * time.Second

// errUnconfirmed is a settle the server did not confirm in time.
var errUnconfirmed = errors.New("acknowledgement not confirmed by the server")

func newAcker(nc *nats.Conn) (*acker, error) {
	a := &acker{nc: nc, prefix: nc.NewRespInbox() + ".", waits: map[uint64]chan struct{}{}}
	sub, err := nc.Subscribe(a.prefix+"*", a.reply)
	if err != nil {
		return nil, fmt.Errorf("ack confirmations: %w", err)
	}
	a.sub = sub
	return a, nil
}

// reply closes the channel of the acknowledgement the server confirmed.
func (a *acker) reply(m *nats.Msg) {
	id, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, a.prefix), 10, 64)
	if err != nil {
		return
	}
	a.mu.Lock()
	ch := a.waits[id]
	delete(a.waits, id)
	a.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// send publishes payload to a lease's ack subject and returns what to
// wait on for the server's confirmation.
func (a *acker) send(subject string, payload []byte) (*pendingAck, error) {
	if subject == "" {
		return nil, errors.New("message has no ack subject")
	}
	ch := make(chan struct{})
	a.mu.Lock()
	a.next++
	id := a.next
	a.waits[id] = ch
	a.mu.Unlock()
	if err := a.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: a.prefix + strconv.FormatUint(id, 10), Data: payload}); err != nil {
		a.forget(id)
		return nil, err
	}
	return &pendingAck{a: a, id: id, ch: ch}, nil
}

func (a *acker) forget(id uint64) {
	a.mu.Lock()
	delete(a.waits, id)
	a.mu.Unlock()
}

// do sends payload and waits for the confirmation.
func (a *acker) do(ctx context.Context, subject string, payload []byte) error {
	p, err := a.send(subject, payload)
	if err != nil {
		return err
	}
	return p.wait(ctx)
}

// pendingAck is an acknowledgement sent and not yet confirmed.
type pendingAck struct {
	a  *acker
	id uint64
	ch chan struct{}
}

func (p *pendingAck) wait(ctx context.Context) error {
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	select {
	case <-p.ch:
		return nil
	case <-ctx.Done():
		p.a.forget(p.id)
		return ctx.Err()
	case <-t.C:
		p.a.forget(p.id)
		return errUnconfirmed
	}
}

// Acknowledgement payloads (JetStream's protocol).
var (
	ackAck  = []byte("+ACK")
	ackNak  = []byte("-NAK")
	ackTerm = []byte("+TERM")
)

// nakDelay is a Nak that redelivers after d.
func nakDelay(d time.Duration) []byte {
	if d <= 0 {
		return ackNak
	}
	return []byte(`-NAK {"delay": ` + strconv.FormatInt(int64(d), 10) + `}`)
}

// flusher confirms that the server has received what this connection
// published: one round trip covers every publish made before it started,
// so the acks of a whole receive batch are confirmed by one, and a wait
// whose publish an earlier round trip already covered returns at once.
// The round trip is a PING/PONG (nats.Conn.Flush), or, when the waiter
// offers one, the next fetch of its queue: the server reads one
// connection in order, so its answer to a pull request sent after the
// acks says as much as a PONG, and the worker that waits for its acks
// then finds its next batch already there (see queueState.fetchAhead).
type flusher struct {
	nc   *nats.Conn
	mu   sync.Mutex
	pub  uint64     // publishes noted so far
	done uint64     // publishes covered by a completed round trip
	conn uint64     // the connection (its reconnect count) done was confirmed on
	cur  *flushCall // under way
	next *flushCall // starts when cur ends

	pings atomic.Int64 // round trips that were a PING, for tests
}

type flushCall struct {
	done   chan struct{}
	err    error
	covers uint64 // the publishes noted when it started
	conn   uint64 // the connection it was made on
	// via is the round trip to try first; false (or nil via) falls back
	// to a PING.
	via func() bool
}

// errConnectionLost is a confirmation on a connection other than the
// one an acknowledgement was published on: the server may never have
// received it.
var errConnectionLost = errors.New("connection lost before the server confirmed")

// reconnects numbers the client's connections.
func (f *flusher) reconnects() uint64 { return f.nc.Stats().Reconnects }

// note records a publish just made and returns its number and the
// connection it went out on, for wait.
func (f *flusher) note() (seq, conn uint64) {
	conn = f.reconnects()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pub++
	return f.pub, conn
}

// wait returns once a round trip that covers publish seq, made on
// connection conn, has completed. A new round trip it starts is via when
// via is not nil.
func (f *flusher) wait(ctx context.Context, seq, conn uint64, via func() bool) error {
	f.mu.Lock()
	if f.done >= seq {
		ok := f.conn == conn
		f.mu.Unlock()
		if !ok {
			return errConnectionLost
		}
		return nil
	}
	c := f.cur
	if c == nil || c.covers < seq {
		if c = f.next; c == nil {
			c = &flushCall{done: make(chan struct{}), via: via}
			f.next = c
			if f.cur == nil {
				f.startLocked()
			}
		}
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		if c.err == nil && c.conn != conn {
			return errConnectionLost
		}
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *flusher) startLocked() {
	c := f.next
	f.next, f.cur = nil, c
	c.covers = f.pub
	go func() {
		conn := f.reconnects()
		var err error
		if c.via == nil || !c.via() {
			f.pings.Add(1)
			err = f.nc.FlushTimeout(ackTimeout)
		}
		if err == nil && f.reconnects() != conn {
			err = errConnectionLost
		}
		f.mu.Lock()
		c.err, c.conn = err, conn
		if err == nil && c.covers > f.done {
			f.done, f.conn = c.covers, conn
		}
		f.cur = nil
		if f.next != nil {
			f.startLocked()
		}
		f.mu.Unlock()
		close(c.done)
	}()
}
