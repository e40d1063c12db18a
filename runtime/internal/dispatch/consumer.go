// Package dispatch runs consumers: it receives deliveries from a queue, hands
// each to a plugin instance and applies the verdict to the engine.
//
// Each of a consumer's workers owns one plugin instance (instances are not
// goroutine-safe) and receives its own batches, so the delivery path has no
// hand-off between goroutines and no shared lock of the runtime's. The retry
// policy lives here, not in engines: the engine counts attempts and moves a
// message to its dead-letter queue, the dispatcher decides how long a failed
// message waits.
//
// Instances of a hot-swappable plugin implement Replaceable: before each
// delivery a worker asks its instance whether its version still serves and
// replaces it if not, so a swap never fails a delivery.
package dispatch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/internal/lograte"
	"github.com/qrun-dev/qrun/runtime/internal/throttle"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// Instance is one plugin instance, used by one worker at a time.
type Instance interface {
	// Handle runs one delivery; start is the worker's clock reading for it
	// (see plugin.Instance.Handle), so the instance need not read the
	// clock again.
	Handle(ctx context.Context, d *engines.Delivery, start time.Time) plugin.Result
	Broken() bool
	Close(ctx context.Context) error
}

// Observer is told about every settled delivery; it must be cheap and safe
// for concurrent use (metrics, benchmarks).
type Observer interface {
	Settled(d *engines.Delivery, v engines.Verdict, handled time.Duration)
}

// StartObserver is an Observer that is also told when a delivery is about
// to be handed to the plugin; the same rules apply.
type StartObserver interface {
	Observer
	Started(d *engines.Delivery)
}

// Config describes one consumer.
type Config struct {
	// Name of the consumer, for logs.
	Name string
	// Queue to consume.
	Queue engines.Queue
	// NewInstance creates a ready plugin instance (initialised).
	NewInstance func(ctx context.Context) (Instance, error)
	// Concurrency is the number of deliveries handled at once (workers).
	Concurrency int
	// Batch caps how many messages a worker leases per Receive.
	Batch int
	// VisibilityTimeout of the queue; workers size batches so that a whole
	// batch is handled well within one lease.
	VisibilityTimeout time.Duration
	// HandlerTimeout is the longest one plugin call may take (the plugin's
	// timeout; the host stops a call within twice that). A delivery whose
	// lease has less than twice that left (or less than three quarters of
	// VisibilityTimeout, if that is smaller) is extended before it is
	// handled, so a batch that took longer than planned never has its tail
	// expire unseen.
	HandlerTimeout time.Duration
	// Retry computes the delay after a failure.
	Retry RetryPolicy
	// PerMessage gives every delivery a fresh instance, for handlers that
	// must not carry state from one message to the next.
	PerMessage bool
	// Logger receives the consumer's logs.
	Logger *zap.Logger
	// Observer, if set, sees every settled delivery.
	Observer Observer
	// RecordLatency keeps a histogram of handler call durations (Latency),
	// for metrics. It costs two uncontended atomic adds per delivery.
	RecordLatency bool
	// OnCommit, if set, is told the outcome of every commit of a
	// delivery's effects (plugin.Result.Effects) with its ack: nil,
	// engines.ErrConflict (the delivery was requeued), or another error.
	// It must be cheap and safe for concurrent use (per-store metrics).
	OnCommit func(e *engines.Effects, err error)
	// CrashPause is the first pause of a worker whose instance broke
	// CrashLoopAfter deliveries in a row (see worker.crashLoop); zero means
	// DefaultCrashPause.
	CrashPause time.Duration
	// Throttle, if set, holds deliveries back to rate limits and per-key
	// caps; a delivery waits with its lease kept alive (throttle.go).
	Throttle *throttle.Throttle
}

// CrashLoopAfter is how many deliveries in a row must break their instance
// (trap, timeout, bad verdict) before a worker pauses between them.
const CrashLoopAfter = 3

// DefaultCrashPause is the first pause of a crash-looping worker; each
// further broken instance doubles it, up to MaxCrashPause.
const DefaultCrashPause = 10 * time.Millisecond

// MaxCrashPause bounds a crash-looping worker's pause.
const MaxCrashPause = time.Second

