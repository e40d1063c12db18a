package engines

import "context"

// SlotKeeper is optionally implemented by an Engine that several processes
// share (postgres): it keeps per-key concurrency slots in the shared
// storage, so a consumer's cap on deliveries in flight per key holds
// across every process consuming the queue rather than per process
// (concurrency_scope = "global", docs/schedules.md).
//
// A slot held by a process that dies, however it dies, must come back by
// itself: the engine ties it to something that ends with the process.
type SlotKeeper interface {
	// TakeSlot takes one of the n slots of key in the group named group
	// (one group per consumer) if one is free, and returns the function
	// that gives it back, to be called once. ok is false when all n are
	// held, by this process or others; the caller tries again later.
	TakeSlot(ctx context.Context, group, key string, n int) (release func(), ok bool, err error)
}
