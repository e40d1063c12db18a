package lograte

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// clock is a manual time source for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestLogger(window time.Duration) (*zap.Logger, *observer.ObservedLogs, *clock) {
	obs, logs := observer.New(zapcore.DebugLevel)
	clk := &clock{t: time.Unix(1000, 0)}
	c := NewCore(obs, window).(*core)
	c.st.now = clk.now
	return zap.New(c), logs, clk
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
	clk.t = clk.t.Add(11 * time.Second)
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
	clk.t = clk.t.Add(2 * time.Second)
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
	log, logs, _ := newTestLogger(time.Hour)
	for range 3 {
		log.Error("x", zap.String("error", "boom"))
	}
	_ = log.Sync()
	all := logs.AllUntimed()
	if len(all) != 2 || suppressedOf(all[1]) != 2 {
		t.Fatalf("after Sync: %v, want the line and a summary of 2", all)
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
