package ring

// The layout constants, geometry and names are plain values that a
// configuration checks on any platform; the segments themselves (ring.go,
// ops.go) need Linux's futexes and /dev/shm.

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
)

// Layout constants (see the package doc).
const (
	// Magic is the first 8 bytes of a ring segment.
	Magic = "QRUNRING"
	// Version is the layout version this package reads and writes.
	Version = 1
	// HeaderSize is the size of the segment header.
	HeaderSize = 4096
	// SlotHeaderSize is the size of a slot's header, before its record.
	SlotHeaderSize = 32
	// FlagEnvelope marks a record holding a qrun envelope rather than a bare body.
	FlagEnvelope = 1
)

// Limits on geometry, so a typo cannot ask for a terabyte.
const (
	MaxSlotSize = 64 << 20
	MaxCapacity = 1 << 24
	// MaxSegment bounds the whole mapping.
	MaxSegment = 16 << 30
	// NameMax is the longest segment file name (NAME_MAX).
	NameMax = 255
)

// DefaultDir is where Linux keeps POSIX shared memory (what shm_open uses).
const DefaultDir = "/dev/shm"

// Mode says what a producer does when the ring is full.
type Mode uint32

// Modes.
const (
	// Blocking makes a producer wait, up to its deadline, for space.
	Blocking Mode = 0
	// Cyclic makes a producer overwrite the oldest record, counting it.
	Cyclic Mode = 1
)

// String names the mode as the configuration spells it.
func (m Mode) String() string {
	switch m {
	case Blocking:
		return "blocking"
	case Cyclic:
		return "cyclic"
	}
	return fmt.Sprintf("mode(%d)", uint32(m))
}

// ParseMode reads a mode as the configuration spells it.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "blocking":
		return Blocking, nil
	case "cyclic":
		return Cyclic, nil
	}
	return 0, fmt.Errorf("ring: mode %q: want \"blocking\" or \"cyclic\": %w", s, ErrGeometry)
}

// Geometry is a ring's fixed shape, chosen at creation.
type Geometry struct {
	// SlotSize is the largest record a slot holds, in bytes.
	SlotSize int
	// Capacity is the number of slots, a power of two.
	Capacity int
	// Mode is what producers do when the ring is full.
	Mode Mode
}

// Stride is the distance between slots.
func (g Geometry) Stride() int { return (SlotHeaderSize + g.SlotSize + 63) &^ 63 }

// Size is the size of the whole segment.
func (g Geometry) Size() int64 { return HeaderSize + int64(g.Capacity)*int64(g.Stride()) }

// Validate checks the geometry against the limits.
func (g Geometry) Validate() error {
	switch {
	case g.SlotSize < 1 || g.SlotSize > MaxSlotSize:
		return fmt.Errorf("ring: slot size %d: want 1 to %d bytes: %w", g.SlotSize, MaxSlotSize, ErrGeometry)
	case g.Capacity < 2 || g.Capacity > MaxCapacity || bits.OnesCount(uint(g.Capacity)) != 1:
		return fmt.Errorf("ring: capacity %d: want a power of two from 2 to %d: %w", g.Capacity, MaxCapacity, ErrGeometry)
	case g.Mode != Blocking && g.Mode != Cyclic:
		return fmt.Errorf("ring: %v: %w", g.Mode, ErrGeometry)
	case g.Size() > MaxSegment:
		return fmt.Errorf("ring: %d slots of %d bytes need %d bytes, over the %d limit: %w", g.Capacity, g.SlotSize, g.Size(), int64(MaxSegment), ErrGeometry)
	}
	return nil
}

// Errors. Callers tell them apart with errors.Is.
var (
	// ErrGeometry reports an invalid geometry, or one that differs from the
	// segment's.
	ErrGeometry = errors.New("ring: bad geometry")
	// ErrName reports a segment name that cannot be stored exactly.
	ErrName = errors.New("ring: bad segment name")
	// ErrCorrupt reports a segment whose header is not a valid ring.
	ErrCorrupt = errors.New("ring: not a valid ring segment")
	// ErrFull reports a blocking ring that stayed full until the deadline.
	ErrFull = errors.New("ring: full")
	// ErrTooLarge reports a record larger than the slot size.
	ErrTooLarge = errors.New("ring: record larger than slot")
	// ErrClosed reports use of a closed Ring.
	ErrClosed = errors.New("ring: closed")
)

// ValidateName checks that name can be a segment file name as it is: not
// empty, no slash or NUL, not "." or "..", at most NameMax bytes. It never
// shortens or rewrites a name.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("ring: empty segment name: %w", ErrName)
	case len(name) > NameMax:
		return fmt.Errorf("ring: segment name %.40q... is %d bytes, the limit is %d: %w", name, len(name), NameMax, ErrName)
	case name == "." || name == "..":
		return fmt.Errorf("ring: segment name %q: %w", name, ErrName)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("ring: segment name %q contains '/' or NUL: %w", name, ErrName)
	}
	return nil
}
