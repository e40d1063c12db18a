package nats

// Pings counts the ack confirmations that took a PING round trip of
// their own rather than riding on a fetch.
func (e *Engine) Pings() int64 { return e.flush.pings.Load() }
