package lograte

import (
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// clock is a manual Clock: time moves when a test says so, and advance
// runs the timers that come due, in the calling goroutine, before it
// returns.
type clock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*timer
}

type timer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (t *timer) Stop() bool {
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// set moves the time without running timers: a line that arrives after
// its window but before the timer.
func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.t.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	var due []*timer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.t):
			t.stopped = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

func newTestLogger(window time.Duration) (*zap.Logger, *observer.ObservedLogs, *clock) {
	obs, logs := observer.New(zapcore.DebugLevel)
	clk := &clock{t: time.Unix(1000, 0)}
	return zap.New(NewCoreClock(obs, window, clk)), logs, clk
}

func suppressedOf(e observer.LoggedEntry) int64 {
	v, ok := e.ContextMap()["suppressed"]
	if !ok {
		return 0
	}
	return v.(int64)
}

func TestIdenticalLinesAreCountedNotWritten(t *testing.T) {
	t.Parallel()
	log, logs, clk := newTestLogger(10 * time.Second)
	db := errors.New("connection refused")
	for i := range 1000 {
		log.Error("receive failed", zap.Error(db), zap.Int("i", i))
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines written for 1000 identical errors, want 1", n)
	}
	// A different error, message or level is a different kind.
	log.Error("receive failed", zap.Error(errors.New("timeout")))
	log.Error("settle failed", zap.Error(db))
	log.Warn("receive failed", zap.Error(db))
	if n := logs.Len(); n != 4 {
		t.Fatalf("%d lines, want 4: distinct kinds must not hold each other back", n)
	}
	// After the window, the next identical line carries the count.
	clk.set(clk.Now().Add(11 * time.Second)) // before the timer runs
	log.Error("receive failed", zap.Error(db), zap.Int("i", 1000))
	all := logs.AllUntimed()
	last := all[len(all)-1]
	if last.Message != "receive failed" || suppressedOf(last) != 999 {
		t.Fatalf("after the window: %q suppressed=%d, want receive failed with 999", last.Message, suppressedOf(last))
	}
}

func TestPendingCountIsReportedAfterSilence(t *testing.T) {
	t.Parallel()
	log, logs, clk := newTestLogger(time.Second)
	l := log.With(zap.String("consumer", "c1"))
	for range 5 {
		l.Warn("handler failed", zap.Error(errors.New("trap")))
	}
	clk.set(clk.Now().Add(2 * time.Second)) // before the timer runs
	log.Info("something else")
	var summary *observer.LoggedEntry
	for _, e := range logs.AllUntimed() {
		if e.Message == "handler failed" && suppressedOf(e) > 0 {
			summary = &e
		}
	}
	if summary == nil || suppressedOf(*summary) != 4 {
		t.Fatalf("no summary of the 4 suppressed lines: %v", logs.AllUntimed())
	}
	if summary.ContextMap()["consumer"] != "c1" {
		t.Fatalf("summary lost the With fields: %v", summary.ContextMap())
	}
}

func TestSyncFlushesPendingCounts(t *testing.T) {
	t.Parallel()
	log, logs, clk := newTestLogger(time.Hour)
	for range 3 {
		log.Error("x", zap.String("error", "boom"))
	}
	clk.set(clk.Now().Add(time.Minute))
	_ = log.Sync()
	all := logs.All()
	if len(all) != 2 || suppressedOf(all[1]) != 2 {
		t.Fatalf("after Sync: %v, want the line and a summary of 2", all)
	}
	if !all[1].Time.Equal(clk.Now()) {
		t.Fatalf("summary stamped %v, want the time it was written, %v", all[1].Time, clk.Now())
	}
	clk.advance(2 * time.Hour) // the timer Sync stopped writes nothing
	if logs.Len() != 2 {
		t.Fatalf("%d lines after the window, want still 2: %v", logs.Len(), logs.All())
	}
}

// TestSummaryWrittenWhenWindowCloses: a count goes out when its window
// closes, with nothing else logged, stamped with that moment; the summary
// opens the next window, so a steady flood writes one line per window.
func TestSummaryWrittenWhenWindowCloses(t *testing.T) {
	t.Parallel()
	log, logs, clk := newTestLogger(10 * time.Second)
	start := clk.Now()
	down := errors.New("connection refused")
	for range 5 {
		log.Error("receive failed", zap.Error(down))
	}
	log.Warn("other kind", zap.Error(down)) // its own window, nothing suppressed
	clk.advance(9 * time.Second)
	if logs.Len() != 2 {
		t.Fatalf("%d lines before the window closed, want 2", logs.Len())
	}
	clk.advance(time.Second)
	all := logs.All()
	if len(all) != 3 {
		t.Fatalf("%d lines when the window closed, want 3 (the summary): %v", len(all), all)
	}
	sum := all[2]
	if sum.Message != "receive failed" || suppressedOf(sum) != 4 || sum.ContextMap()["summary"] != true ||
		!sum.Time.Equal(start.Add(10*time.Second)) {
		t.Fatalf("summary %q suppressed=%d fields %v at %v; want receive failed, 4, summary, at %v",
			sum.Message, suppressedOf(sum), sum.ContextMap(), sum.Time, start.Add(10*time.Second))
	}
	// The flood goes on: counted in the window the summary opened.
	for range 3 {
		log.Error("receive failed", zap.Error(down))
	}
	clk.advance(10 * time.Second)
	all = logs.All()
	if len(all) != 4 || suppressedOf(all[3]) != 3 || !all[3].Time.Equal(start.Add(20*time.Second)) {
		t.Fatalf("second window: %v; want a fourth line, a summary of 3 at %v", all, start.Add(20*time.Second))
	}
	// Silence: no more lines, nothing pending.
	clk.advance(time.Minute)
	_ = log.Sync()
	if logs.Len() != 4 {
		t.Fatalf("%d lines after silence and Sync, want 4", logs.Len())
	}
}

func TestDisabledLevelsAreNotCounted(t *testing.T) {
	t.Parallel()
	obs, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(NewCore(obs, time.Second))
	log.Debug("noise")
	log.Info("kept")
	if logs.Len() != 1 {
		t.Fatalf("%d lines, want 1", logs.Len())
	}
}

func TestTooManyKindsAreWrittenNotDropped(t *testing.T) {
	t.Parallel()
	log, logs, _ := newTestLogger(time.Hour)
	for i := range MaxKinds + 10 {
		log.Error("e", zap.Error(errors.New(string(rune('a'+i%26))+string(rune(i)))))
	}
	if logs.Len() != MaxKinds+10 {
		t.Fatalf("%d lines, want %d", logs.Len(), MaxKinds+10)
	}
}

func BenchmarkSuppressed(b *testing.B) {
	log, _, _ := newTestLogger(time.Hour)
	err := errors.New("down")
	b.ReportAllocs()
	for range b.N {
		log.Error("receive failed", zap.Error(err))
	}
}
