// Package lograte keeps repeated identical log lines from flooding a log.
//
// A database that goes down makes every worker fail every call with the same
// error, thousands of times a second; a handler with a bug traps on every
// message with the same stack. Logging each one buries everything else and
// costs more than the work itself. NewCore wraps a zapcore.Core so that the
// first line of a kind is written at once and identical ones (same level,
// message and error text) within the window are counted instead. When the
// window closes, a timer writes the count: a summary line (the first
// suppressed line, stamped with the time it is written, with "suppressed":
// N and "summary": true), which starts the kind's next window; a line of
// the kind that arrives after its window but before the timer carries the
// count itself. So a flood writes one line per window as it happens, never a
// backlog at shutdown. Lines of different kinds never hold each other back.
//
// It works at the core rather than as a helper around calls so that any
// zap.Logger can use it (logger.WithOptions(zap.WrapCore(...))) and so that
// fields added by With, such as the consumer's name, stay with the lines.
// Fields other than the error (message IDs, attempts) are not part of the
// kind: the line that is written shows the first example, the count says how
// many were like it.
package lograte

import (
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// MaxKinds bounds how many kinds of line one core tracks. Beyond it, lines
// of new kinds are written unlimited until old kinds expire: a log that gets
// too many distinct lines gets them all rather than losing any silently.
const MaxKinds = 256

// Clock is a core's time source: the window timer runs on it, so tests
// can close windows without waiting for them.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop cancels the call; it reports whether it did so before the call.
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// NewCore returns a core that writes through to inner and limits each kind
// of line to one per window. A window <= 0 disables limiting.
func NewCore(inner zapcore.Core, window time.Duration) zapcore.Core {
	return NewCoreClock(inner, window, realClock{})
}

// NewCoreClock is NewCore on the given clock.
func NewCoreClock(inner zapcore.Core, window time.Duration, clk Clock) zapcore.Core {
	if window <= 0 {
		return inner
	}
	return &core{Core: inner, st: &state{window: window, kinds: make(map[kind]*tally), clk: clk}}
}

// WrapLogger is NewCore applied to a logger.
func WrapLogger(l *zap.Logger, window time.Duration) *zap.Logger {
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return NewCore(c, window) }))
}

type kind struct {
	level zapcore.Level
	msg   string
	err   string
}

type tally struct {
	since      time.Time // when the last written line of this kind went out
	suppressed int
	example    zapcore.Entry   // the first suppressed line, for the summary
	fields     []zapcore.Field // and its fields
	core       zapcore.Core    // the core (with its With fields) that saw it
}

// state is shared by a core and every core derived from it by With, so a
// consumer's lines are limited together whatever fields they were given.
type state struct {
	window time.Duration
	clk    Clock

	mu        sync.Mutex
	kinds     map[kind]*tally
	lastSweep time.Time
	timer     Timer     // armed while a count is pending
	timerAt   time.Time // when it fires; zero when not armed
}

type core struct {
	zapcore.Core
	st *state
}

// With keeps the shared state so that derived loggers are limited together.
func (c *core) With(fields []zapcore.Field) zapcore.Core {
	return &core{Core: c.Core.With(fields), st: c.st}
}

// Check adds this core (not the inner one) so that Write sees the entry.
func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write writes the line, or counts it if one of its kind went out less than
// a window ago.
func (c *core) Write(e zapcore.Entry, fields []zapcore.Field) error {
	k := kind{level: e.Level, msg: e.Message, err: errorText(fields)}
	st := c.st
	now := st.clk.Now()
	st.mu.Lock()
	due := st.sweep(now, k)
	t, seen := st.kinds[k]
	write, suppressed := true, 0
	switch {
	case seen && now.Sub(t.since) < st.window:
		if t.suppressed == 0 {
			t.example, t.fields, t.core = e, append([]zapcore.Field(nil), fields...), c.Core
			st.arm(t.since.Add(st.window), now)
		}
		t.suppressed++
		write = false
	case seen:
		suppressed = t.suppressed
		t.since, t.suppressed, t.fields, t.core = now, 0, nil, nil
	case len(st.kinds) < MaxKinds:
		st.kinds[k] = &tally{since: now}
	}
	st.mu.Unlock()
	for _, s := range due {
		s.write()
	}
	if !write {
		return nil
	}
	if suppressed > 0 {
		fields = append(fields[:len(fields):len(fields)], zap.Int("suppressed", suppressed))
	}
	return c.Core.Write(e, fields)
}

