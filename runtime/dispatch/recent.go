package dispatch

import (
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// RecentErrorsKept is how many of a consumer's latest errors RecentErrors keeps.
const RecentErrorsKept = 10

// ErrorRecord is one recent failure of a consumer, for operators.
type ErrorRecord struct {
	Time time.Time `json:"time"`
	// What failed: "handler", "settle", "receive" or "instance".
	Kind string `json:"kind"`
	// MessageID and Attempt are empty for failures not tied to a message.
	MessageID string `json:"message_id,omitempty"`
	Attempt   int    `json:"attempt,omitempty"`
	Error     string `json:"error"`
}

// recentErrors is a small ring, written only when something failed, so it
// costs the delivery path nothing when all is well.
type recentErrors struct {
	mu   sync.Mutex
	buf  [RecentErrorsKept]ErrorRecord
	next int
	n    int
}

func (r *recentErrors) add(e ErrorRecord) {
	r.mu.Lock()
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
	r.n = min(r.n+1, len(r.buf))
	r.mu.Unlock()
}

// RecentErrors returns the consumer's latest failures, newest first.
func (c *Consumer) RecentErrors() []ErrorRecord {
	r := &c.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ErrorRecord, 0, r.n)
	for i := 1; i <= r.n; i++ {
		out = append(out, r.buf[(r.next-i+len(r.buf))%len(r.buf)])
	}
	return out
}

// QueueName is the name of the queue the consumer reads.
func (c *Consumer) QueueName() string { return c.cfg.Queue.Name() }

// Concurrency is the number of workers.
func (c *Consumer) Concurrency() int { return c.cfg.Concurrency }

// deliveryFields are the fields every line about a delivery carries (the
// consumer and queue come with the consumer's logger).
func deliveryFields(d *engines.Delivery, extra ...zap.Field) []zap.Field {
	f := make([]zap.Field, 0, 4+len(extra))
	f = append(f, zap.String("message_id", d.ID), zap.Int("attempt", d.Attempt))
	if tp, ok := d.Attributes[plugin.AttrTraceParent]; ok {
		f = append(f, zap.String(plugin.AttrTraceParent, tp))
	}
	return append(f, extra...)
}

// logOutcome writes the one line, if any, that a delivery's attempt gets:
// failures (an error from the handler, a nack, a dead letter, a verdict the
// engine did not take) say what happened with the message's id, attempt,
// verdict and error. Identical lines are rate-limited by the consumer's
// logger (package lograte), so a handler failing every message, or an
// engine that is down, does not flood the log.
func (w *worker) logOutcome(d *engines.Delivery, s engines.Settlement, handlerErr, settleErr error, took time.Duration) {
	c := w.c
	now := time.Now()
	if handlerErr != nil {
		c.recent.add(ErrorRecord{Time: now, Kind: "handler", MessageID: d.ID, Attempt: d.Attempt, Error: handlerErr.Error()})
	}
	if settleErr != nil {
		c.recent.add(ErrorRecord{Time: now, Kind: "settle", MessageID: d.ID, Attempt: d.Attempt, Error: settleErr.Error()})
	}
	verdict := zap.Stringer("verdict", s.Verdict)
	switch {
	case errors.Is(settleErr, engines.ErrLeaseLost):
		c.log.Warn("lease lost before the verdict was applied; the message will be redelivered",
			deliveryFields(d, verdict, zap.Error(handlerErr), zap.NamedError("settle_error", settleErr), zap.Duration("took", took))...)
	case settleErr != nil:
		c.log.Error("applying verdict failed",
			deliveryFields(d, verdict, zap.Error(settleErr), zap.NamedError("handler_error", handlerErr))...)
	case handlerErr != nil:
		c.log.Warn("handler failed", deliveryFields(d, verdict, zap.Error(handlerErr), zap.Duration("retry_in", s.Delay))...)
	case s.Verdict == engines.Nack:
		c.log.Debug("handler nacked", deliveryFields(d, verdict, zap.Duration("retry_in", s.Delay))...)
	case s.Verdict == engines.DeadLetter:
		c.log.Info("dead-lettered by handler", deliveryFields(d, verdict)...)
	}
}
