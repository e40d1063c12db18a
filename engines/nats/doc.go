// Package nats is a qrun engine on NATS JetStream (docs/nats.md). A queue
// is a work-queue stream with one subject and one durable pull consumer,
// "qrun", that every qrun node shares: the server hands each message to
// one puller at a time and takes it back when its ack wait runs out, so
// nodes share the work without coordinating.
//
// JetStream counts deliveries (NumDelivered) but not failures, and a Nak
// is a Nak whatever the reason. The engine keeps the difference in a
// key-value bucket (the engine's prefix + "state"), one small record per
// message that was ever handed back: how many deliveries ended in a
// settle the engine made (nack, requeue, a hold), how many of those were
// failures and how many were holds (a delivery the engine took back at
// once because the message was not due yet). A message acked at its
// first delivery, the common case, never touches the bucket. Any other
// delivery that ended is an ack wait that ran out in a dead process: a
// failure, counted once by the receiver that sees it.
//
// Delay works on every JetStream server (Debian's 2.9 has no message
// scheduling): a message not yet due is taken back with a Nak whose delay
// is what remains, so it waits on the server, not in qrun.
package nats
