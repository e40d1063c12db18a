// Package lease is the in-process lease state machine that the memory,
// posixmq and shm engines run over their storage, and that the disk engine
// runs over its in-memory index. It decides; the engine stores. Each engine
// keeps its own structures (memory's maps and rings, disk's bbolt and group
// commit, posixmq's kernel queue, shm's ring) and applies the Outcome this
// package returns to them, so the rules of the engine contract (what a
// verdict does, when a message is dead-lettered, how an expiry counts, what
// a dead letter keeps) are written once.
//
// # The state machine
//
// A message held by an engine is, as far as leasing goes, waiting (ready,
// delayed, or parked behind its ordering key) or leased:
//
//	waiting --Grant--> leased            Attempt+1, Token+1
//	leased --Settle(Ack)--> gone         Outcome Drop
//	leased --Settle(Requeue)--> waiting  Outcome Retry after the settlement's delay
//	leased --Settle(Nack)--> waiting     Failures+1; Outcome Retry after the delay,
//	                                     or Dead once Failures reaches MaxAttempts
//	leased --Settle(DeadLetter)--> gone  Outcome Dead
//	leased --Expire--> waiting           Token+1, Failures+1; Outcome Retry after
//	                                     Policy.Retry.Delay(failures before it),
//	                                     or Dead once Failures reaches MaxAttempts
//
// A Dead outcome becomes a message in the dead-letter queue built by
// DeadLetter (or is dropped, and still counted, when the queue has none).
//
// # Invariants
//
// The engine's queue mutex is held around every transition and around the
// read of the record it applies to: Lease values are plain fields, never
// touched without it. No engine takes another queue's mutex while holding
// one: memory and posixmq collect dead letters under the source's lock and
// move them after releasing it (see Groups), shm publishes them into the
// target ring outside the lock, and disk moves them in its commit. So two
// queues that dead-letter into each other cannot deadlock.
//
// A ticket (engines.Ticket) carries the Token its lease was granted with.
// Token only grows: Grant and Expire increase it, and a record recycled for
// another message keeps it. So a ticket is stale, and its settle or extend
// gets engines.ErrLeaseLost, as soon as its lease expired, however the
// record was reused since, and a settled record is recognised by the
// engine's own state (it is no longer leased). Nothing is ever matched by
// message ID.
//
// Leases live in process memory, so a crash of the process loses every
// lease and its deadline. What it loses with them is the storage's to say:
// disk stores each lease as outstanding and, at the next open, counts it as
// an expiry (ExpireAtOpen), losing at most the attempts and failures
// counted after its last commit; posixmq and shm lose the messages the
// process had taken out of the kernel queue or ring (leased, or waiting for
// a redelivery), which a clean close writes back instead; memory loses
// everything.
package lease

