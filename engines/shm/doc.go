// Package shm is qrun's shared-memory engine: each queue is a ring of
// fixed-size slots in a POSIX shared-memory segment (package ring), which
// any number of processes on the machine produce into and consume from at
// memory speed, with no broker and no lock a dead process could hold.
//
// # What lives where
//
// The ring is the queue: a message is enqueued by publishing it into a slot
// and is in the ring, visible to every process, until some consumer takes
// it. A ring is a plain FIFO of bytes, so everything the engine contract
// asks beyond that is done here, in the process that took the message out:
//
//   - Leases (visibility timeout), Extend, attempts and failures: a received
//     message is held in this process, leased, until it is settled; an
//     expired lease counts a failure and, after the queue's retry delay,
//     makes it ready again here.
//   - Nack and Requeue (with or without delay) keep the message in this
//     process and redeliver it from here, ahead of the ring.
//   - Dead-lettering publishes the message, with its attributes and the two
//     dead-letter attributes, into the dead-letter queue's own ring.
//   - Delay on Enqueue keeps the message in the enqueuing process until it is
//     due, then publishes it (a ring has no order but arrival).
//   - TTL travels in the message and is checked when it is taken out; a
//     message that expired is dropped and counted then.
//
// # What a crash loses
//
// The segment lives in /dev/shm (memory, not disk) until it is deleted or
// the machine reboots, so messages in the ring survive qrun's crash and
// restart; a reboot loses them all (Durable is false). When a process dies
// (kill -9, a crash), it loses what it held outside the ring: the messages
// it had leased and not settled, those it was to redeliver after a nack,
// requeue or expired lease, and enqueues it was delaying. A clean Close
// publishes those back into the ring (attempt counts included) instead.
// A process killed in the instant between claiming a slot and publishing it
// costs at most that one message, and consumers wait at most the stall
// timeout before skipping the slot (see package ring).
//
// # Envelope
//
// A message with nothing but a body travels as the bare body, so a foreign
// producer only has to follow the ring protocol. Anything else (an ID chosen
// by the producer, attributes, content type, correlation ID, ordering key,
// priority, TTL, attempt counts) travels in a small envelope whose layout is
// documented in codec.go and docs/shm.md. A record that claims to be an
// envelope but does not parse is delivered as a bare body with the
// attribute AttrMalformed saying why, never dropped silently.
//
// Message IDs that the engine assigns are the segment's nonce and the
// message's ring position ("1a2b3c4d.7f"), so producer and consumer derive
// the same ID without shipping it.
package shm
