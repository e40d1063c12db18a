// Package lograte keeps repeated identical log lines from flooding a log.
//
// A database that goes down makes every worker fail every call with the same
// error, thousands of times a second; a handler with a bug traps on every
// message with the same stack. Logging each one buries everything else and
// costs more than the work itself. NewCore wraps a zapcore.Core so that the
// first line of a kind is written at once and identical ones (same level,
// message and error text) within the window are counted instead; when the
// kind comes up again after the window, or when any line passes through
// after the window ended, a line is written carrying the count in a
// "suppressed" field. Lines of different kinds never hold each other back.
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

// NewCore returns a core that writes through to inner and limits each kind
// of line to one per window. A window <= 0 disables limiting.
func NewCore(inner zapcore.Core, window time.Duration) zapcore.Core {
	if window <= 0 {
		return inner
	}
	return &core{Core: inner, st: &state{window: window, kinds: make(map[kind]*tally), now: time.Now}}
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
	now    func() time.Time

	mu        sync.Mutex
	kinds     map[kind]*tally
	lastSweep time.Time
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
	now := st.now()
	st.mu.Lock()
	due := st.sweep(now, k)
	t, seen := st.kinds[k]
	write, suppressed := true, 0
	switch {
	case seen && now.Sub(t.since) < st.window:
		if t.suppressed == 0 {
			t.example, t.fields, t.core = e, append([]zapcore.Field(nil), fields...), c.Core
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
			// The entry is re-stamped: it is written now, about the past window.
			e := t.example
			e.Time = now
			due = append(due, summary{core: t.core, entry: e, fields: t.fields, n: t.suppressed})
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
	var due []summary
	for k, t := range st.kinds {
		if t.suppressed > 0 {
			due = append(due, summary{core: t.core, entry: t.example, fields: t.fields, n: t.suppressed})
		}
		delete(st.kinds, k)
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
