package plugin

import "github.com/qrun-dev/qrun/engines"

// Trace context attributes (W3C Trace Context,
// https://www.w3.org/TR/trace-context/). qrun records no spans; it carries
// the context so that the chain of handlers one message sets off can be
// followed in the logs: every log line about a delivery, the guest's own
// included, shows the traceparent, and a message a handler publishes
// inherits it.
const (
	AttrTraceParent = "traceparent"
	AttrTraceState  = "tracestate"
)

// inheritTrace copies the trace context of the delivery being handled onto
// a message the guest publishes, unless the guest set a traceparent of its
// own (a guest that starts spans knows better). The value is copied as is:
// qrun does not create spans, so there is no new parent id to put in it.
func inheritTrace(msg *engines.Message, from *engines.Delivery) {
	tp, ok := from.Attributes[AttrTraceParent]
	if !ok {
		return
	}
	if _, own := msg.Attributes[AttrTraceParent]; own {
		return
	}
	if msg.Attributes == nil {
		msg.Attributes = make(map[string]string, 2)
	}
	msg.Attributes[AttrTraceParent] = tp
	if ts, ok := from.Attributes[AttrTraceState]; ok {
		msg.Attributes[AttrTraceState] = ts
	}
}
