package postgres

import (
	"math"
	"sync"
	"time"
)

// reaper makes delayed messages ready when they come due and ends expired
// leases (counting a failure, dead-lettering at max attempts), for every
// queue in the schema, whoever leased or enqueued them. It runs at the
// earliest due time it knows of: the database tells it the next one after
// each pass, and this process's own leases, delays and extensions kick it
// earlier. It never sleeps longer than the poll interval, so work left by
// other processes (or by one that died) is found within that.
type reaper struct {
	e      *Engine
	kickCh chan struct{}
	log    *rateLog

	mu sync.Mutex
	at int64 // engine clock of the next pass
}

// reapLimit bounds the rows one pass moves per queue; a pass that hits it
// reports "due now" and the next pass follows at once.
const reapLimit = 1000

// pruneEvery is how often expired dedup entries are deleted.
const pruneEvery = time.Minute

func newReaper(e *Engine) *reaper {
	return &reaper{e: e, kickCh: make(chan struct{}, 1), log: newRateLog(e.log, "reaping expired leases and due messages failed")}
}

// kick asks for a pass no later than at (engine clock).
func (r *reaper) kick(at int64) {
	r.mu.Lock()
	earlier := at < r.at
	if earlier {
		r.at = at
	}
	r.mu.Unlock()
	if earlier {
		select {
		case r.kickCh <- struct{}{}:
		default:
		}
	}
}

func (r *reaper) run() {
	e := r.e
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var lastPrune time.Time
	backoff := time.Duration(0)
	for {
		r.mu.Lock()
		wait := time.Duration(r.at - e.now())
		r.mu.Unlock()
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-r.kickCh:
				timer.Stop()
			case <-e.ctx.Done():
				return
			}
			continue
		}
		r.mu.Lock()
		r.at = math.MaxInt64
		r.mu.Unlock()
		next := e.opts.PollInterval
		due, err := r.pass()
		switch {
		case err != nil:
			if e.ctx.Err() != nil {
				return
			}
			r.log.fail(err)
			backoff = min(max(backoff*2, 50*time.Millisecond), e.opts.PollInterval)
			next = backoff
		default:
			r.log.ok()
			backoff = 0
			if due >= 0 && due < next {
				// A little after the database's due time, so the pass finds
				// it due rather than a hair early.
				next = due + time.Millisecond
			}
			if time.Since(lastPrune) > pruneEvery {
				lastPrune = time.Now()
				if err := r.housekeeping(); err != nil && e.ctx.Err() == nil {
					r.log.fail(err)
				}
			}
		}
		r.kick(e.now() + int64(next))
	}
}

// pass runs one reap and wakes the queues that gained ready messages. It
// returns how long until the next due time the database knows, -1 for none.
func (r *reaper) pass() (time.Duration, error) {
	e := r.e
	rows, err := e.pool.Query(e.ctx, e.sql.reap, reapLimit)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	due := time.Duration(-1)
	for rows.Next() {
		var (
			id    *int32
			dueUs *int64
		)
		if err := rows.Scan(&id, &dueUs); err != nil {
			return 0, err
		}
		if id != nil {
			e.wake(*id)
		} else if dueUs != nil && *dueUs >= 0 {
			due = time.Duration(*dueUs) * time.Microsecond
		}
	}
	return due, rows.Err()
}

// housekeeping deletes expired dedup entries and heals ordering keys left
// without a head (see heal in the schema).
func (r *reaper) housekeeping() error {
	e := r.e
	if _, err := e.pool.Exec(e.ctx, e.sql.pruneDedup); err != nil {
		return err
	}
	rows, err := e.pool.Query(e.ctx, e.sql.heal)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int32
		if err := rows.Scan(&id); err != nil {
			return err
		}
		e.wake(id)
	}
	return rows.Err()
}
