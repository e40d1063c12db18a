package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
)

// Loops names the background loops e started, for the external tests.
func Loops(e *Engine) []string { return e.loops }

// SetLeaseSent makes e call f once each leasing statement is sent, before
// its results are read. Set it before any Receive.
func SetLeaseSent(e *Engine, f func(queue string)) { e.leaseSent = f }

// SlotID is the advisory lock id of slot i of key in group, on schema.
func SlotID(schema, group, key string, i int) int64 { return slotID(schema, group, key, i) }

// HeldSlots is the number of slots e holds.
func HeldSlots(e *Engine) int {
	e.slots.mu.Lock()
	defer e.slots.mu.Unlock()
	return len(e.slots.held)
}

// SlotConnPID is the backend pid of e's slot connection, 0 without one.
func SlotConnPID(e *Engine) uint32 {
	e.slots.mu.Lock()
	defer e.slots.mu.Unlock()
	if e.slots.conn == nil {
		return 0
	}
	return e.slots.conn.PgConn().PID()
}

// KeyLockID is the advisory lock id a kv transaction takes for key of
// store, on schema.
func KeyLockID(schema, store string, key []byte) int64 { return keyLockID(schema, store, key) }

// MaxGroups is how many SettleTx groups e runs at once.
func MaxGroups(e *Engine) int { return e.maxGroups() }

// MigrateTo is Migrate up to version upTo.
func MigrateTo(ctx context.Context, conn *pgx.Conn, schema string, upTo int) ([]int, error) {
	return migrateTo(ctx, conn, schema, upTo)
}

// GroupsFor is how many SettleTx groups an engine with maxConns runs at
// once.
func GroupsFor(maxConns int32) int { return groupsFor(maxConns) }

// TxStatements are the statements of a SettleTx group that probe rows by
// key: lockLeases ($1 seqs, $2 tokens) and read ($1 store, $2 keys).
func TxStatements(e *Engine) (lockLeases, read string) {
	return e.sqlKV.lockLeases, e.sqlKV.read
}

// KVGetStatement is the point read of one key ($1 store, $2 key) that a
// lone Lookup sends.
func KVGetStatement(e *Engine) string { return e.sqlKV.get }

// EnqueueStatements are a queue's insert of messages of every kind ($1
// queue, $2..$10 the columns' arrays, $11 ordered) and of bodies alone
// ($1 queue, $2 bodies).
func EnqueueStatements(e *Engine) (full, plain string) { return e.sql.enqueue, e.sql.enqueuePlain }

// PlainBatch reports whether an enqueue of msgs to a queue (not a topic)
// takes the bodies-only statement.
func PlainBatch(msgs []engines.Message) bool { return (&handle{}).plain(msgs, indexes(len(msgs))) }

// TxRetries is how many SettleTx groups of e were rolled back because a
// lease was lost and run again locking their leases first.
func TxRetries(e *Engine) int64 { return e.kv.txRetries.Load() }