import (
	"fmt"
	"iter"
	"math"
	"strconv"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// Policy is what a queue's spec asks of its leases, in the form the state
// machine reads.
type Policy struct {
	// VT is the lease length in nanoseconds.
	VT int64
	// MaxAttempts is the failure count that dead-letters; 0 is unlimited.
	MaxAttempts int32
	// DeadLetter names the dead-letter queue; empty drops dead letters.
	DeadLetter string
	// Retry delays the redelivery of an expired lease.
	Retry engines.RetryPolicy
}

// DefaultPolicy is a queue's policy before any Open set one.
func DefaultPolicy() Policy {
	return Policy{VT: int64(engines.DefaultVisibilityTimeout)}
}

// Apply makes spec the policy unless it holds only a Name, which attaches
// to a queue as it is (see engines.Engine.Open); it reports whether it did.
// The spec must have passed engines.QueueSpec.Validate.
func (p *Policy) Apply(spec engines.QueueSpec) bool {
	if spec == (engines.QueueSpec{Name: spec.Name}) {
		return false
	}
	p.VT = int64(spec.VisibilityTimeout)
	if p.VT == 0 {
		p.VT = int64(engines.DefaultVisibilityTimeout)
	}
	p.MaxAttempts = int32(min(spec.MaxAttempts, math.MaxInt32))
	p.DeadLetter = spec.DeadLetter
	p.Retry = spec.Retry
	return true
}

// Lease is the lease bookkeeping of one message, embedded in the engine's
// record. The engine's queue mutex guards it.
type Lease struct {
	// Token is the lease generation a ticket must match (see the package
	// doc); it is never reset, not even when the record is recycled.
	Token uint64
	// Attempt counts deliveries, Failures nacks and expiries.
	Attempt, Failures int32
}

// Grant starts a new lease, one more attempt, and returns the token for
// its ticket.
func (l *Lease) Grant() uint64 {
	l.Attempt++
	l.Token++
	return l.Token
}

// Action is what the engine must do with a message after a transition.
type Action uint8

// Actions.
const (
	// Drop removes the message for good (it was acked).
	Drop Action = iota
	// Retry makes the message visible again after Outcome.Delay.
	Retry
	// Dead moves the message to the dead-letter queue with Outcome.Reason,
	// or drops it when Policy.DeadLetter is empty. The engine counts
	// DeadLetteredTotal when it does so.
	Dead
)

// Outcome is the decision of one transition.
type Outcome struct {
	Action Action
	// Delay is how long a Retry stays invisible (0: visible at once).
	Delay time.Duration
	// Reason is a Dead outcome's engines.AttrDeadLetterReason.
	Reason string
}

// Settle applies verdict s to a leased message's lease l, counting it in st
// (AckedTotal, NackedTotal), and returns what the engine must do. An unknown
// verdict is ErrInvalid and changes nothing.
func (p *Policy) Settle(l *Lease, s engines.Settlement, st *engines.Stats) (Outcome, error) {
	switch s.Verdict {
	case engines.Ack:
		st.AckedTotal++
		return Outcome{Action: Drop}, nil
	case engines.Nack:
		st.NackedTotal++
		l.Failures++
		if p.exhausted(l) {
			return Outcome{Action: Dead, Reason: p.maxAttemptsReason(s.Reason)}, nil
		}
		return Outcome{Action: Retry, Delay: max(s.Delay, 0)}, nil
	case engines.Requeue:
		return Outcome{Action: Retry, Delay: max(s.Delay, 0)}, nil
	case engines.DeadLetter:
		reason := s.Reason
		if reason == "" {
			reason = "dead-lettered by consumer"
		}
		return Outcome{Action: Dead, Reason: reason}, nil
	}
	return Outcome{}, fmt.Errorf("unknown verdict %s: %w", s.Verdict, engines.ErrInvalid)
}

// Expire ends a lease whose deadline passed: the holder's ticket is stale
// from here on and the expiry counts as a failure (ExpiredLeaseTotal). An
// expiry is a failure the runtime never sees (its holder died or hung), so
// the retry delay the runtime would have applied is applied here, for the
// failures before this one: a message that kills or wedges its consumer is
// not retried in a hot loop.
func (p *Policy) Expire(l *Lease, st *engines.Stats) Outcome {
	return p.expire(l, st, "lease expired")
}

// ExpireAtOpen is Expire for a lease that a durable engine finds still
// outstanding when it opens (the process stopped while it was held): the
// same failure, with its own dead-letter reason. The Retry delay then counts
// from the open.
func (p *Policy) ExpireAtOpen(l *Lease, st *engines.Stats) Outcome {
	return p.expire(l, st, "lease outstanding when the process stopped")
}

func (p *Policy) expire(l *Lease, st *engines.Stats, why string) Outcome {
	l.Token++
	l.Failures++
	st.ExpiredLeaseTotal++
	if p.exhausted(l) {
		return Outcome{Action: Dead, Reason: p.maxAttemptsReason(why)}
	}
	return Outcome{Action: Retry, Delay: p.Retry.Delay(int(l.Failures) - 1)}
}

func (p *Policy) exhausted(l *Lease) bool {
	return p.MaxAttempts > 0 && l.Failures >= p.MaxAttempts
}

func (p *Policy) maxAttemptsReason(why string) string {
	return "max attempts (" + strconv.Itoa(int(p.MaxAttempts)) + ") reached: " + why
}

// DeadLetter returns m as it enters the dead-letter queue of source: a copy
// of its attributes (the map may be the enqueuer's own) with
// engines.AttrDeadLetterReason and engines.AttrDeadLetterSource added, and
// no Delay, TTL or DedupID (they served the source; a dead letter must be
// visible at once, kept until handled and never suppressed).
func DeadLetter(m engines.Message, source, reason string) engines.Message {
	attrs := make(map[string]string, len(m.Attributes)+2)
	for k, v := range m.Attributes {
		attrs[k] = v
	}
	attrs[engines.AttrDeadLetterReason] = reason
	attrs[engines.AttrDeadLetterSource] = source
	m.Attributes = attrs
	m.Delay, m.TTL, m.DedupID = 0, 0, ""
	return m
}

// Groups yields the runs of s that share a target, in order, so dead letters
// collected under a queue's lock are moved after it with one lock of each
// target per run.
func Groups[T any](s []T, target func(*T) string) iter.Seq2[string, []T] {
	return func(yield func(string, []T) bool) {
		for len(s) > 0 {
			t := target(&s[0])
			n := 1
			for n < len(s) && target(&s[n]) == t {
				n++
			}
			if !yield(t, s[:n]) {
				return
			}
			s = s[n:]
		}
	}
}

// After is t+d on an engine clock, saturating: a caller's "practically
// forever" must not wrap around into the past. A d <= 0 is t.
func After(t int64, d time.Duration) int64 {
	if d <= 0 {
		return t
	}
	if int64(d) > math.MaxInt64-t {
		return math.MaxInt64
	}
	return t + int64(d)
}
