// Package throttle holds a consumer's deliveries back to a rate
// (golang.org/x/time/rate token buckets, one for the consumer or one per
// value of a message attribute) and to a number in flight per value of an
// attribute. A delivery over a limit waits; it is not a failure and its
// attempt is not spent. Waiting is done by the worker holding the
// delivery, which keeps the lease alive through the keep callback, so a
// wait of any length never lets the lease lapse (docs/schedules.md).
//
// Per-key state is bounded by the keys in use: a key's token bucket is
// dropped once it has filled up again (a fresh bucket is full, so dropping
// it changes nothing), and a key's in-flight count once it reaches zero.
package throttle

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/qrun-dev/qrun/internal/clock"
)

// Config is one consumer's limits.
type Config struct {
	// Rate is deliveries per second; zero means none.
	Rate float64
	// Burst is the bucket size, at least 1 when Rate is set.
	Burst int
	// RateKey makes Rate a limit per value of this attribute.
	RateKey string
	// MaxInFlightPerKey caps deliveries in flight per value of
	// ConcurrencyKey; zero means none.
	MaxInFlightPerKey int
	ConcurrencyKey    string
	// Take, when set, replaces the local bucket of a consumer-wide Rate
	// with one shared by every node (engines.RateTaker): it takes up to n
	// tokens and says how long to wait when it got none. Tokens are
	// fetched a chunk at a time (a twentieth of a second's worth, at most
	// Burst) and spent locally.
	Take func(ctx context.Context, n int) (got int, wait time.Duration, err error)
	// Slot, when set with MaxInFlightPerKey, also takes one of the key's
	// places shared by every node (engines.SlotKeeper) once the delivery
	// has its place on this node: ok false means all are held elsewhere.
	// A delivery waiting for one tries again when one of its key's local
	// deliveries ends, or after SlotPoll (other nodes' releases are not
	// announced).
	Slot func(ctx context.Context, key string) (release func(), ok bool, err error)
	// SlotPoll is how often a delivery waiting for a shared slot tries
	// again; zero means DefaultSlotPoll.
	SlotPoll time.Duration
	// Clock is the time source; nil means the system clock.
	Clock clock.Clock
}

// Throttle applies a Config. It is safe for concurrent use by a
// consumer's workers.
type Throttle struct {
	cfg Config
	clk clock.Clock

	global *rate.Limiter // Rate without RateKey

	mu        sync.Mutex
	keyed     map[string]*rate.Limiter // Rate per RateKey value
	sweepSize int                      // sweep keyed when it grows past this
	inflight  map[string]*slot         // per ConcurrencyKey value
	pool      int                      // tokens taken from the shared bucket, not yet spent
	chunk     int                      // tokens taken from the shared bucket at a time

	waiting   atomic.Int64
	throttled atomic.Int64 // nanoseconds spent waiting, all deliveries
	waits     atomic.Int64 // deliveries that had to wait
	takeErrs  atomic.Int64 // failed takes from the shared bucket
}

// slot counts one key's deliveries in flight; free is closed whenever one
// ends, waking the deliveries waiting for the key. It is made only when a
// delivery waits (wake), so a key never over its cap costs no channel.
type slot struct {
	n    int
	free chan struct{}
}

// wake returns the channel closed when one of the key's places ends,
// making it if no one waited yet. t.mu must be held.
func (s *slot) wake() chan struct{} {
	if s.free == nil {
		s.free = make(chan struct{})
	}
	return s.free
}

// DefaultSlotPoll is how often a delivery waiting for a shared per-key
// slot asks again: a trade between the database's load (one short query
// per waiting delivery per poll) and how late a slot freed on another
// node is noticed.
const DefaultSlotPoll = 100 * time.Millisecond

// minSweep is the keyed map size below which idle buckets are not swept.
const minSweep = 1024

// New returns a throttle for cfg, or nil if cfg sets no limit.
func New(cfg Config) *Throttle {
	if cfg.Rate <= 0 && cfg.MaxInFlightPerKey <= 0 {
		return nil
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	cfg.Burst = max(cfg.Burst, 1)
	if cfg.SlotPoll <= 0 {
		cfg.SlotPoll = DefaultSlotPoll
	}
	t := &Throttle{cfg: cfg, clk: cfg.Clock, keyed: map[string]*rate.Limiter{}, inflight: map[string]*slot{}, sweepSize: minSweep}
	if cfg.Rate > 0 && cfg.RateKey == "" && cfg.Take == nil {
		t.global = rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst)
	}
	t.chunk = max(1, min(cfg.Burst, int(cfg.Rate/20)))
	return t
}

// Stats are a throttle's counters.
type Stats struct {
	// Waiting is the deliveries waiting now.
	Waiting int64 `json:"waiting"`
	// ThrottledSeconds is the time deliveries spent waiting, summed.
	ThrottledSeconds float64 `json:"throttled_seconds"`
	// Throttled counts deliveries that had to wait.
	Throttled int64 `json:"throttled"`
	// Keys is the number of per-key buckets and in-flight counts held.
	Keys int `json:"keys"`
	// TakeErrors counts failed takes from a shared bucket (each retried
	// after a second).
	TakeErrors int64 `json:"take_errors,omitempty"`
}

// Stats reports the counters.
func (t *Throttle) Stats() Stats {
	t.mu.Lock()
	keys := len(t.keyed) + len(t.inflight)
	t.mu.Unlock()
	return Stats{Waiting: t.waiting.Load(), ThrottledSeconds: time.Duration(t.throttled.Load()).Seconds(), Throttled: t.waits.Load(), Keys: keys,
		TakeErrors: t.takeErrs.Load()}
}

