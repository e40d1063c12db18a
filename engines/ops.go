package engines

import "context"

// The interfaces below are optional extensions of Queue for operators:
// looking at messages without consuming them, emptying a queue and moving
// dead letters back to where they came from. The admin API asserts them on a
// Queue and reports ErrUnsupported for a queue that lacks one. enginetest
// exercises each one a queue implements.

// Peeker is a Queue that can show its messages without leasing them.
type Peeker interface {
	// Peek returns up to max messages that are ready or delayed, in the
	// order they would be delivered (delayed ones after the ready ones, by
	// visibility time). The deliveries carry no lease: settling one returns
	// ErrNotLeased. Peek changes nothing: no attempt is counted and no TTL
	// clock is touched.
	Peek(ctx context.Context, max int) ([]Delivery, error)

	// PeekPage returns one page of a scan of the whole queue, in the
	// engine's scan order (its storage order, which is not the delivery
	// order), starting after opts.After. Pass the page's Next as After to
	// get the next page; Next is "" once the scan has seen everything. A
	// message present for the whole scan is returned exactly once, however
	// the queue changes meanwhile (enqueues, deliveries, settles, retries);
	// one added or removed during the scan may or may not be. Like Peek it
	// leases nothing and changes nothing. An After the engine did not make
	// is ErrInvalid.
	PeekPage(ctx context.Context, opts PeekOptions) (PeekPage, error)
}

// PeekOptions select one page of a PeekPage scan.
type PeekOptions struct {
	// Max is the most messages the page holds, at least 1. A page may hold
	// fewer while the scan is not over.
	Max int
	// After is the cursor of the previous page (its Next); "" starts the
	// scan. It is opaque: each engine defines its own (a position, a
	// sequence number), which is what keeps a scan stable while the queue
	// changes.
	After string
	// InFlight includes messages leased by a consumer; without it only
	// ready and delayed messages are returned.
	InFlight bool
}

// PeekPage is one page of a scan.
type PeekPage struct {
	Messages []Peeked
	// Next continues the scan; "" when it is complete.
	Next string
}

// Peeked is one message of a PeekPage: a delivery without a lease and the
// state the message was in when the page was read.
type Peeked struct {
	Delivery
	State MessageState
}

// MessageState is where a message stands in its queue.
type MessageState uint8

// Message states. A message waiting behind its ordering key is ready.
const (
	StateReady MessageState = iota
	StateDelayed
	StateInFlight
)

// String is the state's name in the admin API and the CLI.
func (s MessageState) String() string {
	switch s {
	case StateReady:
		return "ready"
	case StateDelayed:
		return "delayed"
	case StateInFlight:
		return "in_flight"
	}
	return "unknown"
}

// Events receives what an engine knows about its connection to the storage
// underneath and nobody outside can see: the runtime counts them in its
// metrics (qrun_engine_errors_total, qrun_engine_reconnects_total). An
// engine that takes Events calls them from any goroutine; they must be
// cheap and safe for concurrent use.
type Events interface {
	// Error counts a failure of op ("listen", "connect", ...).
	Error(op string, err error)
	// Reconnected counts a connection re-established after one was lost.
	Reconnected()
}

// NopEvents is Events that records nothing.
type NopEvents struct{}

// Error implements Events.
func (NopEvents) Error(string, error) {}

// Reconnected implements Events.
func (NopEvents) Reconnected() {}

// Purger is a Queue that can be emptied.
type Purger interface {
	// Purge removes every ready and delayed message and returns how many it
	// removed. Messages in flight are left to their holders.
	Purge(ctx context.Context) (int64, error)
}

// Redriver is a Queue (normally a dead-letter queue) whose messages can be
// moved back to the queue they were dead-lettered from.
type Redriver interface {
	// Redrive moves the messages with the given IDs (every ready and delayed
	// message when ids is empty) to the queue named by their
	// AttrDeadLetterSource attribute, in the same engine. A redriven message
	// keeps its ID, body and other attributes, loses the two dead-letter
	// attributes, starts again at attempt 1 with no failures, and is
	// visible at once. Messages without a source attribute, or whose ID is
	// not in the queue, are skipped. It returns how many it moved.
	Redrive(ctx context.Context, ids []string) (int, error)
}

// GroupSettler is a Queue whose settles become durable in commits shared
// by many callers: one transaction and one fsync for all the verdicts that
// arrive while the previous commit runs. A caller starts each settle the
// moment its verdict is decided and waits for durability later, once for
// many, so no verdict waits for the others to be decided. The dispatcher
// does this with a receive batch: each verdict joins the engine's next
// commit as its handler returns, and the worker waits for them all at the
// end of the batch, before it reuses the receive buffer or counts them. A
// verdict is therefore durable within about two commit times of its
// handler returning (the commit in progress, then its own), however many
// deliveries the batch still holds and however slow their handler is;
// waiting for the whole batch before starting any (the shape this replaced)
// left a batch's first acks undone by a crash for up to the batch's whole
// handling time.
type GroupSettler interface {
	// StartSettle applies s to d as d.Settle would, except that it may
	// return before the outcome is durable. The settle takes effect at
	// once (a second settle of d reports ErrLeaseLost); an error means it
	// was not applied. Until Wait on the returned Pending has returned nil
	// the settle may be undone by a crash; a nil Pending needs no wait.
	StartSettle(ctx context.Context, d *Delivery, s Settlement) (Pending, error)
}

// Pending is a settle that has been applied and may not be durable yet.
type Pending interface {
	// Wait blocks until the settle is exactly as durable as Settle would
	// have made it before returning, or ctx ends. An error means its
	// durability is unknown (the engine's commit failed, or ctx ended).
	Wait(ctx context.Context) error
}

// SettleAll settles ds[i] with ss[i] into errs[i]. For a GroupSettler it
// starts every settle before waiting for any, so they share commits; other
// queues settle one delivery at a time. When it returns, each successful
// settle is exactly as durable as Settle would have made it.
func SettleAll(ctx context.Context, q Queue, ds []*Delivery, ss []Settlement, errs []error) {
	gs, ok := q.(GroupSettler)
	if !ok {
		for i, d := range ds {
			errs[i] = d.Settle(ctx, ss[i])
		}
		return
	}
	ps := make([]Pending, len(ds))
	for i, d := range ds {
		ps[i], errs[i] = gs.StartSettle(ctx, d, ss[i])
	}
	for i, p := range ps {
		if p != nil && errs[i] == nil {
			errs[i] = p.Wait(ctx)
		}
	}
}
