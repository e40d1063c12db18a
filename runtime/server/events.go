package server

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Observer is told about every settled delivery of every consumer, on the
// dispatcher's goroutine: it must be cheap, must not block and must be
// safe for concurrent use. Benchmarks and metrics use it; a program that
// wants events without those constraints uses Subscribe.
type Observer interface {
	Settled(d *engines.Delivery, v engines.Verdict, handled time.Duration)
}

// EventKind says what happened to a delivery.
type EventKind uint8

// The delivery events a Subscription can ask for.
const (
	// EventDeliveryStarted: a delivery is about to be handed to the plugin.
	EventDeliveryStarted EventKind = 1 << iota
	// EventDeliveryFinished: the engine has applied the delivery's
	// verdict. A delivery whose lease was lost, or that was released by a
	// drain, has no finished event: it will be delivered again.
	EventDeliveryFinished
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventDeliveryStarted:
		return "delivery_started"
	case EventDeliveryFinished:
		return "delivery_finished"
	}
	return "unknown"
}

// Event is one delivery event.
type Event struct {
	Kind EventKind
	// Consumer and Queue name where the delivery happened.
	Consumer, Queue string
	// MessageID is the message's ID within Queue.
	MessageID string
	// Attempt counts deliveries of this message, starting at 1.
	Attempt int
	// Verdict is the verdict applied (finished only). A trap or a timeout
	// of the handler is a Nack.
	Verdict engines.Verdict
	// Latency is how long the handler call took (finished only).
	Latency time.Duration
}

// Subscription receives delivery events on a buffered channel. The
// dispatcher never waits for a subscriber: when the buffer is full the
// event is dropped and counted (Dropped), so a slow reader costs events,
// never throughput.
type Subscription struct {
	ch      chan Event
	kinds   EventKind
	dropped atomic.Uint64
	hub     *eventHub
}

// Events is the channel events arrive on. It is never closed (a send on
// a closed channel would have to be guarded on every delivery): stop
// reading when you Close the subscription or the server is Done.
func (sub *Subscription) Events() <-chan Event { return sub.ch }

// Dropped counts the events lost because the buffer was full.
func (sub *Subscription) Dropped() uint64 { return sub.dropped.Load() }

// Close stops the subscription; an event already on its way may still
// arrive.
func (sub *Subscription) Close() { sub.hub.remove(sub) }

// DefaultEventBuffer is the buffer of a Subscription asked for with 0.
const DefaultEventBuffer = 1024

// Subscribe returns a subscription to the given kinds of delivery events
// of every consumer (both kinds if none is given), buffering up to buffer
// events (DefaultEventBuffer if buffer <= 0). It may be called before or
// after Start.
func (s *Server) Subscribe(buffer int, kinds ...EventKind) *Subscription {
	if buffer <= 0 {
		buffer = DefaultEventBuffer
	}
	var mask EventKind
	for _, k := range kinds {
		mask |= k
	}
	if mask == 0 {
		mask = EventDeliveryStarted | EventDeliveryFinished
	}
	sub := &Subscription{ch: make(chan Event, buffer), kinds: mask, hub: &s.events}
	s.events.add(sub)
	return sub
}

// eventHub fans events out to subscriptions. The list is copied on write,
// so a delivery reads it with one atomic load and no lock, and a server
// nobody subscribed to pays only that load.
type eventHub struct {
	mu   sync.Mutex // serialises writers
	subs atomic.Pointer[[]*Subscription]
}

func (h *eventHub) add(sub *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var next []*Subscription
	if cur := h.subs.Load(); cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, sub)
	h.subs.Store(&next)
}

func (h *eventHub) remove(sub *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.subs.Load()
	if cur == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*cur), func(s *Subscription) bool { return s == sub })
	h.subs.Store(&next)
}

// list returns the subscriptions, nil when there are none; publish
// filters them by kind.
func (h *eventHub) list() []*Subscription {
	if p := h.subs.Load(); p != nil && len(*p) > 0 {
		return *p
	}
	return nil
}

func (h *eventHub) publish(subs []*Subscription, ev Event) {
	for _, sub := range subs {
		if sub.kinds&ev.Kind == 0 {
			continue
		}
		select {
		case sub.ch <- ev:
		default:
			sub.dropped.Add(1)
		}
	}
}

// consumerObserver is the dispatcher's Observer for one consumer: it
// passes settlements to Options.Observer and turns both hooks into events
// for the subscriptions, naming the consumer the dispatcher does not.
type consumerObserver struct {
	consumer, queue string
	user            Observer
	hub             *eventHub
}

// Started implements dispatch.StartObserver.
func (o *consumerObserver) Started(d *engines.Delivery) {
	if subs := o.hub.list(); subs != nil {
		o.hub.publish(subs, Event{Kind: EventDeliveryStarted, Consumer: o.consumer, Queue: o.queue, MessageID: d.ID, Attempt: d.Attempt})
	}
}

// Settled implements dispatch.Observer.
func (o *consumerObserver) Settled(d *engines.Delivery, v engines.Verdict, handled time.Duration) {
	if o.user != nil {
		o.user.Settled(d, v, handled)
	}
	if subs := o.hub.list(); subs != nil {
		o.hub.publish(subs, Event{Kind: EventDeliveryFinished, Consumer: o.consumer, Queue: o.queue,
			MessageID: d.ID, Attempt: d.Attempt, Verdict: v, Latency: handled})
	}
}
