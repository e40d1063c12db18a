package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// Defaults for Options left zero.
const (
	DefaultSchema         = "qrun"
	DefaultMaxConns       = 10
	DefaultPollInterval   = time.Second
	DefaultDedupWindow    = 5 * time.Minute
	DefaultMaxMessageSize = 64 << 20
	// maxMessageSizeLimit is below PostgreSQL's 1 GiB field limit, leaving
	// room for the protocol's own framing.
	maxMessageSizeLimit = 512 << 20
	// maxNameLen bounds queue, topic and subscription names.
	maxNameLen = 200
)

// Sentinel errors of this engine; the engines.Err* sentinels cover the rest.
var (
	// ErrConfig reports unusable Options.
	ErrConfig = errors.New("postgres: invalid configuration")
	// ErrSchemaVersion reports a schema that is not at the version this
	// build expects (migrations disabled, or written by a newer qrun).
	ErrSchemaVersion = errors.New("postgres: schema version mismatch")
)

// Topic is a fan-out topic: a message published to it is copied into each
// subscription queue.
type Topic struct {
	Name string
	// Subscriptions are the names of the queues that receive the copies.
	Subscriptions []string
}

// Options configure an Engine.
type Options struct {
	// DSN is a libpq connection string or URL.
	DSN string
	// Schema holds the engine's tables and functions (default "qrun").
	Schema string
	// MaxConns caps the connection pool (default 10); the listener uses one
	// more connection of its own.
	MaxConns int32
	// StatementTimeout, when positive, is set as the sessions'
	// statement_timeout so a stuck statement fails instead of hanging.
	StatementTimeout time.Duration
	// NoMigrate skips the automatic migration at New; the schema must then
	// be at SchemaVersion() already (see Migrate and `qrun migrate`).
	NoMigrate bool
	// Producer opens the engine only to enqueue, as `qrun send` does: New
	// neither migrates (as with NoMigrate, the schema must be current) nor
	// declares Topics, and of the background loops starts only the one
	// that NOTIFYs other processes of new messages: no listener, no
	// reaper, no batched acks (an ack is written before it returns). Leases
	// a producer takes are not reaped by it: the consuming qrun's reaper
	// does that.
	Producer bool
	// PollInterval is how often an idle receiver and the reaper look at the
	// database without being woken (default 1s). LISTEN/NOTIFY wakes
	// receivers at once; polling is the fallback when notifications are
	// lost, e.g. while the listener reconnects.
	PollInterval time.Duration
	// DedupWindow is how long a DedupID suppresses repeats (default 5m).
	DedupWindow time.Duration
	// MaxMessageSize is the largest body accepted (default 64 MiB).
	MaxMessageSize int
	// Topics are declared at New: created if missing, and their
	// subscriptions set to exactly the listed queues.
	Topics []Topic
	// Logger receives the engine's logs (default: none).
	Logger *zap.Logger
	// Events is told of connections re-established after one was lost
	// (the LISTEN connection, or a pool connection after a broken one was
	// dropped) and of LISTEN connection failures (op "listen").
	Events engines.Events
}

