package redis

import "time"

// SetAheadHold sets how long e's queues keep a batch leased ahead for a
// Receive, so that a test decides whether it is taken or given back rather
// than the machine's speed.
func SetAheadHold(e *Engine, d time.Duration) { e.aheadHold = d }
