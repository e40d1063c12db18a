// Package clock is the time source of the runtime's timed machinery
// (schedules, rate limits), so tests move time forward themselves instead
// of sleeping: Fake fires a timer when the test advances past it, and
// BlockUntil tells the test when the code under test is waiting on one.
package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Clock reads the time and waits for it.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a stop
	// function that releases the timer (it reports whether it stopped the
	// timer before it fired).
	After(d time.Duration) (<-chan time.Time, func() bool)
}

// Real is the system clock.
type Real struct{}

// Now is time.Now.
func (Real) Now() time.Time { return time.Now() }

// After is a time.Timer.
func (Real) After(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// Sleep waits d on c, or until ctx ends; it reports whether d passed.
func Sleep(ctx context.Context, c Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	ch, stop := c.After(d)
	defer stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// Fake is a clock that only moves when told to. It is safe for
// concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever timers change
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

// NewFake returns a fake clock reading start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

// Now is the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After registers a timer that fires when the clock is advanced to
// now+d; d <= 0 fires at once.
func (f *Fake) After(d time.Duration) (<-chan time.Time, func() bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{at: f.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- f.now
		return t.ch, func() bool { return false }
	}
	f.timers = append(f.timers, t)
	f.signal()
	return t.ch, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, x := range f.timers {
			if x == t {
				f.timers = append(f.timers[:i], f.timers[i+1:]...)
				f.signal()
				return true
			}
		}
		return false
	}
}

// signal wakes BlockUntil; the caller holds mu.
func (f *Fake) signal() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Advance moves the clock forward by d and fires, in time order, every
// timer due by then.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	sort.SliceStable(f.timers, func(i, j int) bool { return f.timers[i].at.Before(f.timers[j].at) })
	n := 0
	for _, t := range f.timers {
		if t.at.After(f.now) {
			break
		}
		t.ch <- f.now
		n++
	}
	if n > 0 {
		f.timers = append(f.timers[:0], f.timers[n:]...)
		f.signal()
	}
}

// Set moves the clock to t (which must not be before Now), firing timers
// as Advance does.
func (f *Fake) Set(t time.Time) { f.Advance(t.Sub(f.Now())) }

// Waiters is the number of timers pending.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// BlockUntil waits until at least n timers are pending, which is how a
// test knows the code under test has gone to sleep and the clock may be
// advanced; it returns ctx.Err() if ctx ends first.
func (f *Fake) BlockUntil(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		ok, ch := len(f.timers) >= n, f.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Next is the time of the earliest pending timer, if any.
func (f *Fake) Next() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.timers) == 0 {
		return time.Time{}, false
	}
	min := f.timers[0].at
	for _, t := range f.timers[1:] {
		if t.at.Before(min) {
			min = t.at
		}
	}
	return min, true
}
