package disk

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/qrun-dev/qrun/engines"
)

// Schedule ticks (engines.TickClaimer): the last tick of each schedule is
// a key of the top-level "ticks" bucket, written by the same group commit,
// and so the same bbolt transaction, as the tick's message. A crash loses
// both or neither, and the bbolt file lock keeps a second process out, so
// a tick enqueues exactly once however the process stops.

var bucketTicks = []byte("ticks")

var _ engines.TickClaimer = (*Engine)(nil)

// tickBook serialises claims, so two claims of one schedule never both
// pass the check before either is committed.
type tickBook struct {
	mu sync.Mutex
}

func putTick(tx *bolt.Tx, schedule string, val []byte) error {
	b, err := tx.CreateBucketIfNotExists(bucketTicks)
	if err != nil {
		return err
	}
	return b.Put([]byte(schedule), val)
}

// LastTick implements engines.TickClaimer.
func (e *Engine) LastTick(ctx context.Context, schedule string) (time.Time, error) {
	var t time.Time
	err := e.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTicks)
		if b == nil {
			return nil
		}
		if v := b.Get([]byte(schedule)); len(v) == 8 {
			t = time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("disk: %s: last tick of %q: %w", e.path, schedule, err)
	}
	return t, nil
}

// ClaimTick implements engines.TickClaimer.
func (e *Engine) ClaimTick(ctx context.Context, q engines.Queue, schedule string, tick time.Time, msg engines.Message) (bool, error) {
	h, ok := q.(*handle)
	if !ok || h.q.e != e {
		return false, fmt.Errorf("disk: %s: claim tick of %q: queue %q is not this engine's: %w", e.path, schedule, q.Name(), engines.ErrInvalid)
	}
	e.ticks.mu.Lock()
	defer e.ticks.mu.Unlock()
	last, err := e.LastTick(ctx, schedule)
	if err != nil {
		return false, err
	}
	if !tick.After(last) {
		return false, nil
	}
	val := binary.BigEndian.AppendUint64(nil, uint64(tick.UnixNano()))
	if err := h.enqueueWith(ctx, []op{{kind: opPutTick, q: h.q, key: schedule, val: val}}, msg); err != nil {
		return false, fmt.Errorf("disk: claim tick %s of %q: %w", tick.Format(time.RFC3339), schedule, err)
	}
	return true, nil
}
