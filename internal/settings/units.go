// Package settings holds the one set of rules qrun's HCL uses for sizes and
// durations, in every block (runtime, queue, consumer, engine), and a small
// attribute decoder that reports each problem at its source range. It sits
// under internal/ at the module root, below both runtime/config and the
// engine packages, because engines must not import runtime/ and the runtime
// must not keep a second copy of the rules.
package settings

import (
	"errors"
	"math"
	"math/bits"
	"strings"
)

// sizeUnit returns a suffix's multiplier. IEC suffixes are powers of 1024
// and SI suffixes powers of 1000, as their standards say, so "64MB" is not
// silently 64MiB. A switch rather than a map keeps the table immutable.
func sizeUnit(unit string) (uint64, bool) {
	switch unit {
	case "", "B":
		return 1, true
	case "KB", "kB":
		return 1e3, true
	case "MB":
		return 1e6, true
	case "GB":
		return 1e9, true
	case "TB":
		return 1e12, true
	case "KiB":
		return 1 << 10, true
	case "MiB":
		return 1 << 20, true
	case "GiB":
		return 1 << 30, true
	case "TiB":
		return 1 << 40, true
	}
	return 0, false
}

// ParseSize parses a byte size such as "32MiB", "512KiB", "1.5GiB", "64MB"
// or "1048576". A fraction is allowed as long as the result is a whole
// number of bytes.
func ParseSize(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		return 0, errors.New("a size starts with a number")
	}
	mult, ok := sizeUnit(unit)
	if !ok {
		return 0, errors.New("unknown unit " + quote(unit))
	}
	whole, frac, hasFrac := strings.Cut(num, ".")
	if whole == "" || strings.Contains(frac, ".") || hasFrac && frac == "" {
		return 0, errors.New("malformed number " + quote(num))
	}
	overflow := errors.New("size too large")
	var n uint64
	for _, c := range whole {
		hi, lo := bits.Mul64(n, 10)
		if hi != 0 || lo > math.MaxUint64-uint64(c-'0') {
			return 0, overflow
		}
		n = lo + uint64(c-'0')
	}
	hi, total := bits.Mul64(n, mult)
	if hi != 0 {
		return 0, overflow
	}
	// The fraction contributes frac/10^len(frac) * mult bytes, which must be
	// whole: a size is a count of bytes.
	if frac = strings.TrimRight(frac, "0"); frac != "" {
		if len(frac) > 12 {
			return 0, errors.New("too many decimal places")
		}
		var fn, den uint64 = 0, 1
		for _, c := range frac {
			fn = fn*10 + uint64(c-'0')
			den *= 10
		}
		fhi, flo := bits.Mul64(fn, mult)
		if fhi >= den {
			return 0, overflow
		}
		q, r := bits.Div64(fhi, flo, den)
		if r != 0 {
			return 0, errors.New("not a whole number of bytes")
		}
		if total > math.MaxUint64-q {
			return 0, overflow
		}
		total += q
	}
	return total, nil
}

func quote(s string) string { return `"` + s + `"` }
