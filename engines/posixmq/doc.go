// Package posixmq is a qrun engine on Linux POSIX message queues
// (mq_overview(7)), spoken through raw system calls (package mq) with no
// cgo. Any program using libc's mq_send and mq_receive can produce into a
// qrun queue or consume from one.
//
// # What lives where
//
// The kernel keeps a queue's ready messages, ordered by priority and then
// by arrival, until the machine reboots; that part survives a crash of qrun.
// The kernel has no leases, delays, attempt counts, dead-letter queues,
// IDs or attributes, so the engine supplies them in process:
//
//   - A received message leaves the kernel and is held as a lease in qrun's
//     memory until it is settled. Nack, requeue and lease expiry (which
//     counts a failure and waits the queue's retry delay) redeliver it
//     from memory (never through the kernel, so a redelivery neither
//     blocks on a full queue nor loses its attempt count), and ahead of the
//     messages still in the kernel.
//   - A message enqueued with a delay waits in memory and enters the kernel
//     when it is due.
//   - When the kernel queue is full, Enqueue waits for room (bounded by its
//     context and Options.SendTimeout), or holds up to Options.Spill
//     messages in memory and moves them in as room appears.
//   - Dead letters are written, with their reason and source, into the
//     dead-letter queue's kernel queue.
//   - IDs, attributes, the enqueue time, the TTL and delivery counts travel
//     in an envelope (package frame) in front of the body. A message without
//     the envelope is delivered exactly as its bytes, with an ID assigned on
//     receipt. With Options.Format Raw, qrun writes bodies without the
//     envelope, so a C consumer reads exactly what was published.
//
// A crash of qrun therefore loses what is in its memory: messages being
// handled, waiting for a retry, delayed, or spilled. A clean Close writes
// all of those back into the kernel queue (without their remaining delay),
// as far as it has room, so a restart picks them up.
//
// # Waiting
//
// Each kernel queue is opened once, non-blocking, and the descriptor is
// registered with Go's network poller (an mqueue descriptor supports epoll):
// the first receiver that finds nothing waits in the poller on it, so a
// message from any process wakes it with no hand-off, and further receivers
// wait on a channel like any other Go code. Either wakes for a kernel
// message, an in-process redelivery, its context (the poller wait is
// sliced so a cancellation is seen within 50ms) or Close; none parks an OS
// thread in a system call. A sender that finds the queue full parks on a
// channel. A receive in this process that makes room wakes it directly;
// for room made by another process, one write watcher waits in the poller
// and wakes the senders. Senders do not wait in a blocking mq_timedsend: on a queue
// kept full by a fast producer, that puts the producer's OS thread to sleep
// and wakes it again for every message a receiver takes, which costs more
// than the message itself (BenchmarkEndToEndPosixMQ went from 353k to 436k
// msgs/s on 2 cores when senders moved to the poller).
//
// # Priorities
//
// Message.Priority 0..255 is the kernel priority, unchanged, so a C program
// sending priority 5 and qrun publishing priority 5 mean the same thing.
// The kernel accepts 0..32767: a message above 255 is delivered in the
// kernel's order and reported as priority 255, and keeps its kernel
// priority if the engine writes it back (dead letter, Close).
package posixmq
