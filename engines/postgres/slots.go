package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// Per-key concurrency slots shared by every node (engines.SlotKeeper).
//
// A slot is a session-level advisory lock, held on a connection this
// engine opens for slots alone and owns for its life. Session locks are
// the database's own bookkeeping of who is alive: when the process dies
// (SIGKILL, a lost machine) its connection ends and the server drops every
// lock it held, so no slot is ever leaked and no expiry has to be guessed
// or renewed. The n slots of a key are n lock ids, hashes of (schema,
// group, key, slot number); taking one tries them in one statement and
// keeps the first that is free.
//
// Session locks are re-entrant: the session holding a lock gets it again.
// So the engine remembers the ids it holds and never asks for them, or two
// of its own deliveries would share one slot.
//
// If the slot connection fails, the locks it held are gone with it while
// their deliveries may still run: the engine forgets them (their releases
// do nothing) and opens a new connection on the next take. Until those
// deliveries end, other nodes can take the freed slots, so a key can
// briefly have more than n in flight: the one failure where the cap is
// not exact (docs/schedules.md).

var _ engines.SlotKeeper = (*Engine)(nil)

// slotKeeper holds the slot connection and the locks taken on it.
type slotKeeper struct {
	mu   sync.Mutex
	conn *pgx.Conn          // nil until the first take, or after a failure
	gen  int                // bumped each time conn is dropped
	held map[int64]struct{} // lock ids held on conn
}

// KeepsSlots implements enginetype.SlotKeeping.
func (s Settings) KeepsSlots() bool { return true }

// slotTimeout bounds a release, which runs on no caller's context.
const slotTimeout = 10 * time.Second

// TakeSlot implements engines.SlotKeeper.
func (e *Engine) TakeSlot(ctx context.Context, group, key string, n int) (func(), bool, error) {
	if n < 1 {
		return nil, false, fmt.Errorf("postgres: take slot of %q in %q: n %d: %w", key, group, n, engines.ErrInvalid)
	}
	s := &e.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.closed.Load() { // checked under s.mu, so no connection opens after closeSlots
		return nil, false, e.errClosed("take slot in", group)
	}
	for retried := false; ; retried = true {
		id, ok, err := e.trySlot(ctx, group, key, n)
		if err == nil {
			if !ok {
				return nil, false, nil
			}
			s.held[id] = struct{}{}
			gen := s.gen
			return sync.OnceFunc(func() { e.giveSlot(gen, id) }), true, nil
		}
		// A connection found broken (the database restarted, say) is
		// replaced at once, once: its locks are gone anyway.
		broken := s.conn != nil && s.conn.IsClosed()
		e.dropSlots(err)
		if retried || !broken || ctx.Err() != nil {
			return nil, false, fmt.Errorf("postgres: take slot of %q in %q: %w", key, group, err)
		}
	}
}

// trySlot tries the slots of key not held here on the slot connection,
// opening it if needed, and returns the id of the one it took. s.mu is
// held.
func (e *Engine) trySlot(ctx context.Context, group, key string, n int) (int64, bool, error) {
	s := &e.slots
	ids := make([]int64, 0, n)
	for i := range n {
		if id := slotID(e.opts.Schema, group, key, i); !s.has(id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return 0, false, nil // all n held here
	}
	if s.conn == nil {
		conn, err := pgx.ConnectConfig(ctx, e.connCfg)
		if err != nil {
			return 0, false, fmt.Errorf("connect: %w", err)
		}
		s.conn, s.held = conn, map[int64]struct{}{}
	}
	// The filter runs row by row and LIMIT stops at the first lock taken,
	// so no other id is locked.
	var id int64
	err := s.conn.QueryRow(ctx, "SELECT id FROM unnest($1::bigint[]) AS id WHERE pg_try_advisory_lock(id) LIMIT 1", ids).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return id, true, nil
}
func (s *slotKeeper) has(id int64) bool {
	_, ok := s.held[id]
	return ok
}

// giveSlot unlocks id if the connection it was taken on is still the
// current one; with an older one it went with that connection.
func (e *Engine) giveSlot(gen int, id int64) {
	s := &e.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.conn == nil {
		return
	}
	delete(s.held, id)
	ctx, cancel := context.WithTimeout(e.ctx, slotTimeout)
	defer cancel()
	var ok bool
	if err := s.conn.QueryRow(ctx, "SELECT pg_advisory_unlock($1)", id).Scan(&ok); err != nil {
		// Closing the connection releases the lock (and the others it held).
		e.dropSlots(err)
	}
}

// dropSlots closes the slot connection, which makes the server release
// every lock on it; the holders' releases then do nothing. s.mu is held.
func (e *Engine) dropSlots(cause error) {
	s := &e.slots
	if s.conn == nil {
		return
	}
	if len(s.held) > 0 && e.ctx.Err() == nil {
		e.log.Warn("postgres slot connection failed: its per-key slots are released while their deliveries run",
			zap.Int("slots", len(s.held)), zap.Error(cause))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.conn.Close(ctx)
	s.conn, s.held = nil, nil
	s.gen++
}

// closeSlots ends the slot connection at Close.
func (e *Engine) closeSlots() {
	e.slots.mu.Lock()
	defer e.slots.mu.Unlock()
	e.dropSlots(nil)
}

// slotID is the advisory lock id of a key's slot i: a 64-bit hash of the
// schema (engines on other schemas share the database's lock space), the
// group, the key and i, each length-prefixed so no two tuples hash the
// same bytes. A collision between two keys makes them share slots: the
// cap is then stricter, never looser.
func slotID(schema, group, key string, i int) int64 {
	h := fnv.New64a()
	var n [8]byte
	for _, s := range []string{"qrun.slot", schema, group, key} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	binary.BigEndian.PutUint64(n[:], uint64(i))
	h.Write(n[:])
	return int64(h.Sum64())
}
