// Package engines defines the contract between qrun's runtime and its queue
// engines. An engine owns storage and leasing; the runtime owns plugins,
// retry policy and routing. Every engine is proven against the same
// conformance suite (package enginetest), which skips only what an engine's
// Capabilities say it cannot do.
//
// The contract is batch-first: Enqueue takes many messages and Receive returns
// many deliveries, so an engine can amortise locks, fsyncs and round trips.
// A Delivery is a value, not an interface, so the runtime can receive into a
// slice without allocating per message.
package engines

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/qrun-dev/qrun/abi"
)

// Engine is one configured storage backend. It opens queues by spec; opening
// the same name twice returns handles on the same queue.
type Engine interface {
	// Open creates the queue if needed and returns a handle on it. Opening
	// an existing queue with a spec holding only a Name attaches to it as it
	// is; a fuller spec replaces its settings (the latest wins, which is what
	// a config reload wants).
	Open(ctx context.Context, spec QueueSpec) (Queue, error)
	// Capabilities declares what the engine implements natively.
	Capabilities() Capabilities
	// Close releases the engine. Queues opened from it return ErrClosed after.
	Close() error
}

// Queue is a handle on one named queue. All methods are safe for concurrent use.
type Queue interface {
	// Name is the queue name the handle was opened with.
	Name() string
	// Enqueue stores msgs atomically as far as the engine allows. The engine
	// assigns an ID to every message whose ID is empty and writes it back into
	// msgs[i].ID, so a caller passing a slice sees the IDs (a message dropped
	// as a duplicate gets the ID of the one it duplicates). The engine may keep
	// references to Body and Attributes: the caller must not modify them after.
	Enqueue(ctx context.Context, msgs ...Message) error
	// Receive leases up to len(buf) messages into buf and returns how many
	// (an empty buf is ErrInvalid). Like io.Reader it fills the caller's
	// buffer, so a consumer that reuses one receives without allocating. It
	// blocks until at least one message is available or ctx is done, in
	// which case it returns ctx.Err(). A Receive whose ctx ends while it
	// is leasing may still return what it leased, with a nil error: those
	// deliveries are the caller's to settle (Requeue hands them back). It
	// never leases a message it does not return, which would hide it for a
	// whole lease and then count a failure nobody caused. Each delivery is
	// invisible to other receivers until it is settled or its lease
	// expires. ReceiveN is the allocating convenience.
	Receive(ctx context.Context, buf []Delivery) (int, error)
	// Stats reports the queue's current counters.
	Stats(ctx context.Context) (Stats, error)
	// Close releases the handle; later calls return ErrClosed. Leases held
	// through it stay valid until they expire.
	Close() error
}

// ReceiveN leases up to max messages from q into a new slice.
func ReceiveN(ctx context.Context, q Queue, max int) ([]Delivery, error) {
	if max < 1 {
		return nil, fmt.Errorf("receive from %q: max %d < 1: %w", q.Name(), max, ErrInvalid)
	}
	buf := make([]Delivery, max)
	n, err := q.Receive(ctx, buf)
	return buf[:n], err
}

// QueueSpec is what the runtime asks of a queue when it opens it.
type QueueSpec struct {
	// Name identifies the queue inside its engine. Engines must reject a name
	// they cannot store exactly rather than truncate it.
	Name string
	// VisibilityTimeout is the lease length of a delivery; zero means the
	// engine default (DefaultVisibilityTimeout).
	VisibilityTimeout time.Duration
	// MaxAttempts is the number of failures after which a message is
	// dead-lettered; zero means unlimited.
	MaxAttempts int
	// DeadLetter names the queue, in the same engine, that receives messages
	// which exhausted MaxAttempts or were dead-lettered explicitly. Empty means
	// such messages are dropped and counted. A dead letter keeps its ID, body,
	// EnqueuedAt, its history (the Attempt and Failures it had reached in
	// this queue: Peek shows them, and a delivery from the dead-letter queue
	// is the next attempt, so a dead-letter queue's own MaxAttempts counts
	// them too) and a copy of its attributes, to which AttrDeadLetterReason
	// and AttrDeadLetterSource are added; Delay, TTL and DedupID are cleared.
	// A redrive starts it again at attempt 1 with no failures.
	DeadLetter string
	// Ordered delivers messages sharing an OrderingKey one at a time, in
	// enqueue order (requires the Ordering capability). A key's head keeps
	// its place until it is acked or leaves the queue: after a nack or an
	// expired lease (its holder died), the head is delivered
	// again before the next message of its key, which is never in flight
	// together with it.
	Ordered bool
	// Retry is the queue's backoff after a failure. The runtime computes
	// the delay of every failure it sees itself and passes it with the
	// Nack; every engine uses Retry for the failure it alone sees, a lease
	// that expires (its holder died or hung, or, on a durable engine, the
	// lease was still outstanding when the process stopped). The expiry
	// counts one failure and, unless that reaches MaxAttempts (then the
	// message is dead-lettered at once), the message becomes visible again
	// after Retry.Delay(failures before it), counted from the expiry (from
	// the next open, for a lease found at open), rather than at once: a
	// message that kills or wedges its consumer, or crashes the process,
	// is not retried in a hot loop and does not burn its attempts in a
	// restart loop. Zero redelivers at once.
	Retry RetryPolicy
}

