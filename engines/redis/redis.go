package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// Options configure an engine.
type Options struct {
	// URL is redis://[user:password@]host:port/db or rediss:// for TLS.
	URL string
	// Username and Password override those in URL when set.
	Username string
	Password string
	// TLSCA is a PEM file of the CAs that sign the server's certificate
	// (default: the system's); TLSCert and TLSKey a client certificate.
	// Any of them turns TLS on, as rediss:// does.
	TLSCA, TLSCert, TLSKey string
	// TLSServerName is the name the server's certificate must hold
	// (default: the host in URL).
	TLSServerName string
	// KeyPrefix begins every key the engine writes; default "qrun:".
	KeyPrefix string
	// PoolSize is the number of connections; default 10 per CPU, as
	// go-redis.
	PoolSize int
	// DedupWindow is how long a DedupID is remembered; default 5 minutes.
	DedupWindow time.Duration
	// MaxMessageSize is the largest body accepted; default 64 MiB.
	MaxMessageSize int
	// BlockInterval bounds one blocking wait for new entries: a waiting
	// Receive notices its context ending, its handle closing, a delay
	// ending or a lease expiring within it; default 200ms.
	BlockInterval time.Duration
	// Logger receives the engine's logs; nil logs nothing.
	Logger *zap.Logger
	// Events counts errors and reconnects; nil counts nothing.
	Events engines.Events
	// Producer opens the engine only to enqueue (qrun send): no reaper.
	Producer bool
}

// Defaults.
const (
	DefaultKeyPrefix      = "qrun:"
	DefaultDedupWindow    = 5 * time.Minute
	DefaultMaxMessageSize = 64 << 20
	DefaultBlockInterval  = 200 * time.Millisecond
)

// group is the consumer group of every queue's stream. Receives read as a
// consumer named after their batch's lease token, deleted with the lease;
// consumer is the name Purge reads as (and deletes when done, with
// nothing pending), so no consumer outlives its use however processes come
// and go. It is not "qrun", the one consumer every node read as before
// leases were per batch: entries such an engine left pending are the
// orphan sweep's (orphanScript), not Purge's to drop.
const (
	group    = "qrun"
	consumer = "qrun-purge"
)

// Engine is a Redis Streams engine: its queues live in one Redis server,
// shared by every qrun process that reaches it.
type Engine struct {
	opts   Options
	client *redis.Client
	log    *zap.Logger
	events engines.Events
	outage outage
	// aheadHold is how long a batch leased ahead waits for a Receive
	// (prefetch.go), and linger how long a started settle waits to be
	// sent: the constants aheadHold and settleLinger, or a test's own.
	aheadHold, linger time.Duration

	mu     sync.Mutex
	closed bool
	done   chan struct{}
	queues map[*queue]struct{}
}

