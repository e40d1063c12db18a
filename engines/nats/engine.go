package nats

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// Options configure a nats engine. Zero fields take the defaults below.
type Options struct {
	// URLs of the servers of one cluster; default nats://127.0.0.1:4222.
	URLs []string
	// User and Password, Token, or CredsFile (a .creds file with a JWT
	// and an nkey seed) authenticate; at most one kind.
	User, Password, Token, CredsFile string
	// TLSCA verifies the server; TLSCert and TLSKey are a client
	// certificate. Any of them turns TLS on.
	TLSCA, TLSCert, TLSKey string
	// Prefix starts every stream and bucket name the engine makes, and
	// the subjects ("qrun." + Prefix + queue); default "qrun_".
	Prefix string
	// Replicas of each stream; default 1.
	Replicas int
	// Memory keeps streams in the servers' memory: faster, and lost
	// when a server stops (the engine is then not Durable).
	Memory bool
	// DedupWindow is how long a DedupID is remembered; default 2m.
	DedupWindow time.Duration
	// AckMargin is how much longer than the visibility timeout the
	// server's ack wait is. While a node runs, its own timer ends an
	// unsettled lease at the visibility timeout; the server's ack wait
	// only takes back the leases of a node that died. Default 1s.
	AckMargin time.Duration
	// MaxAckWait caps the server's ack wait: a queue with a longer
	// visibility timeout gets this one, and a live node restarts it
	// (InProgress) for the leases it holds longer, so a dead node's
	// leases come back within MaxAckWait whatever the timeout. Default 15s.
	MaxAckWait time.Duration
	// MaxAckPending bounds the leases (and messages waiting out a nack
	// delay) a queue's consumer has outstanding; default 100000.
	MaxAckPending int
	// MaxMessageSize is the largest body accepted; default 1 MiB, the
	// servers' default max_payload (headers count against it too).
	MaxMessageSize int
	// Logger receives the engine's logs; nil logs nothing.
	Logger *zap.Logger
	// Events counts errors and reconnects in the runtime's metrics.
	Events engines.Events
	// Producer: opened only to enqueue (qrun send).
	Producer bool
}

// Defaults.
const (
	DefaultPrefix        = "qrun_"
	DefaultDedupWindow   = 2 * time.Minute
	DefaultAckMargin     = time.Second
	DefaultMaxAckPending = 100000
	DefaultMaxAckWait    = 15 * time.Second
	DefaultMaxMessage    = 1 << 20
	consumerName         = "qrun"
	// headerRoom is what a message's qrun header may take of the
	// server's max_payload beyond the body.
	headerRoom = 4096
)