// DefaultVisibilityTimeout is the lease length used when a spec leaves it zero.
const DefaultVisibilityTimeout = 30 * time.Second

// Message is a message as enqueued.
type Message struct {
	// ID is unique within the queue. Assigned by the engine when empty.
	ID string
	// Body is the payload; empty is valid.
	Body []byte
	// Attributes are string key/value pairs carried with the message.
	Attributes map[string]string
	// ContentType describes Body (e.g. "application/json"); optional.
	ContentType string
	// CorrelationID ties related messages together; optional.
	CorrelationID string
	// OrderingKey groups messages that an ordered queue delivers in order.
	OrderingKey string
	// DedupID makes a second enqueue with the same value, within the queue's
	// dedup window, a no-op (requires the Dedup capability).
	DedupID string
	// Priority orders ready messages: higher first, FIFO within a priority.
	// Valid range 0..MaxPriority.
	Priority uint8
	// Delay keeps the message invisible for this long after enqueue.
	Delay time.Duration
	// TTL drops the message, counted as expired, if it has not been
	// delivered within this long of becoming visible; zero means forever.
	// Once delivered, a message is no longer subject to its TTL: it bounds
	// the wait for a consumer, not the handling, so a leased message is
	// never expired, an Ack after the TTL passed succeeds, and a nack,
	// requeue or lapsed lease redelivers it as if it had no TTL.
	TTL time.Duration
}

// MaxPriority is the highest message priority.
const MaxPriority = 255

// Delivery is one leased message. Settle it exactly once with Ack, Nack,
// Requeue or DeadLetter; Extend may be called any number of times before.
// Settling after the lease expired (and the message was handed to another
// receiver) returns ErrLeaseLost.
type Delivery struct {
	Message
	// Queue is the name of the queue the delivery came from.
	Queue string
	// Attempt counts deliveries of this message, starting at 1.
	Attempt int
	// Failures counts nacks and lease expiries before this delivery.
	Failures int
	// EnqueuedAt is when the message was first enqueued.
	EnqueuedAt time.Time
	// LeaseExpires is when the lease runs out unless extended.
	LeaseExpires time.Time

	settler Settler
	ticket  Ticket
}

// Settler is implemented by engines to settle deliveries. The runtime never
// calls it directly; it goes through Delivery's methods.
type Settler interface {
	Settle(ctx context.Context, t Ticket, s Settlement) error
	Extend(ctx context.Context, t Ticket, d time.Duration) (time.Time, error)
}

// Ticket identifies a lease inside its engine. Ref is typically a pointer to
// the engine's record (so storing it allocates nothing) and Token the lease
// generation that a stale holder no longer matches.
type Ticket struct {
	Ref   any
	Token uint64
}

// Settlement is what a consumer decided about a delivery.
type Settlement struct {
	Verdict Verdict
	// Delay before the message is visible again (Nack, Requeue).
	Delay time.Duration
	// Reason is recorded with nacks and dead letters.
	Reason string
}

// Verdict is the outcome of handling a delivery; the values are the ABI's
// verdict codes, so a guest's answer converts directly.
type Verdict uint8

// Verdicts.
const (
	// Ack removes the message.
	Ack Verdict = abi.VerdictAck
	// Nack counts a failure and makes the message visible again after Delay,
	// or dead-letters it when MaxAttempts is reached.
	Nack Verdict = abi.VerdictNack
	// Requeue makes the message visible again after Delay without counting a
	// failure.
	Requeue Verdict = abi.VerdictRequeue
	// DeadLetter moves the message to the dead-letter queue now.
	DeadLetter Verdict = abi.VerdictDeadLetter
)

// String names the verdict as logs and metrics spell it.
func (v Verdict) String() string { return abi.VerdictName(int32(v)) }

// NewDelivery is used by engines to build a delivery bound to their settler.
func NewDelivery(d Delivery, s Settler, t Ticket) Delivery {
	d.settler, d.ticket = s, t
	return d
}

// Ticket returns the engine's lease handle (for engines and wrappers).
func (d *Delivery) Ticket() Ticket { return d.ticket }

// Settle applies s to the delivery.
func (d *Delivery) Settle(ctx context.Context, s Settlement) error {
	if d.settler == nil {
		return ErrNotLeased
	}
	return d.settler.Settle(ctx, d.ticket, s)
}

// Ack removes the message from the queue.
func (d *Delivery) Ack(ctx context.Context) error {
	return d.Settle(ctx, Settlement{Verdict: Ack})
}

