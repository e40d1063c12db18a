// Package schedule runs a configuration's schedules: at each tick of a
// cron expression or interval it enqueues the schedule's message, and
// through a Claimer it makes each tick enqueue once however many times
// qrun restarts and however many qrun processes share the engine.
//
// The tick, not the moment qrun noticed it, identifies a firing: ticks are
// computed from the expression and time zone alone (Timing), so every
// process computes the same ones, and the engine keeps the last tick it
// accepted (engines.TickClaimer). A process that finds a tick already
// claimed does nothing; one that was down over a tick fires it once at
// start, unless its schedule skips missed ticks.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
	_ "time/tzdata" // time zones validate and compute the same on a host without zoneinfo

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/internal/clock"
)

// Claimer records a schedule's ticks where its queue lives and enqueues a
// tick's message only if the tick was not claimed before.
type Claimer interface {
	// Claim enqueues msg as tick of schedule unless that tick or a later
	// one was claimed, and reports whether it enqueued.
	Claim(ctx context.Context, schedule string, tick time.Time, msg engines.Message) (bool, error)
	// Last is the latest tick claimed for schedule; zero if none.
	Last(ctx context.Context, schedule string) (time.Time, error)
}

// Spec is one schedule.
type Spec struct {
	Name  string
	Queue string
	// Expr is the expression as written (cron or "every 5m"), for listings.
	Expr   string
	Timing Timing
	// Message is enqueued at each tick (a copy: IDs are the engine's).
	Message engines.Message
	// SkipMissed drops a tick missed while qrun was down instead of firing
	// it once at start.
	SkipMissed bool
}

// Job is a schedule with where its ticks are claimed.
type Job struct {
	Spec    Spec
	Claimer Claimer
}

// Status is a schedule's state, for `qrun schedules` and the admin API.
type Status struct {
	Name     string    `json:"name"`
	Queue    string    `json:"queue"`
	Expr     string    `json:"expr"`
	TimeZone string    `json:"time_zone"`
	Next     time.Time `json:"next"`
	// LastTick is the latest tick this process knows claimed (by it or
	// another), zero before any.
	LastTick time.Time `json:"last_tick,omitzero"`
	// Fired counts the ticks this process enqueued.
	Fired int64 `json:"fired"`
	// Skipped counts missed ticks dropped (missed = "skip") and ticks
	// another process claimed first.
	Skipped   int64  `json:"skipped"`
	LastError string `json:"last_error,omitempty"`
}

