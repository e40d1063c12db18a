// Package postgres is qrun's engine for more than one machine: queues live
// in PostgreSQL (through github.com/jackc/pgx/v5), so every qrun process
// that reaches the database shares them, and any SQL client can publish.
//
// # Storage
//
// One schema (default "qrun") holds a queues table, one messages table for
// every queue, a dedup table, sharded counters and a few PL/pgSQL functions.
// It is created and upgraded by embedded, numbered migrations that run in
// one transaction under an advisory lock (see Migrate), so two processes
// starting together apply each migration once.
//
// A message row has a state: ready, delayed, leased or parked. Receive is
// one statement: it locks up to N ready rows with FOR UPDATE SKIP LOCKED
// (in priority, then enqueue order, by a partial index over ready rows
// only), marks them leased under a random token and returns them; rows
// another receiver has locked are skipped, never waited on. Settling
// matches (seq, token, state, expiry), so an ack from a holder whose lease
// ran out finds nothing and reports engines.ErrLeaseLost.
//
// # Cost per message
//
// The raw ceiling of a SKIP LOCKED queue is one DELETE ... RETURNING per
// batch: one statement and one commit (one fsync) per hundred messages.
// qrun needs a lease between receive and ack, so it keeps the commits per
// batch at one by batching acks (the River "batch completer" idea): an Ack
// with time to spare on its lease is recorded and returns at once, and the
// pending acks of the whole engine are sent ahead of the next Receive's
// lease statement in the same pipelined transaction (or by a background
// writer after 5ms when no Receive comes). An Ack close to its lease's end
// is written before it returns. Enqueue is one INSERT ... SELECT FROM
// unnest(...) per batch. Nack, Requeue, DeadLetter and Extend are written
// at once.
//
// What is left is the lease itself, and it is the floor of this design:
// leasing 100 rows is an UPDATE that writes a new version of each row and
// two index entries (primary key, and the due-time index the reaper reads
// to find expired leases), about twice the work of deleting them.
// BenchmarkRawLeaseDelete measures a bare lease-then-delete loop, and
// Receive plus Ack run at its rate: attempts, TTLs, counters and ordering
// cost nothing measurable on top. A lease that changed no indexed column
// (a HOT update, half the work in isolation) was tried and rejected:
// leased rows then stay in the ready index, every Receive steps over all
// of them, and end to end it ran ten times slower. See docs/postgres.md.
//
// # Wake-ups and time
//
// Receivers of this process are woken directly by local enqueues and
// settles; other processes through NOTIFY on the channel qrun_<schema>,
// sent after the commit by a notifier goroutine (NOTIFY inside a
// transaction takes a database-wide lock at commit, which would serialise
// every enqueue). One listener connection per engine LISTENs; when it
// drops, receivers poll every PollInterval until it reconnects (with
// backoff), and everyone is woken once it is back. A reaper makes delayed
// messages ready and ends expired leases (a failure is counted and the
// message waits the queue's retry delay, stored with the queue by Open,
// or, at max attempts, is dead-lettered) for every queue in the schema, at the next due time the database reports or sooner when this
// process knows of an earlier one, and at least every PollInterval.
//
// Durations are measured by the database's clock for storage and by this
// process's monotonic clock for the leases it hands out: a delivery's
// LeaseExpires is never later than the database's expiry.
//
// # Ordered queues
//
// In an ordered queue only the oldest message of each ordering key (its
// head) is ever ready, delayed or leased; the others are parked. Whoever
// adds a keyed message or removes a head holds that key's advisory lock,
// so a new message parks exactly when an older one exists, and removing a
// head unparks the next. Receive therefore never scans past parked
// messages and never waits on a locked head: keys run in parallel, one
// message each, in enqueue order.
//
// # Fan-out
//
// A topic is a row of kind "topic" with subscriptions, each an ordinary
// queue. Publishing to a topic copies the message into every subscription
// that exists at that moment, in the same statement, all copies sharing
// one ID.
//
// # Enqueue from SQL
//
// <schema>.enqueue(queue, body, ...) publishes one message inside the
// caller's transaction: it is delivered only if that transaction commits.
// See docs/postgres.md.
package postgres