// Nack counts a failure; the message is visible again after delay, or
// dead-lettered when it reached MaxAttempts.
func (d *Delivery) Nack(ctx context.Context, delay time.Duration, reason string) error {
	return d.Settle(ctx, Settlement{Verdict: Nack, Delay: delay, Reason: reason})
}

// Requeue makes the message visible again after delay without counting a failure.
func (d *Delivery) Requeue(ctx context.Context, delay time.Duration) error {
	return d.Settle(ctx, Settlement{Verdict: Requeue, Delay: delay})
}

// DeadLetter moves the message to the dead-letter queue now.
func (d *Delivery) DeadLetter(ctx context.Context, reason string) error {
	return d.Settle(ctx, Settlement{Verdict: DeadLetter, Reason: reason})
}

// Extend sets the lease to expire at now+by (which may also shorten it) and
// records the new expiry; by <= 0 is ErrInvalid.
func (d *Delivery) Extend(ctx context.Context, by time.Duration) error {
	if d.settler == nil {
		return ErrNotLeased
	}
	exp, err := d.settler.Extend(ctx, d.ticket, by)
	if err == nil {
		d.LeaseExpires = exp
	}
	return err
}

// Stats are a queue's counters at one moment. Gauges describe the present;
// the *Total fields count since the engine started (or since the queue was
// created, for durable engines).
type Stats struct {
	Ready    int64 `json:"ready"`     // visible, waiting for a receiver
	Delayed  int64 `json:"delayed"`   // not yet visible (delay or retry backoff)
	InFlight int64 `json:"in_flight"` // leased, not yet settled

	EnqueuedTotal     int64 `json:"enqueued_total"`
	AckedTotal        int64 `json:"acked_total"`
	NackedTotal       int64 `json:"nacked_total"`
	ExpiredLeaseTotal int64 `json:"expired_lease_total"`
	DeadLetteredTotal int64 `json:"dead_lettered_total"` // moved from this queue to its dead-letter queue (or dropped without one)
	ExpiredTotal      int64 `json:"expired_total"`       // dropped because their TTL ran out
	DuplicateTotal    int64 `json:"duplicate_total"`     // enqueues dropped by dedup
}

// Depth is the number of messages the queue holds.
func (s Stats) Depth() int64 { return s.Ready + s.Delayed + s.InFlight }

// Capabilities declares what an engine implements natively. The runtime
// supplies what is missing where it can, and the conformance suite skips
// what is declared absent.
type Capabilities struct {
	// Durable: a crash of the process (SIGKILL) loses no message whose
	// Enqueue returned, and a lease outstanding at the crash counts as one
	// failure, once however often the engine restarts after
	// (QueueSpec.Retry); dead letters keep their attempts and failures.
	// The conformance suite's crash cases prove it in a killed child.
	Durable      bool
	Visibility   bool // leases expire and messages are redelivered
	Delay        bool // delayed delivery and nack/requeue delay
	DeadLetter   bool // attempts counted, MaxAttempts and DeadLetter honoured
	Ordering     bool // QueueSpec.Ordered
	Priority     bool // Message.Priority
	TTL          bool // Message.TTL
	Dedup        bool // Message.DedupID
	FanOut       bool // topics with subscriptions
	CrossProcess bool // other processes can use the same queues
	MultiNode    bool // other machines can use the same queues
	// KV: the engine holds key-value stores (KVEngine).
	KV bool
	// Transactions: settlers apply a delivery's effects with its ack in
	// one transaction (TxSettler), and keep per-message state
	// (StateSettler).
	Transactions bool
	// MaxMessageSize is the largest body accepted; zero means unlimited.
	MaxMessageSize int
}

// Sentinel errors. Engines wrap them with %w so callers can use errors.Is.
var (
	// ErrClosed is returned by a closed queue or engine.
	ErrClosed = errors.New("qrun: queue closed")
	// ErrLeaseLost is returned when settling or extending a delivery whose
	// lease expired or was already settled.
	ErrLeaseLost = errors.New("qrun: lease lost")
	// ErrNotLeased is returned by a Delivery that did not come from an engine.
	ErrNotLeased = errors.New("qrun: delivery has no lease")
	// ErrTooLarge is returned when a message exceeds the engine's size limit.
	ErrTooLarge = errors.New("qrun: message too large")
	// ErrInvalid is returned for a malformed request (bad name, bad priority).
	ErrInvalid = errors.New("qrun: invalid request")
	// ErrUnsupported is returned when a request needs a capability the engine lacks.
	ErrUnsupported = errors.New("qrun: not supported by engine")
)

// Attributes an engine sets on a message it moves to a dead-letter queue, so
// that an operator can see why and a redrive knows where it came from.
const (
	AttrDeadLetterReason = "qrun.dead_letter.reason"
	AttrDeadLetterSource = "qrun.dead_letter.source"
)
