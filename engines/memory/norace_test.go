//go:build !race

package memory_test

// raceEnabled reports whether the race detector is on; it changes allocation
// counts, so allocation guards skip under it.
const raceEnabled = false