// Stats are a consumer's counters since it started.
type Stats struct {
	Acked        int64 `json:"acked"`
	Nacked       int64 `json:"nacked"`
	Requeued     int64 `json:"requeued"`
	DeadLettered int64 `json:"dead_lettered"`
	Traps        int64 `json:"traps"`
	Timeouts     int64 `json:"timeouts"`
	BadVerdicts  int64 `json:"bad_verdicts"`
	LeaseLost    int64 `json:"lease_lost"`
	Released     int64 `json:"released"`
	// CrashPauses counts the pauses of workers whose instances kept
	// breaking (Config.CrashPause).
	CrashPauses int64 `json:"crash_pauses"`
	// InstanceErrors counts plugin instances that failed to start.
	InstanceErrors int64 `json:"instance_errors"`
	// EngineErrors counts failed receives and verdicts the engine did not take.
	EngineErrors int64 `json:"engine_errors"`
	// Conflicts counts deliveries whose effects conflicted at commit and
	// were requeued without a failure (tx.go).
	Conflicts int64 `json:"conflicts"`
	Instances int64 `json:"instances"`
	InFlight  int64 `json:"in_flight"`
}

// counters belong to one worker, so workers on different cores never write
// the same cache line; Stats adds them up.
type counters struct {
	acked, nacked, requeued, deadLettered      atomic.Int64
	traps, timeouts, badVerdicts, leaseLost    atomic.Int64
	released, instances, inFlight, instanceErr atomic.Int64
	engineErr, crashPauses, conflicts          atomic.Int64
	_                                          [64]byte // keep the next worker's counters off this line
}

// Consumer runs a queue's deliveries through a plugin.
type Consumer struct {
	cfg     Config
	log     *zap.Logger
	starter StartObserver // cfg.Observer, if it is one

	// settleCtx outlives Stop's deadline so that verdicts already decided
	// still reach the engine; it is cancelled only when the consumer aborts.
	settleCtx    context.Context
	cancelSettle context.CancelFunc

	mu       sync.Mutex
	started  bool
	stopRecv context.CancelFunc
	wg       sync.WaitGroup
	stopping atomic.Bool
	draining chan struct{}        // closed when Stop begins
	aborted  atomic.Bool          // Stop's deadline passed: running calls are being killed
	insts    map[*worker]Instance // live instances, closed on abort
	workers  []*worker
	gate     gate // pause and resume
	recent   recentErrors
	// Outages of the consumer-level operations: the first success after
	// failures logs one "recovered" line.
	receiveOutage, instanceOutage, settleOutage outage
}

// outage counts the failures of one operation since it last succeeded, so
// that when an error condition ends (the database is back) one line says
// so, with how many failures it took and for how long, however many
// workers saw it.
type outage struct {
	failures atomic.Int64
	since    atomic.Int64 // Unix nanoseconds of the first failure
}

func (o *outage) fail(now time.Time) {
	if o.failures.Add(1) == 1 {
		o.since.Store(now.UnixNano())
	}
}

// ok records a success and logs msg if failures came before it. The common
// case, no outage, costs one atomic load.
func (o *outage) ok(log *zap.Logger, msg string) {
	if o.failures.Load() == 0 {
		return
	}
	n := o.failures.Swap(0)
	if n == 0 {
		return // another worker reported this recovery
	}
	log.Info(msg, zap.Int64("failures", n), zap.Duration("after", time.Since(time.Unix(0, o.since.Load()))))
}

