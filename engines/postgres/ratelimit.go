package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
)

// Shared token buckets (engines.RateTaker): one row per bucket holds its
// tokens and when they were counted. A take locks the row, refills it for
// the time passed by the database's clock (so the nodes' clocks do not
// matter), takes what it can and writes the rest back, in one transaction.
// Every token is taken once, by one node. The table is created on first
// use, like schedule_ticks (ticks.go).

var _ engines.RateTaker = (*Engine)(nil)

func (e *Engine) bucketsTable() string {
	return pgx.Identifier{e.opts.Schema, "rate_buckets"}.Sanitize()
}

// TakeTokens implements engines.RateTaker.
func (e *Engine) TakeTokens(ctx context.Context, bucket string, rate float64, burst, n int) (int, time.Duration, error) {
	if rate <= 0 || burst < 1 || n < 1 {
		return 0, 0, fmt.Errorf("postgres: take tokens from %q: rate %v, burst %d, n %d: %w", bucket, rate, burst, n, engines.ErrInvalid)
	}
	var got int
	var wait time.Duration
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if err := e.ensureTable(ctx, tx, "rate_buckets",
			"(bucket text PRIMARY KEY, tokens double precision NOT NULL, at timestamptz NOT NULL)"); err != nil {
			return err
		}
		var tokens float64
		var at, now time.Time
		err := tx.QueryRow(ctx, "INSERT INTO "+e.bucketsTable()+" AS b (bucket, tokens, at) VALUES ($1, $2, clock_timestamp())"+
			" ON CONFLICT (bucket) DO UPDATE SET bucket = b.bucket"+ // locks the row
			" RETURNING tokens, at, clock_timestamp()", bucket, float64(burst)).Scan(&tokens, &at, &now)
		if err != nil {
			return err
		}
		avail := math.Min(float64(burst), tokens+rate*math.Max(now.Sub(at).Seconds(), 0))
		got = min(n, int(math.Floor(avail)))
		if got == 0 {
			wait = time.Duration((1 - avail) / rate * float64(time.Second))
		}
		// Counted up to now: the refill until now is in avail.
		_, err = tx.Exec(ctx, "UPDATE "+e.bucketsTable()+" SET tokens = $2, at = $3 WHERE bucket = $1", bucket, avail-float64(got), now)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: take tokens from %q: %w", bucket, err)
	}
	return got, wait, nil
}