func (o *Options) defaults() error {
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if err := checkSchemaName(o.Schema); err != nil {
		return err
	}
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.Events == nil {
		o.Events = engines.NopEvents{}
	}
	if o.MaxConns < 2 {
		return fmt.Errorf("postgres: max_conns %d: need at least 2: %w", o.MaxConns, ErrConfig)
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.PollInterval < time.Millisecond {
		return fmt.Errorf("postgres: poll_interval %v: need at least 1ms: %w", o.PollInterval, ErrConfig)
	}
	if o.DedupWindow == 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.DedupWindow < 0 || o.StatementTimeout < 0 {
		return fmt.Errorf("postgres: negative duration in options: %w", ErrConfig)
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.MaxMessageSize < 0 || o.MaxMessageSize > maxMessageSizeLimit {
		return fmt.Errorf("postgres: max_message_size %d: must be 1 to %d bytes: %w", o.MaxMessageSize, maxMessageSizeLimit, ErrConfig)
	}
	for _, t := range o.Topics {
		if err := checkName(t.Name); err != nil {
			return fmt.Errorf("postgres: topic: %w", err)
		}
		for _, s := range t.Subscriptions {
			if err := checkName(s); err != nil {
				return fmt.Errorf("postgres: topic %q subscription: %w", t.Name, err)
			}
			if s == t.Name {
				return fmt.Errorf("postgres: topic %q cannot subscribe to itself: %w", t.Name, ErrConfig)
			}
		}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return nil
}

// Engine is a PostgreSQL-backed engine. Several Engines, in one process or
// on many machines, may share one schema: that is how qrun nodes share work.
type Engine struct {
	opts    Options
	log     *zap.Logger
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig // for the listener's own connection
	sql     statements
	channel string
	epoch   time.Time

	ctx    context.Context // ends at Close; stops the background loops
	cancel context.CancelFunc
	loops  []string // names of the background loops started, for tests
	wg     sync.WaitGroup
	closed atomic.Bool

	wakeMu  sync.Mutex
	waiters map[int32]*waiter

	listening atomic.Bool
	notify    *notifier
	acks      *acker
	reaper    *reaper
	slots     slotKeeper // per-key concurrency slots (slots.go)

	// kv is what kv.go keeps: the value limits of opened stores and the
	// handles SettleTx publishes through.
	kv    kvState
	sqlKV kvSQL

	// leaseSent, set only by tests and before any Receive, is called with
	// the queue's name once a Receive's leasing statement is sent and
	// before its results are read: the moment a cancellation must not
	// cost the leases.
	leaseSent func(queue string)
}

var _ engines.Engine = (*Engine)(nil)

// New connects, migrates the schema (unless NoMigrate), declares the
// topics and starts the engine's background work: the listener, the reaper
// of expired leases and due messages, the ack batcher and the notifier.
func New(ctx context.Context, opts Options) (*Engine, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: dsn: %w: %w", err, ErrConfig)
	}
	pcfg.MaxConns = opts.MaxConns
	if opts.StatementTimeout > 0 {
		pcfg.ConnConfig.RuntimeParams["statement_timeout"] = fmt.Sprint(opts.StatementTimeout.Milliseconds())
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "qrun"
	// A pool connection found broken (closed under the pool) marks the pool
	// as having lost one; the next connection it makes is a reconnect.
	var lost atomic.Bool
	pcfg.BeforeClose = func(c *pgx.Conn) {
		if c.IsClosed() {
			lost.Store(true)
		}
	}
	pcfg.AfterConnect = func(context.Context, *pgx.Conn) error {
		if lost.Swap(false) {
			opts.Events.Reconnected()
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	e := &Engine{
		opts: opts,
		// "engine_type", not "engine": the runtime names the engine (its
		// config name) under "engine", and JSON keys must not repeat.
		log:     opts.Logger.With(zap.String("engine_type", "postgres"), zap.String("schema", opts.Schema)),
		pool:    pool,
		connCfg: pcfg.ConnConfig.Copy(),
		sql:     newStatements(pgx.Identifier{opts.Schema}.Sanitize()),
		sqlKV:   kvStatements(pgx.Identifier{opts.Schema}.Sanitize()),
		channel: channelName(opts.Schema),
		epoch:   time.Now(),
		waiters: make(map[int32]*waiter),
	}
	if err := e.prepare(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.notify = newNotifier(e)
	e.acks = newAcker(e)
	e.reaper = newReaper(e)
	e.start("notify", e.notify.run)
	if !opts.Producer {
		e.start("listen", e.listen)
		e.start("acks", e.acks.run)
		e.start("reaper", e.reaper.run)
	}
	return e, nil
}

// start runs f until the engine closes; name is kept for tests.
func (e *Engine) start(name string, f func()) {
	e.loops = append(e.loops, name)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}

// prepare migrates (or checks the version) and declares the topics.
func (e *Engine) prepare(ctx context.Context) error {
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: connect: %w", err)
	}
	defer conn.Release()
	if !e.opts.NoMigrate && !e.opts.Producer {
		applied, err := Migrate(ctx, conn.Conn(), e.opts.Schema)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			e.log.Info("schema migrated", zap.Ints("versions", applied))
		}
	} else {
		v, err := schemaVersion(ctx, conn, e.opts.Schema)
		if err != nil {
			return fmt.Errorf("postgres: read schema version: %w", err)
		}
		if want := SchemaVersion(); v != want {
			return fmt.Errorf("postgres: schema %s is at version %d, this qrun needs %d; run `qrun migrate` or enable migrate: %w", e.opts.Schema, v, want, ErrSchemaVersion)
		}
	}
	if e.opts.Producer {
		return nil // the topics are the consuming qrun's to declare
	}
	for _, t := range e.opts.Topics {
		if err := e.declareTopic(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// Capabilities reports the full contract: the database makes queues
// durable and shared by every process and machine that reaches it.
func (e *Engine) Capabilities() engines.Capabilities {
	return capabilities(e.opts)
}

// Close stops the background work, writes pending acks (waiting a few
// seconds at most) and closes the pool. Blocked receivers return ErrClosed.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.cancel()
	e.wakeAll()
	e.wg.Wait()
	e.closeSlots()
	e.pool.Close()
	return nil
}

// Pool is the engine's connection pool, for tools and tests that run their
// own SQL next to the engine.
func (e *Engine) Pool() *pgxpool.Pool { return e.pool }

func (e *Engine) errClosed(op, name string) error {
	return fmt.Errorf("postgres: %s %q: %w", op, name, engines.ErrClosed)
}

// now is the engine's monotonic clock, in nanoseconds since New.
func (e *Engine) now() int64 { return int64(time.Since(e.epoch)) }

func (e *Engine) wall(t int64) time.Time { return e.epoch.Add(time.Duration(t)) }

// Open returns a handle on the named queue or topic, creating a queue if
// needed. A spec with only a Name attaches to the queue as it is; a fuller
// spec becomes its settings (the latest Open wins, in every process).
func (e *Engine) Open(ctx context.Context, spec engines.QueueSpec) (engines.Queue, error) {
	if err := checkName(spec.Name); err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	// Validate also refuses a NaN multiplier or jitter, which matters most
	// here: the reaper computes every queue's backoff in one statement, so
	// one NaN would fail it for all of them.
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("postgres: open %q: %w", spec.Name, err)
	}
	if spec.DeadLetter != "" {
		if err := checkName(spec.DeadLetter); err != nil {
			return nil, fmt.Errorf("postgres: open %q: dead letter: %w", spec.Name, err)
		}
	}
	if e.closed.Load() {
		return nil, e.errClosed("open", spec.Name)
	}
	var (
		id      int32
		kind    string
		ordered bool
	)
	if spec == (engines.QueueSpec{Name: spec.Name}) {
		err := e.pool.QueryRow(ctx, e.sql.openName, spec.Name).Scan(&id, &kind, &ordered)
		if err != nil {
			return nil, e.opErr("open", spec.Name, err)
		}
	} else {
		vt := spec.VisibilityTimeout
		if vt == 0 {
			vt = engines.DefaultVisibilityTimeout
		}
		// Capped where "practically forever" still fits a timestamp.
		vtms := min(max(vt.Milliseconds(), 1), forever.Milliseconds())
		var dl *string
		if spec.DeadLetter != "" {
			dl = &spec.DeadLetter
		}
		initialUs, maxUs := retryMicros(spec.Retry.Initial), retryMicros(spec.Retry.Max)
		err := e.pool.QueryRow(ctx, e.sql.openSpec, spec.Name, vtms, int32(min(spec.MaxAttempts, 1<<31-1)), dl, spec.Ordered,
			initialUs, maxUs, spec.Retry.Multiplier, spec.Retry.Jitter).Scan(&id, &kind, &ordered)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("postgres: open %q: cannot change Ordered to %v while the queue holds messages: %w", spec.Name, spec.Ordered, engines.ErrInvalid)
		}
		if err != nil {
			return nil, e.opErr("open", spec.Name, err)
		}
	}
	return &handle{e: e, name: spec.Name, id: id, topic: kind == "topic", ordered: ordered, done: make(chan struct{})}, nil
}

// retryMicros stores a retry duration for the reaper, which computes in
// microseconds: zero or less is none (as RetryPolicy.Delay reads it), a
// positive duration is at least 1µs so it is not lost to rounding, and it is
// capped at forever so now() plus it is still a timestamp. The conversion
// depends on the duration alone, so every process opening the queue with the
// same config stores the same value.
func retryMicros(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return min(max(d.Microseconds(), 1), forever.Microseconds())
}

// opErr wraps a database error, reporting ErrClosed once the engine closed
// (its pool is gone, whatever pgx says) and the context's own error when
// that is what ended the call.
func (e *Engine) opErr(op, name string, err error) error {
	if e.closed.Load() {
		return e.errClosed(op, name)
	}
	return fmt.Errorf("postgres: %s %q: %w", op, name, err)
}

// declareTopic creates a topic, its subscription queues, and sets its
// subscriptions to exactly t.Subscriptions.
func (e *Engine) declareTopic(ctx context.Context, t Topic) error {
	subs := t.Subscriptions
	if subs == nil {
		subs = []string{}
	}
	if _, err := e.pool.Exec(ctx, e.sql.declareTopic, t.Name, subs); err != nil {
		return fmt.Errorf("postgres: declare topic %q: %w", t.Name, err)
	}
	return nil
}

// Subscribe adds queue as a subscription of topic, creating both if needed.
// Messages published from then on are copied to it.
func (e *Engine) Subscribe(ctx context.Context, topic, queue string) error {
	if err := checkName(topic); err != nil {
		return fmt.Errorf("postgres: subscribe: %w", err)
	}
	if err := checkName(queue); err != nil {
		return fmt.Errorf("postgres: subscribe: %w", err)
	}
	if topic == queue {
		return fmt.Errorf("postgres: topic %q cannot subscribe to itself: %w", topic, engines.ErrInvalid)
	}
	if _, err := e.pool.Exec(ctx, e.sql.subscribe, topic, queue); err != nil {
		return fmt.Errorf("postgres: subscribe %q to %q: %w", queue, topic, err)
	}
	return nil
}

// Unsubscribe removes queue from topic's subscriptions; the queue and the
// copies it already holds stay.
func (e *Engine) Unsubscribe(ctx context.Context, topic, queue string) error {
	if _, err := e.pool.Exec(ctx, e.sql.unsubscribe, topic, queue); err != nil {
		return fmt.Errorf("postgres: unsubscribe %q from %q: %w", queue, topic, err)
	}
	return nil
}

// checkName accepts what a text column stores exactly: valid UTF-8 without
// NUL, 1 to maxNameLen bytes.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty queue name: %w", engines.ErrInvalid)
	case len(name) > maxNameLen:
		return fmt.Errorf("queue name of %d bytes, limit %d: %w", len(name), maxNameLen, engines.ErrInvalid)
	case !validText(name):
		return fmt.Errorf("queue name %q is not valid UTF-8 without NUL: %w", name, engines.ErrInvalid)
	}
	return nil
}

// validText reports whether PostgreSQL's text type can hold s unchanged.
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// querier is what pgx.Conn, pgxpool.Pool and pgx.Tx have in common.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}