// New validates cfg and returns a consumer ready to Start.
func New(cfg Config) (*Consumer, error) {
	if cfg.Queue == nil || cfg.NewInstance == nil {
		return nil, errors.New("dispatch: consumer needs a queue and an instance factory")
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	if cfg.Batch < 1 {
		cfg.Batch = 1
	}
	if cfg.VisibilityTimeout <= 0 {
		cfg.VisibilityTimeout = engines.DefaultVisibilityTimeout
	}
	if cfg.Retry == (RetryPolicy{}) {
		cfg.Retry = DefaultRetryPolicy()
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	// Identical lines (a handler failing every message the same way, an
	// engine that is down) are written once per errEvery with a count.
	log = lograte.WrapLogger(log, errEvery)
	c := &Consumer{cfg: cfg, log: log.With(zap.String("consumer", cfg.Name), zap.String("queue", cfg.Queue.Name()))}
	c.starter, _ = cfg.Observer.(StartObserver)
	c.settleCtx, c.cancelSettle = context.WithCancel(context.Background())
	c.insts = make(map[*worker]Instance)
	c.draining = make(chan struct{})
	return c, nil
}

// Draining is closed when Stop begins: from then on no new delivery starts.
func (c *Consumer) Draining() <-chan struct{} { return c.draining }

// Name is the consumer's name.
func (c *Consumer) Name() string { return c.cfg.Name }

// Stats returns the consumer's counters.
func (c *Consumer) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s Stats
	for _, w := range c.workers {
		n := &w.n
		s.Acked += n.acked.Load()
		s.Nacked += n.nacked.Load()
		s.Requeued += n.requeued.Load()
		s.DeadLettered += n.deadLettered.Load()
		s.Traps += n.traps.Load()
		s.Timeouts += n.timeouts.Load()
		s.BadVerdicts += n.badVerdicts.Load()
		s.LeaseLost += n.leaseLost.Load()
		s.Released += n.released.Load()
		s.CrashPauses += n.crashPauses.Load()
		s.InstanceErrors += n.instanceErr.Load()
		s.EngineErrors += n.engineErr.Load()
		s.Conflicts += n.conflicts.Load()
		s.Instances += n.instances.Load()
		s.InFlight += n.inFlight.Load()
	}
	return s
}

// Start launches the workers. It returns at once; call Stop to end them.
func (c *Consumer) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started = true
	recvCtx, cancel := context.WithCancel(context.Background())
	c.stopRecv = cancel
	c.gate.start(recvCtx, c.cfg.Concurrency)
	for i := 0; i < c.cfg.Concurrency; i++ {
		w := &worker{c: c, batch: 1, buf: make([]engines.Delivery, c.cfg.Batch)}
		w.gs, _ = c.cfg.Queue.(engines.GroupSettler)
		w.gts, _ = c.cfg.Queue.(engines.GroupTxSettler)
		c.workers = append(c.workers, w)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			w.run(recvCtx)
		}()
	}
}

// Stop stops receiving, lets deliveries in progress finish and releases
// leased deliveries not yet started so they are redelivered at once. If ctx
// ends first, running plugin calls are aborted (their instances closed) and
// their messages released too, without a failure counted; Stop then returns
// an error wrapping ctx.Err().
func (c *Consumer) Stop(ctx context.Context) error {
	c.mu.Lock()
	if !c.started {
		c.mu.Unlock()
		return nil
	}
	if !c.stopping.Swap(true) {
		close(c.draining)
	}
	c.stopRecv()
	c.mu.Unlock()
	// Write the counts of rate-limited lines still pending.
	defer func() { _ = c.log.Sync() }()

	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	defer c.cancelSettle()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	// Kill the calls still running. Their messages are released, not
	// failed: the shutdown is not their fault. Settling gets a few seconds
	// more, after which a broken engine cannot hold the exit up.
	c.aborted.Store(true)
	t := time.AfterFunc(abortGrace, c.cancelSettle)
	defer t.Stop()
	c.mu.Lock()
	for _, inst := range c.insts {
		_ = inst.Close(context.Background())
	}
	c.mu.Unlock()
	<-done
	return fmt.Errorf("dispatch: consumer %s: drain: %w", c.cfg.Name, ctx.Err())
}

type worker struct {
	n counters
	c *Consumer
	// buf is reused by every Receive: a batch costs no allocation. It holds
	// the last batch's messages until the next one overwrites them; while
	// a batch's commits land, it is set aside and buf is a second buffer
	// (overlap.go).
	buf   []engines.Delivery
	inst  Instance
	batch int
	// ewma of the time one delivery takes, for sizing batches.
	ewma    time.Duration
	backoff time.Duration
	lat     latency // written only when Config.RecordLatency

	// gs is set when the queue's settles share commits (one fsync for
	// many). Each verdict is then started the moment its handler returns,
	// so it joins the engine's next commit whatever the rest of the batch
	// does, and waits in pending until the batch is handled: the worker
	// waits for their durability once, before it counts them and reuses
	// the receive buffer.
	gs      engines.GroupSettler
	gts     engines.GroupTxSettler // the same for commits of effects (tx.go)
	pending []outcome
	// commits are the batch's started commits of effects; at its end they
	// are handed to a goroutine that waits for them while the worker
	// receives and handles the next batch (overlap.go).
	commits []outcome
	landing landing
	// crashes counts the deliveries in a row that broke the instance.
	crashes int
	_       [64]byte // keep whatever is allocated next off the last line
}