// Scheduler runs jobs. Set replaces them; Stop ends them.
type Scheduler struct {
	clk clock.Clock
	log *zap.Logger

	setMu  sync.Mutex // one Set at a time, so no Set's jobs outlive another's
	closed bool       // under setMu: Close was called, Set does nothing
	mu     sync.Mutex
	jobs   map[string]*job
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type job struct {
	Job
	clk clock.Clock
	log *zap.Logger

	mu      sync.Mutex
	next    time.Time
	last    time.Time
	fired   int64
	skipped int64
	lastErr string
}

// New returns a scheduler on clk (clock.Real{} outside tests).
func New(clk clock.Clock, log *zap.Logger) *Scheduler {
	if log == nil {
		log = zap.NewNop()
	}
	return &Scheduler{clk: clk, log: log, jobs: map[string]*job{}}
}

// Set stops the running jobs and starts js. A job stopped mid-claim either
// claimed its tick or did not, so the restarted one never fires it twice:
// this is how schedules follow a config reload.
func (s *Scheduler) Set(js []Job) {
	s.setMu.Lock()
	defer s.setMu.Unlock()
	s.Stop()
	if s.closed {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.jobs = make(map[string]*job, len(js))
	for _, j := range js {
		jb := &job{Job: j, clk: s.clk, log: s.log.With(zap.String("schedule", j.Spec.Name), zap.String("queue", j.Spec.Queue))}
		jb.next = j.Spec.Timing.Next(s.clk.Now())
		s.jobs[j.Spec.Name] = jb
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			jb.run(ctx)
		}()
	}
}

// Close ends every job for good: a later Set starts nothing (the engines
// the jobs would claim through are closing).
func (s *Scheduler) Close() {
	s.setMu.Lock()
	s.closed = true
	s.setMu.Unlock()
	s.Stop()
}

// Stop ends every job and waits for them.
func (s *Scheduler) Stop() {
	s.mu.Lock()
	cancel := s.cancel
	s.cancel = nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}

// List reports every schedule, by name.
func (s *Scheduler) List() []Status {
	s.mu.Lock()
	out := make([]Status, 0, len(s.jobs))
	for _, j := range s.jobs {
		out = append(out, j.status())
	}
	s.mu.Unlock()
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

func (j *job) status() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	return Status{Name: j.Spec.Name, Queue: j.Spec.Queue, Expr: j.Spec.Expr, TimeZone: j.Spec.Timing.Location().String(),
		Next: j.next, LastTick: j.last, Fired: j.fired, Skipped: j.skipped, LastError: j.lastErr}
}

// maxCatchUp bounds the ticks walked to find the latest missed one (a
// one-second schedule down for a week is 600,000).
const maxCatchUp = 10_000_000

// latest returns the last tick in (from, now], or zero if there is none.
func (t Timing) latest(from, now time.Time) time.Time {
	var got time.Time
	x := from
	for range maxCatchUp {
		y := t.Next(x)
		if y.IsZero() || y.After(now) {
			return got
		}
		got, x = y, y
	}
	return got
}

func (j *job) run(ctx context.Context) {
	var last time.Time
	err := j.retry(ctx, func() (err error) {
		last, err = j.Claimer.Last(ctx, j.Spec.Name)
		return err
	})
	if err != nil {
		return // stopped
	}
	j.setLast(last)
	from := j.clk.Now()
	if !last.IsZero() {
		if missed := j.Spec.Timing.latest(last, from); !missed.IsZero() {
			if j.Spec.SkipMissed {
				j.mu.Lock()
				j.skipped++
				j.mu.Unlock()
				j.log.Info("missed tick skipped", zap.Time("tick", missed))
			} else if !j.fire(ctx, missed, "missed tick fired at start") {
				return
			}
		}
	}
	for {
		n := j.Spec.Timing.Next(from)
		if n.IsZero() {
			return // an expression that never fires again (e.g. 30 February)
		}
		j.mu.Lock()
		j.next = n
		j.mu.Unlock()
		if !clock.Sleep(ctx, j.clk, n.Sub(j.clk.Now())) {
			return
		}
		// A clock that jumped (a suspended machine) may be past several
		// ticks: fire the latest once, as at start.
		if l := j.Spec.Timing.latest(n, j.clk.Now()); !l.IsZero() {
			n = l
		}
		if !j.fire(ctx, n, "tick fired") {
			return
		}
		from = n
	}
}

// fire claims tick and reports false only when ctx ended.
func (j *job) fire(ctx context.Context, tick time.Time, msg string) bool {
	var ok bool
	err := j.retry(ctx, func() (err error) {
		ok, err = j.Claimer.Claim(ctx, j.Spec.Name, tick, j.message(tick))
		return err
	})
	if err != nil {
		return false
	}
	j.mu.Lock()
	if ok {
		j.fired++
	} else {
		j.skipped++
	}
	if tick.After(j.last) {
		j.last = tick
	}
	j.mu.Unlock()
	if ok {
		j.log.Info(msg, zap.Time("tick", tick))
	} else {
		j.log.Debug("tick already claimed", zap.Time("tick", tick))
	}
	return true
}

// Attributes a schedule adds to each message it enqueues, so a handler
// knows which schedule and which tick it is handling (and can make its
// work idempotent per tick).
const (
	AttrSchedule = "qrun.schedule"
	AttrTick     = "qrun.schedule.tick" // RFC 3339, UTC
)

// message is a fresh copy of the schedule's message for tick: an engine
// writes the ID it assigns into the message and may keep its maps.
func (j *job) message(tick time.Time) engines.Message {
	m := j.Spec.Message
	a := make(map[string]string, len(m.Attributes)+2)
	for k, v := range m.Attributes {
		a[k] = v
	}
	a[AttrSchedule] = j.Spec.Name
	a[AttrTick] = tick.UTC().Format(time.RFC3339Nano)
	m.Attributes = a
	m.Body = append([]byte(nil), m.Body...)
	return m
}

func (j *job) setLast(t time.Time) {
	j.mu.Lock()
	j.last = t
	j.mu.Unlock()
}

// retry runs op until it succeeds, backing off from 100ms to 30s between
// failures; it returns ctx.Err() once ctx ends.
func (j *job) retry(ctx context.Context, op func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := op()
		if err == nil {
			j.mu.Lock()
			j.lastErr = ""
			j.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		j.mu.Lock()
		j.lastErr = err.Error()
		j.mu.Unlock()
		j.log.Error("schedule tick failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
		if !clock.Sleep(ctx, j.clk, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// ErrNoQueue is returned by a claimer asked for a queue it does not hold.
var ErrNoQueue = errors.New("schedule: queue not open")

// EngineClaimer claims ticks through an engine that records them itself.
type EngineClaimer struct {
	TC    engines.TickClaimer
	Queue engines.Queue
}

// Claim implements Claimer.
func (c EngineClaimer) Claim(ctx context.Context, schedule string, tick time.Time, msg engines.Message) (bool, error) {
	ok, err := c.TC.ClaimTick(ctx, c.Queue, schedule, tick, msg)
	if err != nil {
		return false, fmt.Errorf("schedule %q: claim tick %s: %w", schedule, tick.Format(time.RFC3339), err)
	}
	return ok, nil
}

// Last implements Claimer.
func (c EngineClaimer) Last(ctx context.Context, schedule string) (time.Time, error) {
	t, err := c.TC.LastTick(ctx, schedule)
	if err != nil {
		return time.Time{}, fmt.Errorf("schedule %q: last tick: %w", schedule, err)
	}
	return t, nil
}
