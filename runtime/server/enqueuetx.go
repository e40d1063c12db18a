package server

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
)

// EnqueueTx enqueues msgs to a postgres queue inside the caller's
// transaction, like River's InsertTx: the messages exist only if tx
// commits (postgres.TxEnqueuer). tx must be on the database of the
// queue's engine. A queue on another engine answers an error wrapping
// engines.ErrUnsupported; an unknown queue, admin.ErrUnknownQueue. Any
// other error leaves tx aborted: roll it back.
func (s *Server) EnqueueTx(ctx context.Context, tx pgx.Tx, queue string, msgs []engines.Message) error {
	q, err := s.queueEntry(queue)
	if err != nil {
		return err
	}
	te, ok := q.q.(postgres.TxEnqueuer)
	if !ok {
		return unsupported(q, "enqueue in a PostgreSQL transaction")
	}
	if err := te.EnqueueTx(ctx, tx, msgs...); err != nil {
		return fmt.Errorf("queue %q: %w", queue, err)
	}
	return nil
}
