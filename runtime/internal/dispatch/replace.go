package dispatch

import "context"

// Replaceable is implemented by instances of a plugin that can be replaced
// while the consumer runs (runtime/plugin's LiveInstance). Before each
// delivery the worker calls Acquire; false means the instance's version was
// swapped out, and the worker closes it and takes one of the new version, so
// no delivery starts on a replaced version and none is failed by a swap.
type Replaceable interface {
	Acquire() bool
}

// maxReplace bounds how often one delivery waits for a fresh instance in a
// row; each retry needs another swap to land in between, so hitting it means
// something is wrong, and the worker backs off instead of spinning.
const maxReplace = 8

// ready makes sure the worker holds an instance that may take the next
// delivery, creating or replacing it as needed; false means none could be
// had and the caller backs off.
func (w *worker) ready(ctx context.Context) bool {
	for range maxReplace {
		if w.inst == nil && !w.newInstance(ctx) {
			return false
		}
		r, ok := w.inst.(Replaceable)
		if !ok || r.Acquire() {
			return true
		}
		w.dropInstance()
		if ctx.Err() != nil {
			return false
		}
	}
	return false
}
