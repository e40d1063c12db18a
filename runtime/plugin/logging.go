package plugin

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/qrun-dev/qrun/abi"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// guestLog writes one guest line (from log or from stdout/stderr) if the
// plugin's budget allows, and returns 0 or abi.ErrRateLimited. Lines below
// the logger's level are discarded without spending budget, so debug logging
// in a guest costs nothing in production.
//
// truncated marks a line cut to maxLine; the caller has counted the rest.
func (p *Plugin) guestLog(st *instanceState, lvl zapcore.Level, msg []byte, source string, truncated bool) int32 {
	if !p.log.Core().Enabled(lvl) {
		return 0
	}
	if !p.limiter.allow(time.Now()) {
		return abi.ErrRateLimited
	}
	fields := make([]zap.Field, 0, 6)
	fields = append(fields, zap.String("source", source))
	if truncated {
		fields = append(fields, zap.Bool("truncated", true))
	}
	if d := st.d; d != nil {
		fields = append(fields, zap.String("queue", d.Queue), zap.String("message_id", d.ID), zap.Int("attempt", d.Attempt))
		if tp, ok := d.Attributes[AttrTraceParent]; ok {
			fields = append(fields, zap.String(AttrTraceParent, tp))
		}
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

// maxLine bounds one guest log line, from log or from stdout/stderr, in
// bytes. A longer line is cut to at most maxLine bytes (at a UTF-8 boundary
// where there is one), logged with truncated=true, and the rest of it is
// dropped and counted in Plugin.LogTruncatedBytes. This bounds both host
// memory and the work a guest can cause per byte it writes.
const maxLine = 4096

// truncateLine cuts b to at most n bytes, at the start of a UTF-8 sequence
// where there is one near n so that the cut does not leave half a character.
func truncateLine(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return b[:runeCut(b[:n], b[n])]
}

// runeCut returns how much of head to keep when head is followed by next,
// a byte that is cut off: all of it, unless next continues a UTF-8 sequence
// that starts at most three bytes back in head, which is then left out too.
func runeCut(head []byte, next byte) int {
	k := len(head)
	for i := 0; i < utf8.UTFMax-1 && k > 0 && !utf8.RuneStart(next); i++ {
		k--
		next = head[k]
	}
	if !utf8.RuneStart(next) {
		return len(head) // not UTF-8 anyway
	}
	return k
}

// lineWriter turns a guest's WASI stdout or stderr into log lines.
// Each instance has its own, so lines of parallel instances do not mix.
type lineWriter struct {
	st     *instanceState
	source string
	buf    []byte // the current line so far; never more than maxLine bytes
	cut    bool   // the current line was logged truncated: drop up to its newline
}

// Write logs each complete line of b and buffers the incomplete last one.
// It looks at each byte of b once and copies at most maxLine bytes of each
// line, so a guest's huge fd_write costs the host time linear in its size
// and memory bounded by maxLine.
func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.add(b)
			break
		}
		w.add(b[:i])
		w.endLine()
		b = b[i+1:]
	}
	return n, nil
}

// add appends part of the current line, cutting the line at maxLine.
func (w *lineWriter) add(part []byte) {
	if w.cut {
		w.st.p.truncated.Add(uint64(len(part)))
		return
	}
	room := maxLine - len(w.buf)
	if len(part) <= room {
		w.buf = append(w.buf, part...)
		return
	}
	w.buf = append(w.buf, part[:room]...)
	line := w.buf[:runeCut(w.buf, part[room])]
	w.st.p.truncated.Add(uint64(len(w.buf) - len(line) + len(part) - room))
	w.emit(line, true)
	w.buf = w.buf[:0]
	w.cut = true
}

// endLine logs the current line at a newline, unless it was already logged
// truncated, and starts the next.
func (w *lineWriter) endLine() {
	if !w.cut && len(w.buf) > 0 {
		w.emit(w.buf, false)
	}
	w.buf = w.buf[:0]
	w.cut = false
}

// flush logs a pending incomplete line; the instance is going away.
func (w *lineWriter) flush() {
	w.endLine()
}

func (w *lineWriter) emit(line []byte, truncated bool) {
	lvl := zapcore.InfoLevel
	if w.source == "stderr" {
		lvl = zapcore.WarnLevel
	}
	w.st.p.guestLog(w.st, lvl, line, w.source, truncated)
}