// summary is a pending count whose window ended with no line of its kind to
// carry it: it is written as the first suppressed example with the count.
type summary struct {
	core   zapcore.Core
	entry  zapcore.Entry
	fields []zapcore.Field
	n      int
}

func (s summary) write() {
	_ = s.core.Write(s.entry, append(s.fields, zap.Int("suppressed", s.n), zap.Bool("summary", true)))
}

// arm makes the timer fire at at, unless it fires earlier already. Called
// with mu held.
func (st *state) arm(at, now time.Time) {
	if !st.timerAt.IsZero() && !st.timerAt.After(at) {
		return
	}
	if st.timer != nil {
		st.timer.Stop()
	}
	st.timer, st.timerAt = st.clk.AfterFunc(at.Sub(now), st.fire), at
}

// fire writes the counts whose windows have closed, each as a summary line
// that opens the kind's next window, and re-arms for the next pending one.
func (st *state) fire() {
	st.mu.Lock()
	now := st.clk.Now()
	st.timer, st.timerAt = nil, time.Time{}
	var due []summary
	var next time.Time
	for _, t := range st.kinds {
		if t.suppressed == 0 {
			continue
		}
		end := t.since.Add(st.window)
		if now.Before(end) {
			if next.IsZero() || end.Before(next) {
				next = end
			}
			continue
		}
		due = append(due, t.summary(now))
		t.since, t.suppressed, t.fields, t.core = now, 0, nil, nil
	}
	if !next.IsZero() {
		st.arm(next, now)
	}
	st.mu.Unlock()
	for _, s := range due {
		s.write()
	}
}

// summary is t's pending count as a line written at now.
func (t *tally) summary(now time.Time) summary {
	e := t.example
	e.Time = now // written now, about the window that just closed
	return summary{core: t.core, entry: e, fields: t.fields, n: t.suppressed}
}

// sweep, at most once a window, forgets kinds whose window ended and
// returns the counts they still held, so that a burst followed by silence
// is still reported. The kind being written is left to Write, which puts
// its count on the line it writes. Called with mu held.
func (st *state) sweep(now time.Time, skip kind) []summary {
	if now.Sub(st.lastSweep) < st.window {
		return nil
	}
	st.lastSweep = now
	var due []summary
	for k, t := range st.kinds {
		if k == skip || now.Sub(t.since) < st.window {
			continue
		}
		if t.suppressed > 0 {
			due = append(due, t.summary(now))
		}
		delete(st.kinds, k)
	}
	return due
}

// Sync also writes the counts still pending, so that nothing counted is lost
// when the process exits.
func (c *core) Sync() error {
	st := c.st
	st.mu.Lock()
	now := st.clk.Now()
	var due []summary
	for k, t := range st.kinds {
		if t.suppressed > 0 {
			due = append(due, t.summary(now))
		}
		delete(st.kinds, k)
	}
	if st.timer != nil {
		st.timer.Stop()
		st.timer, st.timerAt = nil, time.Time{}
	}
	st.mu.Unlock()
	for _, s := range due {
		s.write()
	}
	return c.Core.Sync()
}

// errorText is the text of the line's "error" field, the part of a line
// that says what went wrong.
func errorText(fields []zapcore.Field) string {
	for i := range fields {
		f := &fields[i]
		if f.Key != "error" {
			continue
		}
		switch f.Type {
		case zapcore.ErrorType:
			if err, ok := f.Interface.(error); ok && err != nil {
				return err.Error()
			}
		case zapcore.StringType:
			return f.String
		}
	}
	return ""
}