// outcome is a handled delivery's verdict, started and waiting to be durable.
type outcome struct {
	d    *engines.Delivery
	s    engines.Settlement
	p    engines.Pending
	herr error // the handler's error, if any
	took time.Duration
	eff  *engines.Effects // set when p commits effects with the ack (tx.go)
}

const (
	errEvery   = 10 * time.Second
	abortGrace = 5 * time.Second
)

func (w *worker) run(ctx context.Context) {
	c := w.c
	defer w.dropInstance()
	defer w.landCommits() // a stopped worker leaves nothing unaccounted
	for ctx.Err() == nil {
		e := c.gate.cur.Load()
		if e.resumed != nil { // paused
			// Pause returns once every worker parked: by then every
			// commit is accounted.
			w.landCommits()
			c.gate.park(ctx, e)
			continue
		}
		if w.inst == nil && !w.newInstance(ctx) {
			w.wait(ctx)
			continue
		}
		n, err := c.cfg.Queue.Receive(e.ctx, w.buf[:w.batch])
		ds := w.buf[:n]
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, engines.ErrClosed) {
				return
			}
			if e.ctx.Err() != nil { // paused while waiting
				continue
			}
			w.n.engineErr.Add(1)
			c.receiveOutage.fail(time.Now())
			w.logErr("receive", "receive failed", err)
			w.wait(ctx)
			continue
		}
		c.receiveOutage.ok(c.log, "receive recovered")
		w.backoff = 0
		if !w.handleBatch(ctx, ds) {
			return
		}
	}
}

// handleBatch handles one received batch and reports whether the worker
// should go on. Whatever it does not handle it hands back, and every
// verdict it started is durable before it returns; its commits of effects
// are handed over to land while the next batch runs (overlap.go), and the
// receive buffer they point into is set aside until they have.
func (w *worker) handleBatch(ctx context.Context, ds []engines.Delivery) bool {
	c := w.c
	defer w.flush()
	for i := range ds {
		if c.stopping.Load() {
			w.release(ds[i:]...)
			return false
		}
		if c.gate.flag.Load() { // paused: hand the rest back
			w.release(ds[i:]...)
			return true
		}
		// The previous delivery may have cost the instance (a trap, or
		// per-message isolation), or a plugin swap may have replaced its
		// version; one that cannot be replaced hands the rest of the
		// batch back rather than fail messages for it.
		if w.crashes >= CrashLoopAfter && !w.crashLoop(ctx) {
			w.release(ds[i:]...)
			return false
		}
		if !w.ready(ctx) {
			w.release(ds[i:]...)
			w.wait(ctx)
			return true
		}
		release := func() {}
		if c.cfg.Throttle != nil {
			var ok bool
			if release, ok = w.admit(ctx, ds[i:]); !ok {
				w.release(ds[i:]...)
				return ctx.Err() == nil // paused: the worker parks
			}
		}
		now := time.Now() // one clock read serves both
		w.renew(ds[i:], now)
		w.handle(&ds[i], now)
		release()
	}
	return true
}

// newInstance makes the worker's instance and reports whether one is ready;
// on failure the caller backs off, so a plugin that cannot start does not spin.
func (w *worker) newInstance(ctx context.Context) bool {
	inst, err := w.c.cfg.NewInstance(ctx)
	if err != nil {
		w.n.instanceErr.Add(1)
		w.c.instanceOutage.fail(time.Now())
		w.logErr("instance", "plugin instance failed to start", err)
		return false
	}
	w.c.instanceOutage.ok(w.c.log, "plugin instance started again")
	w.backoff = 0
	w.inst = inst
	w.n.instances.Add(1)
	w.c.mu.Lock()
	w.c.insts[w] = inst
	w.c.mu.Unlock()
	return true
}

