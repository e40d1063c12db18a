//go:build linux && !race

package posixmq_test

// raceEnabled reports whether the race detector is on; it changes
// allocation counts, so the allocation guard skips under it.
const raceEnabled = false
