package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
)

// TxEnqueuer is implemented by every queue this engine opens: it enqueues
// inside a transaction the caller owns, like River's InsertTx, so a
// message is stored if and only if the caller's own writes are (an order
// row and the message that ships it, say).
type TxEnqueuer interface {
	// EnqueueTx stores msgs as part of tx, which must be a transaction on
	// the engine's database. Nothing is visible to receivers until tx
	// commits, and nothing remains if it rolls back. On commit, waiting
	// receivers are woken by a NOTIFY sent in tx (PostgreSQL delivers it
	// at commit); delayed messages are found by the engine's own timer. An
	// error leaves tx aborted, as any failed statement does: roll it
	// back. IDs the engine assigns are written into msgs.
	EnqueueTx(ctx context.Context, tx pgx.Tx, msgs ...engines.Message) error
}

var _ TxEnqueuer = (*handle)(nil)

// EnqueueTx implements TxEnqueuer: the statements of Enqueue, run in the
// caller's transaction instead of one of the engine's.
func (h *handle) EnqueueTx(ctx context.Context, tx pgx.Tx, msgs ...engines.Message) error {
	if tx == nil {
		return fmt.Errorf("postgres: enqueue to %q in a transaction: nil tx: %w", h.name, engines.ErrInvalid)
	}
	if err := h.check("enqueue to"); err != nil {
		return err
	}
	if err := h.validate(msgs); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	dedup, lock := h.needs(msgs)
	err := func() error {
		w, err := h.enqueueIn(ctx, tx, msgs, dedup, lock)
		if err != nil || len(w.queues) == 0 {
			return err
		}
		// Unlike Enqueue's NOTIFY, sent after its own commit, this one must
		// ride in tx: only the caller knows when (and whether) it commits.
		_, err = tx.Exec(ctx, h.e.sql.notify, h.e.channel, w.queues)
		return err
	}()
	if err != nil {
		return h.e.opErr("enqueue (in the caller's transaction) to", h.name, err)
	}
	return nil
}