// New connects to the server named by opts.URL and checks that it answers.
func New(ctx context.Context, opts Options) (*Engine, error) {
	ro, err := clientOptions(&opts)
	if err != nil {
		return nil, err
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	if opts.DedupWindow == 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.MaxMessageSize == 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	if opts.BlockInterval == 0 {
		opts.BlockInterval = DefaultBlockInterval
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	events := opts.Events
	if events == nil {
		events = engines.NopEvents{}
	}
	e := &Engine{opts: opts, log: log, events: events, aheadHold: aheadHold, linger: settleLinger, done: make(chan struct{}), queues: map[*queue]struct{}{}}
	e.outage.log, e.outage.events = log, events
	e.client = redis.NewClient(ro)
	if err := e.client.Ping(ctx).Err(); err != nil {
		_ = e.client.Close()
		return nil, fmt.Errorf("redis: connect to %s: %w", ro.Addr, err)
	}
	for _, s := range []*redis.Script{enqueueScript, receiveScript, settleScript, extendScript, purgeScript, redriveScript} {
		if err := s.Load(ctx, e.client).Err(); err != nil {
			_ = e.client.Close()
			return nil, fmt.Errorf("redis: load scripts into %s: %w", ro.Addr, err)
		}
	}
	if !opts.Producer {
		e.checkDurability(ctx)
	}
	return e, nil
}

// checkDurability warns when the server would lose acknowledged writes in
// a crash: Capabilities().Durable holds only with appendfsync always.
// Servers that forbid CONFIG (managed services) are not checked.
func (e *Engine) checkDurability(ctx context.Context) {
	v, err := e.client.ConfigGet(ctx, "appendfsync").Result()
	if err != nil {
		return
	}
	aof, _ := e.client.ConfigGet(ctx, "appendonly").Result()
	if aof["appendonly"] != "yes" || v["appendfsync"] != "always" {
		e.log.Warn("redis server may lose acknowledged messages in a crash; set appendonly yes and appendfsync always",
			zap.String("appendonly", aof["appendonly"]), zap.String("appendfsync", v["appendfsync"]))
	}
}

// clientOptions turns Options into go-redis's.
func clientOptions(o *Options) (*redis.Options, error) {
	if o.URL == "" {
		return nil, fmt.Errorf("redis: no url: %w", engines.ErrInvalid)
	}
	ro, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: url: %v: %w", err, engines.ErrInvalid)
	}
	if o.Username != "" {
		ro.Username = o.Username
	}
	if o.Password != "" {
		ro.Password = o.Password
	}
	if o.PoolSize > 0 {
		ro.PoolSize = o.PoolSize
	}
	// No silent retries inside go-redis: a script whose reply was lost may
	// have run, and only the engine knows whether running it again is safe
	// (Receive retries with backoff; Enqueue and settles report the error).
	ro.MaxRetries = -1
	if o.TLSCA != "" || o.TLSCert != "" || o.TLSKey != "" || o.TLSServerName != "" {
		if ro.TLSConfig == nil {
			ro.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if ro.TLSConfig.ServerName == "" {
			ro.TLSConfig.ServerName, _, _ = cutPort(ro.Addr)
		}
		if o.TLSServerName != "" {
			ro.TLSConfig.ServerName = o.TLSServerName
		}
		if o.TLSCA != "" {
			pem, err := os.ReadFile(o.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("redis: tls_ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("redis: tls_ca %s holds no PEM certificate: %w", o.TLSCA, engines.ErrInvalid)
			}
			ro.TLSConfig.RootCAs = pool
		}
		if (o.TLSCert == "") != (o.TLSKey == "") {
			return nil, fmt.Errorf("redis: tls_cert and tls_key go together: %w", engines.ErrInvalid)
		}
		if o.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
			if err != nil {
				return nil, fmt.Errorf("redis: client certificate: %w", err)
			}
			ro.TLSConfig.Certificates = []tls.Certificate{cert}
		}
	}
	return ro, nil
}

func cutPort(addr string) (host, port string, ok bool) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:], true
		}
	}
	return addr, "", false
}

// Capabilities implements engines.Engine.
func (e *Engine) Capabilities() engines.Capabilities { return capabilities(e.opts) }

// Client is the engine's go-redis client, for tests and tools that look at
// the keys underneath.
func (e *Engine) Client() *redis.Client { return e.client }

// Close implements engines.Engine: it closes every queue handle and the
// connections.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return engines.ErrClosed
	}
	e.closed = true
	close(e.done)
	qs := make([]*queue, 0, len(e.queues))
	for q := range e.queues {
		qs = append(qs, q)
	}
	e.mu.Unlock()
	for _, q := range qs {
		_ = q.Close()
	}
	return e.client.Close()
}

// outage logs one line when the server stops answering and one when it
// answers again, however many calls fail in between.
type outage struct {
	log    *zap.Logger
	events engines.Events
	mu     sync.Mutex
	since  time.Time // zero while the server answers
}

// fail records a failed call to the server.
func (o *outage) fail(op string, err error) {
	o.events.Error(op, err)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		o.since = time.Now()
		o.log.Warn("redis unreachable; retrying with backoff", zap.String("op", op), zap.Error(err))
	}
}

// ok records a call that succeeded.
func (o *outage) ok() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.since.IsZero() {
		o.log.Info("redis connection recovered", zap.Duration("outage", time.Since(o.since)))
		o.since = time.Time{}
		o.events.Reconnected()
	}
}

// down reports whether an outage is in progress.
func (o *outage) down() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.since.IsZero()
}

// retryable tells a failure of the connection, worth retrying, from a
// reply the server gave.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var re redis.Error
	return !errors.As(err, &re) || redis.HasErrorPrefix(err, "LOADING") || redis.HasErrorPrefix(err, "NOSCRIPT")
}

// SilenceLibraryLog stops go-redis writing its own log lines (one per
// failed dial of every pooled connection) to stderr: the engine reports an
// outage itself, once, through its zap logger. go-redis's logger is
// process-wide, so the program decides: qrun's main calls this, and a Go
// program embedding the engine may.
func SilenceLibraryLog() { redis.SetLogger(discardLog{}) }

// discardLog is a go-redis logger that writes nothing.
type discardLog struct{}

// Printf implements go-redis's internal.Logging.
func (discardLog) Printf(context.Context, string, ...any) {}