func (o *Options) defaults() {
	if len(o.URLs) == 0 {
		o.URLs = []string{nats.DefaultURL}
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.DedupWindow == 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.AckMargin == 0 {
		o.AckMargin = DefaultAckMargin
	}
	if o.MaxAckWait == 0 {
		o.MaxAckWait = DefaultMaxAckWait
	}
	if o.MaxAckPending == 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessage
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Events == nil {
		o.Events = engines.NopEvents{}
	}
}

// Engine is a connection to a NATS server with JetStream and the queues
// opened through it.
type Engine struct {
	opts  Options
	nc    *nats.Conn
	js    jetstream.JetStream
	state jetstream.KeyValue
	acks  *acker
	flush *flusher
	log   *zap.Logger

	mu     sync.Mutex
	queues map[string]*queueState
	closed bool
	done   chan struct{}
}

var _ engines.Engine = (*Engine)(nil)

// New connects to the servers and opens the engine's state bucket. A
// connection lost later is retried with backoff for as long as the
// engine is open: one log line when it is lost, one when it is back.
func New(ctx context.Context, opts Options) (*Engine, error) {
	opts.defaults()
	if err := checkPrefix(opts.Prefix); err != nil {
		return nil, fmt.Errorf("nats engine: prefix %q: %w", opts.Prefix, err)
	}
	e := &Engine{opts: opts, log: opts.Logger, queues: map[string]*queueState{}, done: make(chan struct{})}
	nopts := []nats.Option{
		nats.Name("qrun"),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if e.isClosed() {
				return // our own Close, no outage
			}
			// Once per outage: the client calls it when the connection
			// drops, not on each failed attempt to reconnect.
			e.log.Warn("nats connection lost; reconnecting with backoff", zap.Error(err))
			opts.Events.Error("connect", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			e.log.Info("nats connection recovered", zap.String("server", nc.ConnectedUrlRedacted()))
			opts.Events.Reconnected()
		}),
	}
	switch {
	case opts.User != "":
		nopts = append(nopts, nats.UserInfo(opts.User, opts.Password))
	case opts.Token != "":
		nopts = append(nopts, nats.Token(opts.Token))
	case opts.CredsFile != "":
		nopts = append(nopts, nats.UserCredentials(opts.CredsFile))
	}
	if opts.TLSCA != "" {
		nopts = append(nopts, nats.RootCAs(opts.TLSCA))
	}
	if opts.TLSCert != "" {
		nopts = append(nopts, nats.ClientCert(opts.TLSCert, opts.TLSKey))
	}
	if dl, ok := ctx.Deadline(); ok {
		nopts = append(nopts, nats.Timeout(time.Until(dl)))
	}
	url := opts.URLs[0]
	for _, u := range opts.URLs[1:] {
		url += "," + u
	}
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return nil, fmt.Errorf("nats engine: connect %s: %w", redact(opts.URLs), err)
	}
	e.nc = nc
	if e.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats engine: jetstream: %w", err)
	}
	if limit := int(nc.MaxPayload()) - headerRoom; e.opts.MaxMessageSize > limit {
		if opts.MaxMessageSize != DefaultMaxMessage {
			nc.Close()
			return nil, fmt.Errorf("nats engine: max_message_size %d is more than the server's max_payload %d allows (%d): %w", opts.MaxMessageSize, nc.MaxPayload(), limit, engines.ErrInvalid)
		}
		e.opts.MaxMessageSize = limit
	}
	e.flush = &flusher{nc: nc}
	if e.acks, err = newAcker(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats engine: %w", err)
	}
	if !opts.Producer {
		e.state, err = e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      opts.Prefix + "state",
			Description: "qrun: per-message delivery history (failures, holds) of messages handed back",
			Storage:     e.storageType(),
			Replicas:    opts.Replicas,
		})
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("nats engine: state bucket %s: %w", opts.Prefix+"state", err)
		}
	}
	return e, nil
}

// reconnectDelay is the wait before reconnect attempt n: doubling from
// 100ms to 5s, with jitter so that many nodes do not reconnect in step.
func reconnectDelay(attempts int) time.Duration {
	d := 100 * time.Millisecond << min(attempts, 6)
	d = min(d, 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

// redact drops credentials from URLs for error messages.
func redact(urls []string) string {
	out := ""
	for i, u := range urls {
		if at := strings.LastIndexByte(u, '@'); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 {
				u = u[:s+3] + "***" + u[at:]
			}
		}
		if i > 0 {
			out += ","
		}
		out += u
	}
	return out
}

func (e *Engine) storageType() jetstream.StorageType {
	if e.opts.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// Capabilities implements engines.Engine.
func (e *Engine) Capabilities() engines.Capabilities { return capabilities(e.opts) }

// Close implements engines.Engine. Leases held stay with the server until
// their ack wait runs out.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return engines.ErrClosed
	}
	e.closed = true
	close(e.done)
	qs := make([]*queueState, 0, len(e.queues))
	for _, q := range e.queues {
		qs = append(qs, q)
	}
	e.mu.Unlock()
	for _, q := range qs {
		q.release()
	}
	_ = e.nc.Flush()
	e.nc.Close()
	return nil
}

// Conn is the engine's NATS connection, for tests and tools.
func (e *Engine) Conn() *nats.Conn { return e.nc }

// isClosed reports whether Close was called.
func (e *Engine) isClosed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// transient reports whether err is worth retrying: anything but a closed
// connection or an ended context.
func transient(err error) bool {
	return !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// ackWait is the server's ack wait for a queue whose visibility timeout
// is vt: a little longer, so the holder's own timer ends the lease first,
// and at most MaxAckWait.
func (e *Engine) ackWait(vt time.Duration) time.Duration {
	return min(vt+e.opts.AckMargin, max(e.opts.MaxAckWait, e.opts.AckMargin))
}
