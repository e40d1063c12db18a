package plugin

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qrun-dev/qrun/abi"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func errField(err error) zap.Field { return zap.Error(err) }

// guestLog writes one guest line (from log or from stdout/stderr) if the
// plugin's budget allows, and returns 0 or abi.ErrRateLimited. Lines below
// the logger's level are discarded without spending budget, so debug logging
// in a guest costs nothing in production.
func (p *Plugin) guestLog(st *instanceState, lvl zapcore.Level, msg []byte, source string) int32 {
	if !p.log.Core().Enabled(lvl) {
		return 0
	}
	if !p.limiter.allow(time.Now()) {
		return abi.ErrRateLimited
	}
	fields := make([]zap.Field, 0, 4)
	fields = append(fields, zap.String("source", source))
	if d := st.d; d != nil {
		fields = append(fields, zap.String("queue", d.Queue), zap.String("message_id", d.ID), zap.Int("attempt", d.Attempt))
	}
	p.log.Log(lvl, string(msg), fields...)
	return 0
}

// logLimiter is a token bucket shared by all instances of a plugin: the
// budget is the consumer's, so adding instances does not multiply a flood.
type logLimiter struct {
	log     *zap.Logger
	dropped atomic.Uint64 // total, for metrics and tests

	mu           sync.Mutex
	rate         float64 // tokens per second; burst is the same number
	tokens       float64
	last         time.Time
	pending      uint64    // dropped since the last summary line
	pendingSince time.Time // first drop not yet summarised
}

func newLogLimiter(rate int, log *zap.Logger) *logLimiter {
	return &logLimiter{log: log, rate: float64(rate), tokens: float64(rate)}
}

func (l *logLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	if !l.last.IsZero() {
		l.tokens += now.Sub(l.last).Seconds() * l.rate
		if l.tokens > l.rate {
			l.tokens = l.rate
		}
	}
	l.last = now
	ok := l.tokens >= 1
	if ok {
		l.tokens--
	} else {
		l.dropped.Add(1)
		if l.pending == 0 {
			l.pendingSince = now
		}
		l.pending++
	}
	l.mu.Unlock()
	l.summarize(now, false)
	return ok
}

// summarize emits "dropped N guest log lines" at most once per second, so a
// flooding guest produces one line a second instead of none or thousands.
// force is for Close, where nothing will come later.
func (l *logLimiter) summarize(now time.Time, force bool) {
	l.mu.Lock()
	n := l.pending
	if n == 0 || (!force && now.Sub(l.pendingSince) < time.Second) {
		l.mu.Unlock()
		return
	}
	l.pending = 0
	l.mu.Unlock()
	l.log.Warn(fmt.Sprintf("dropped %d guest log lines", n), zap.Uint64("dropped", n))
}

// maxLine bounds a buffered stdout/stderr line so a guest that never writes a
// newline cannot grow host memory without limit.
const maxLine = 4096

// lineWriter turns a guest's WASI stdout or stderr into log lines.
// Each instance has its own, so lines of parallel instances do not mix.
type lineWriter struct {
	st     *instanceState
	source string
	buf    []byte
}

// Write buffers b and logs each complete line.
func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.buf = append(w.buf, b...)
			for len(w.buf) >= maxLine {
				w.emit(w.buf[:maxLine])
				w.buf = append(w.buf[:0], w.buf[maxLine:]...)
			}
			break
		}
		w.buf = append(w.buf, b[:i]...)
		w.flush()
		b = b[i+1:]
	}
	return n, nil
}

func (w *lineWriter) flush() {
	if len(w.buf) == 0 {
		return
	}
	w.emit(w.buf)
	w.buf = w.buf[:0]
}

func (w *lineWriter) emit(line []byte) {
	lvl := zapcore.InfoLevel
	if w.source == "stderr" {
		lvl = zapcore.WarnLevel
	}
	w.st.p.guestLog(w.st, lvl, line, w.source)
}