func (w *worker) dropInstance() {
	if w.inst == nil {
		return
	}
	w.c.mu.Lock()
	delete(w.c.insts, w)
	w.c.mu.Unlock()
	_ = w.inst.Close(context.Background())
	w.inst = nil
	w.n.instances.Add(-1)
}

// logErr logs a failure not tied to a message and keeps it for
// RecentErrors; the consumer's logger rate-limits repeats.
func (w *worker) logErr(kind, msg string, err error) {
	w.c.recent.add(ErrorRecord{Time: time.Now(), Kind: kind, Error: err.Error()})
	w.c.log.Error(msg, zap.Error(err))
}

// wait sleeps with exponential backoff (50ms to 5s) or until ctx ends.
func (w *worker) wait(ctx context.Context) {
	w.backoff = min(max(w.backoff*2, 50*time.Millisecond), 5*time.Second)
	t := time.NewTimer(w.backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// crashLoop pauses a worker whose last CrashLoopAfter or more deliveries
// each broke its instance, before it makes the next instance. A plugin that
// traps, times out or overflows its stack on every message otherwise
// replaces its instance as fast as the queue's retry policy lets messages
// come back (with a 1 ms retry, thousands of times a second), and that CPU
// is taken from every other consumer. The pause doubles with each further
// broken instance, from Config.CrashPause to MaxCrashPause, and ends for
// good at the first delivery that leaves its instance whole. The worker
// keeps its batch meanwhile (renew extends the leases if the pause made
// them short). It reports false if ctx ended during the pause.
func (w *worker) crashLoop(ctx context.Context) bool {
	c := w.c
	d := cmp.Or(c.cfg.CrashPause, DefaultCrashPause) << min(w.crashes-CrashLoopAfter, 16)
	d = min(d, MaxCrashPause)
	w.n.crashPauses.Add(1)
	c.log.Warn("plugin keeps breaking its instance: pausing this worker",
		zap.Int("broken_in_a_row", w.crashes), zap.Duration("pause", d))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// release hands back deliveries the worker will not handle; requeue counts
// no failure, so a shutdown does not push messages toward the DLQ.
func (w *worker) release(ds ...engines.Delivery) {
	for i := range ds {
		if err := ds[i].Requeue(w.c.settleCtx, 0); err == nil {
			w.n.released.Add(1)
		}
	}
}

// renew extends the leases of the rest of a batch once the next one to be
// handled has less than renewBelow left: the batch took longer than its
// size was planned for, and the messages still waiting in it must not
// expire unseen (an expiry counts a failure against a message nobody
// tried). The deliveries of a batch were leased together, so one check
// covers them all.
func (w *worker) renew(ds []engines.Delivery, now time.Time) {
	c := w.c
	if ds[0].LeaseExpires.Sub(now) >= renewBelow(c.cfg.HandlerTimeout, c.cfg.VisibilityTimeout) {
		return
	}
	for i := range ds {
		// On failure LeaseExpires keeps its old value, and handle skips the
		// delivery once that has passed.
		_ = ds[i].Extend(c.settleCtx, c.cfg.VisibilityTimeout)
	}
}

// renewBelow is the lease left under which renew extends a batch: a
// handler call's worst case (twice its timeout), but never more than three
// quarters of the lease. When a call may outlast a whole lease (the
// validator warns about it), no extension can cover its worst case, and
// the cap keeps renew from extending the batch again before every
// delivery: each extension is an engine write, and on postgres one per
// message cut throughput from thousands of messages a second to under a
// hundred. Batches are sized to take a quarter of the lease (resize), so
// normally nothing is extended at all, and a delivery always starts with at
// least three quarters of a lease.
func renewBelow(handlerTimeout, visibility time.Duration) time.Duration {
	return min(2*handlerTimeout, visibility*3/4)
}

func (w *worker) handle(d *engines.Delivery, start time.Time) {
	c := w.c
	if !start.Before(d.LeaseExpires) {
		// Its lease ran out while it waited in the batch: the engine may
		// already be handing it to someone else.
		w.n.leaseLost.Add(1)
		c.log.Warn("lease ran out while the delivery waited in its batch; it will be redelivered", deliveryFields(d)...)
		return
	}
	w.n.inFlight.Add(1)
	if c.starter != nil {
		c.starter.Started(d)
	}
	res := w.inst.Handle(c.settleCtx, d, start)
	took := time.Since(start)
	w.n.inFlight.Add(-1)
	if c.cfg.RecordLatency {
		w.lat.observe(took)
	}
	w.resize(took)
	if c.aborted.Load() {
		w.release(*d)
		return
	}

	s := engines.Settlement{Verdict: res.Verdict}
	if res.Err != nil {
		s.Verdict = engines.Nack
		s.Reason = res.Err.Error()
		switch {
		case errors.Is(res.Err, plugin.ErrTimeout):
			w.n.timeouts.Add(1)
		case errors.Is(res.Err, plugin.ErrBadVerdict):
			w.n.badVerdicts.Add(1)
		default:
			w.n.traps.Add(1)
		}
	}
	broken := w.inst.Broken()
	if broken {
		w.crashes++
	} else {
		w.crashes = 0
	}
	if broken || c.cfg.PerMessage {
		w.dropInstance()
	}
	switch s.Verdict {
	case engines.Nack:
		// The guest's set_reason text, as given; res.Reason is empty for
		// a failure, whose error is already the reason.
		if s.Reason == "" {
			s.Reason = cmp.Or(res.Reason, "nack by handler")
		}
		s.Delay = c.cfg.Retry.Delay(d.Failures)
		if res.DelaySet {
			s.Delay = res.Delay
		}
	case engines.Requeue:
		s.Delay = res.Delay
	case engines.DeadLetter:
		s.Reason = cmp.Or(res.Reason, "dead-lettered by handler")
	}
	o := outcome{d: d, s: s, herr: res.Err, took: took}
	if res.Effects != nil && s.Verdict == engines.Ack {
		w.commit(o, res.Effects)
		return
	}
	if w.gs == nil {
		w.applied(o, d.Settle(c.settleCtx, s))
		return
	}
	// Started now, the verdict rides in the engine's next commit; it is
	// counted once flush has seen it durable.
	p, err := w.gs.StartSettle(c.settleCtx, d, s)
	if err != nil || p == nil {
		w.applied(o, err)
		return
	}
	o.p = p
	w.pending = append(w.pending, o)
}

// flush waits until the verdicts started during a batch are durable and
// accounts for them, then hands the batch's commits of effects over
// (overlap.go). Most verdicts share one or two commits, so all but the
// first wait return at once.
func (w *worker) flush() {
	for _, o := range w.pending {
		w.applied(o, o.p.Wait(w.c.settleCtx))
	}
	clear(w.pending)
	w.pending = w.pending[:0]
	w.handOver()
}

// applied accounts for a verdict the engine has applied (err nil) or refused.
func (w *worker) applied(o outcome, err error) {
	c, d, s := w.c, o.d, o.s
	if err != nil {
		if errors.Is(err, engines.ErrLeaseLost) {
			w.n.leaseLost.Add(1)
		} else {
			w.n.engineErr.Add(1)
			c.settleOutage.fail(time.Now())
		}
		w.logOutcome(d, s, o.herr, err, o.took)
		return
	}
	c.settleOutage.ok(c.log, "applying verdicts recovered")
	if o.herr != nil || s.Verdict == engines.Nack || s.Verdict == engines.DeadLetter {
		w.logOutcome(d, s, o.herr, nil, o.took)
	}
	switch s.Verdict {
	case engines.Ack:
		w.n.acked.Add(1)
	case engines.Nack:
		w.n.nacked.Add(1)
	case engines.Requeue:
		w.n.requeued.Add(1)
	case engines.DeadLetter:
		w.n.deadLettered.Add(1)
	}
	if c.cfg.Observer != nil {
		c.cfg.Observer.Settled(d, s.Verdict, o.took)
	}
}

// resize keeps a batch's handling time within a quarter of the lease, so a
// slow handler leases few messages at a time and a fast one many.
func (w *worker) resize(took time.Duration) {
	if w.ewma == 0 {
		w.ewma = took
	} else {
		w.ewma += (took - w.ewma) / 8
	}
	n := w.c.cfg.Batch
	if per := max(w.ewma, time.Microsecond); time.Duration(n)*per > w.c.cfg.VisibilityTimeout/4 {
		n = int(w.c.cfg.VisibilityTimeout / 4 / per)
	}
	w.batch = max(n, 1)
}
