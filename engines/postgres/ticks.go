package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
)

// Schedule ticks (engines.TickClaimer). One row per schedule holds its last
// tick; a claim moves it forward with
//
//	INSERT ... ON CONFLICT (schedule) DO UPDATE SET tick = EXCLUDED.tick
//	 WHERE schedule_ticks.tick < EXCLUDED.tick RETURNING tick
//
// in the transaction that enqueues the tick's message. Two nodes claiming
// the same tick both reach the row; the second waits on the first's row
// lock, and once the first commits it re-reads the row, finds the tick no
// longer earlier, updates nothing and enqueues nothing. A node that dies
// before its commit leaves neither the row nor the message.
//
// The table is created on first use (under an advisory lock, so two nodes
// starting together do not race to create it) rather than by a schema
// migration: it belongs to the runtime's scheduler, not to the queues, and
// a database never used for schedules never gets it.

var _ engines.TickClaimer = (*Engine)(nil)

func (e *Engine) ticksTable() string {
	return pgx.Identifier{e.opts.Schema, "schedule_ticks"}.Sanitize()
}

// ensureTicks creates the ticks table inside tx if it is missing.
func (e *Engine) ensureTicks(ctx context.Context, tx pgx.Tx) error {
	return e.ensureTable(ctx, tx, "schedule_ticks", "(schedule text PRIMARY KEY, tick timestamptz NOT NULL)")
}

// ensureTable creates table name of the engine's schema with columns
// inside tx unless it exists. The check is one catalog lookup; only a
// missing table takes the advisory lock that keeps two nodes from racing
// to create it.
func (e *Engine) ensureTable(ctx context.Context, tx pgx.Tx, name, columns string) error {
	full := pgx.Identifier{e.opts.Schema, name}.Sanitize()
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", full).Scan(&exists); err != nil || exists {
		return err
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", e.opts.Schema+"."+name); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+full+" "+columns)
	return err
}

// LastTick implements engines.TickClaimer.
func (e *Engine) LastTick(ctx context.Context, schedule string) (time.Time, error) {
	var t time.Time
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if err := e.ensureTicks(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, "SELECT tick FROM "+e.ticksTable()+" WHERE schedule = $1", schedule).Scan(&t)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("postgres: last tick of schedule %q: %w", schedule, err)
	}
	return t.UTC(), nil
}

// ClaimTick implements engines.TickClaimer.
func (e *Engine) ClaimTick(ctx context.Context, q engines.Queue, schedule string, tick time.Time, msg engines.Message) (bool, error) {
	h, ok := q.(*handle)
	if !ok || h.e != e {
		return false, fmt.Errorf("postgres: claim tick of schedule %q: queue %q is not this engine's: %w", schedule, q.Name(), engines.ErrInvalid)
	}
	claimed := false
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if err := e.ensureTicks(ctx, tx); err != nil {
			return err
		}
		var got time.Time
		err := tx.QueryRow(ctx, "INSERT INTO "+e.ticksTable()+" AS t (schedule, tick) VALUES ($1, $2)"+
			" ON CONFLICT (schedule) DO UPDATE SET tick = EXCLUDED.tick WHERE t.tick < EXCLUDED.tick RETURNING tick",
			schedule, tick).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // claimed before, by this node or another
		}
		if err != nil {
			return err
		}
		claimed = true
		return h.EnqueueTx(ctx, tx, msg)
	})
	if err != nil {
		return false, fmt.Errorf("postgres: claim tick %s of schedule %q: %w", tick.Format(time.RFC3339), schedule, err)
	}
	return claimed, nil
}
