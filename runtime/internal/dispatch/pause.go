package dispatch

import (
	"context"
	"sync"
	"sync/atomic"
)

// gate lets an operator pause a consumer: its workers finish the delivery
// in hand, hand back the rest of their batch and stop receiving until
// Resume, keeping their plugin instances. It works by epochs: workers
// receive with the current epoch's context, and Pause replaces the epoch
// with a paused one and cancels the old context, which wakes a worker
// blocked in Receive on an idle queue at once.
//
// The delivery path reads one atomic flag per delivery (next to the
// stopping flag it already reads) and one atomic pointer per batch.
type gate struct {
	flag atomic.Bool // paused; read by workers between deliveries
	cur  atomic.Pointer[epoch]

	mu        sync.Mutex
	base      context.Context // Start's receive context; nil before Start
	paused    bool
	resumed   chan struct{} // closed by Resume; workers park on it
	workers   int
	parked    int
	allParked chan struct{} // closed once every worker parked in this pause
}

// epoch is one running or paused period.
type epoch struct {
	ctx     context.Context // for Receive while running; nil while paused
	cancel  context.CancelFunc
	resumed chan struct{} // non-nil while paused
}

// start is called by Start with the receive context and the worker count.
func (g *gate) start(base context.Context, workers int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.base, g.workers = base, workers
	g.install()
}

// install stores the epoch for the current state; called with mu held.
func (g *gate) install() {
	if g.paused {
		g.cur.Store(&epoch{resumed: g.resumed})
		return
	}
	ctx, cancel := context.WithCancel(g.base)
	g.cur.Store(&epoch{ctx: ctx, cancel: cancel})
}

// Pause stops the consumer from starting deliveries: each worker finishes
// the one it is handling, hands the rest of its leased batch back to the
// queue (no failure counted) and waits. Pause returns once every worker is
// waiting, so nothing is being handled when it returns, or with ctx's error
// if that takes longer (the pause still takes effect), or when the consumer
// is stopping. Pausing a paused consumer does nothing. A pause lasts until
// Resume; it is not remembered across a restart of qrun.
func (c *Consumer) Pause(ctx context.Context) error {
	g := &c.gate
	g.mu.Lock()
	if !g.paused {
		g.paused = true
		g.flag.Store(true)
		g.resumed = make(chan struct{})
		g.allParked = make(chan struct{})
		if g.parked >= g.workers {
			close(g.allParked)
		}
		if g.base != nil {
			old := g.cur.Load()
			g.install()
			old.cancel()
		}
		c.log.Info("consumer paused")
	}
	all := g.allParked
	g.mu.Unlock()
	select {
	case <-all:
		return nil
	case <-c.draining:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Resume lets a paused consumer receive again. Resuming a running consumer
// does nothing.
func (c *Consumer) Resume() {
	g := &c.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.paused {
		return
	}
	g.paused = false
	g.flag.Store(false)
	close(g.resumed)
	if g.base != nil {
		g.install()
	}
	c.log.Info("consumer resumed")
}

// Paused reports whether the consumer is paused.
func (c *Consumer) Paused() bool { return c.gate.flag.Load() }

// park holds a worker while e (a paused epoch) lasts or until ctx ends.
func (g *gate) park(ctx context.Context, e *epoch) {
	g.mu.Lock()
	g.parked++
	if g.paused && g.parked >= g.workers {
		select {
		case <-g.allParked:
		default:
			close(g.allParked)
		}
	}
	g.mu.Unlock()
	select {
	case <-e.resumed:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.parked--
	g.mu.Unlock()
}
