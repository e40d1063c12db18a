package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// counters are a queue's totals that JetStream does not keep, in the
// state bucket under "c.<queue>", shared by every node and kept across
// restarts. Each counts an event of the slow path (a failure, a dead
// letter, a duplicate); the hot path's totals (enqueued, acked) come from
// the stream itself (see Stats).
type counters struct {
	Nacked       int64 `json:"nacked,omitempty"`
	ExpiredLease int64 `json:"expired_lease,omitempty"`
	DeadLettered int64 `json:"dead_lettered,omitempty"`
	Duplicate    int64 `json:"duplicate,omitempty"`
	// Removed counts messages that left other than by ack or dead
	// letter (purged, redriven), so that AckedTotal leaves them out.
	Removed int64 `json:"removed,omitempty"`
}

func (q *queueState) countersKey() string { return "c." + q.name }

// count applies f to the queue's counters: a compare-and-set loop, so
// nodes counting at once lose nothing.
func (q *queueState) count(ctx context.Context, f func(*counters)) {
	if q.e.state == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := q.countOnce(ctx, f); err != nil {
		q.e.log.Warn("updating the queue's counters", zap.String("queue", q.name), zap.Error(err))
	}
}

func (q *queueState) countOnce(ctx context.Context, f func(*counters)) error {
	key := q.countersKey()
	for {
		var c counters
		ent, err := q.e.state.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			f(&c)
			b, _ := json.Marshal(&c)
			if _, err = q.e.state.Create(ctx, key, b); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			return err
		case err != nil:
			return err
		}
		_ = json.Unmarshal(ent.Value(), &c)
		f(&c)
		b, _ := json.Marshal(&c)
		if _, err = q.e.state.Update(ctx, key, b, ent.Revision()); err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				continue // another node counted meanwhile
			}
			return fmt.Errorf("counters: %w", err)
		}
		return nil
	}
}

// readCounters returns the queue's counters (zero before any was counted).
func (q *queueState) readCounters(ctx context.Context) (counters, error) {
	var c counters
	if q.e.state == nil {
		return c, nil
	}
	ent, err := q.e.state.Get(ctx, q.countersKey())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	_ = json.Unmarshal(ent.Value(), &c)
	return c, nil
}
