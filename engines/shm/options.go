package shm

import (
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines/shm/ring"
)

// Options configure an Engine. Every queue of the engine has the same
// geometry, which must match the segment when it already exists.
type Options struct {
	// Dir holds the segments; empty means /dev/shm (where shm_open puts them).
	Dir string
	// Prefix is put before a queue's name to make its segment's name, so
	// several qruns (or tests) can share a machine; empty means DefaultPrefix.
	// Names are never shortened: one too long is refused.
	Prefix string
	// SlotSize is the largest record a slot holds; zero means DefaultSlotSize.
	SlotSize int
	// Capacity is the number of slots of each queue, a power of two; zero
	// means DefaultCapacity.
	Capacity int
	// Mode is what a producer does when a ring is full.
	Mode ring.Mode
	// StallTimeout and SendTimeout are the ring's (see ring.Options).
	StallTimeout time.Duration
	SendTimeout  time.Duration
	// Logger receives the engine's rare warnings; nil means none.
	Logger *zap.Logger
}

// Defaults for Options.
const (
	DefaultPrefix   = "qrun."
	DefaultSlotSize = 1024
	DefaultCapacity = 4096
)
