package dispatch

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

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
// verdict and error, or the reason of a nack or dead letter (the guest's
// set_reason text, or a default). Identical lines are rate-limited by the
// consumer's logger (package lograte), so a handler failing every message,
// or an engine that is down, does not flood the log.
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
		c.log.Debug("handler nacked", deliveryFields(d, verdict, zap.Duration("retry_in", s.Delay), zap.String("reason", s.Reason))...)
	case s.Verdict == engines.DeadLetter:
		c.log.Info("dead-lettered by handler", deliveryFields(d, verdict, zap.String("reason", s.Reason))...)
	}
}