// Keep is called by a waiting Admit before each pause with the clock's
// time; it extends whatever the wait must not lose (the delivery's lease)
// and returns how long the wait may last before it must be called again
// (zero or less: as long as needed).
type Keep func(now time.Time) time.Duration

// Admit waits until a delivery with attributes attrs may be handled: a
// free place for its concurrency key, then a token for its rate key. It
// returns the function that ends the delivery's place (call it once the
// delivery is handled), or ctx.Err() if ctx ended first, holding nothing.
func (t *Throttle) Admit(ctx context.Context, attrs map[string]string, keep Keep) (release func(), err error) {
	start := t.clk.Now()
	waited := false
	defer func() {
		if waited {
			t.waiting.Add(-1)
			t.throttled.Add(int64(t.clk.Now().Sub(start)))
		}
	}()
	wait := func(d time.Duration, wake <-chan struct{}) bool {
		if !waited {
			waited = true
			t.waiting.Add(1)
			t.waits.Add(1)
		}
		if keep != nil {
			if step := keep(t.clk.Now()); step > 0 && (d <= 0 || step < d) {
				d = step
			}
		}
		var timer <-chan time.Time
		if d > 0 {
			ch, stop := t.clk.After(d)
			defer stop()
			timer = ch
		}
		select {
		case <-timer:
		case <-wake:
		case <-ctx.Done():
			return false
		}
		return true
	}

	release = func() {}
	if t.cfg.MaxInFlightPerKey > 0 {
		key := attrs[t.cfg.ConcurrencyKey]
		for !t.take(key) {
			t.mu.Lock()
			s := t.inflight[key]
			var free chan struct{}
			if s != nil && s.n >= t.cfg.MaxInFlightPerKey {
				free = s.wake()
			}
			t.mu.Unlock()
			if free == nil {
				continue // freed meanwhile
			}
			if !wait(0, free) {
				return nil, ctx.Err()
			}
		}
		release = sync.OnceFunc(func() { t.give(key) })
		if t.cfg.Slot != nil {
			shared, err := t.slot(ctx, key, wait)
			if err != nil {
				release()
				return nil, err
			}
			local := release
			// The shared slot goes first, so a local waiter woken by
			// give finds it free.
			release = sync.OnceFunc(func() { shared(); local() })
		}
	}
	if t.cfg.Take != nil {
		for !t.spend() {
			got, d, err := t.cfg.Take(ctx, t.chunk)
			if err != nil {
				t.takeErrs.Add(1)
				got, d = 0, time.Second
			}
			if got > 0 {
				t.mu.Lock()
				t.pool += got
				t.mu.Unlock()
				continue
			}
			if !wait(max(d, time.Millisecond), nil) {
				release()
				return nil, ctx.Err()
			}
		}
	} else if t.cfg.Rate > 0 {
		lim := t.global
		if lim == nil {
			lim = t.limiter(attrs[t.cfg.RateKey])
		}
		now := t.clk.Now()
		r := lim.ReserveN(now, 1) // burst >= 1: always ok
		for {
			now = t.clk.Now()
			d := r.DelayFrom(now)
			if d <= 0 {
				break
			}
			if !wait(d, nil) {
				r.CancelAt(t.clk.Now())
				release()
				return nil, ctx.Err()
			}
		}
	}
	return release, nil
}

// slot waits for one of key's shared slots, the delivery already holding
// its local place, and returns its release.
func (t *Throttle) slot(ctx context.Context, key string, wait func(time.Duration, <-chan struct{}) bool) (func(), error) {
	for {
		// Taken before asking, so a local release during the ask is not
		// missed.
		t.mu.Lock()
		var free chan struct{}
		if s := t.inflight[key]; s != nil {
			free = s.wake()
		}
		t.mu.Unlock()
		rel, ok, err := t.cfg.Slot(ctx, key)
		if ok && err == nil {
			return rel, nil
		}
		d := t.cfg.SlotPoll
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			t.takeErrs.Add(1)
			d = time.Second
		}
		if !wait(d, free) {
			return nil, ctx.Err()
		}
	}
}

// spend uses a token fetched from the shared bucket, if one is left.
func (t *Throttle) spend() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pool == 0 {
		return false
	}
	t.pool--
	return true
}

// take claims a place for key if one is free.
func (t *Throttle) take(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.inflight[key]
	if s == nil {
		s = &slot{}
		t.inflight[key] = s
	}
	if s.n >= t.cfg.MaxInFlightPerKey {
		return false
	}
	s.n++
	return true
}

// give ends a place of key and wakes its waiters; a key with nothing in
// flight is forgotten (its waiters, woken, make it anew).
func (t *Throttle) give(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.inflight[key]
	if s == nil {
		return
	}
	s.n--
	if s.free != nil {
		close(s.free)
		s.free = nil
	}
	if s.n <= 0 {
		delete(t.inflight, key)
	}
}

// limiter returns key's bucket, sweeping full buckets out once the map
// has doubled since the last sweep, so keys seen once do not accumulate.
func (t *Throttle) limiter(key string) *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	if lim, ok := t.keyed[key]; ok {
		return lim
	}
	if len(t.keyed) >= t.sweepSize {
		now := t.clk.Now()
		for k, lim := range t.keyed {
			if lim.TokensAt(now) >= float64(t.cfg.Burst) {
				delete(t.keyed, k) // full: the same as a fresh bucket
			}
		}
		t.sweepSize = max(minSweep, 2*len(t.keyed))
	}
	lim := rate.NewLimiter(rate.Limit(t.cfg.Rate), t.cfg.Burst)
	// A fresh bucket's clock starts at the zero time; set it to now so
	// TokensAt reads it right.
	lim.SetBurstAt(t.clk.Now(), t.cfg.Burst)
	t.keyed[key] = lim
	return lim
}
