//go:build linux

package mq

import (
	"fmt"
	"strings"

	"github.com/qrun-dev/qrun/engines"
)

// NameMax is the longest queue name the kernel accepts, in bytes, not
// counting the leading slash (NAME_MAX).
const NameMax = 255

// CanonicalName returns name in the form libc's mq_open expects, with exactly
// one leading slash: "orders" and "/orders" both become "/orders". It rejects,
// wrapping engines.ErrInvalid, what the kernel would refuse or store under a
// different name: an empty name, a slash after the first character, a NUL
// byte, "." and "..", and names longer than NameMax bytes (which are never
// truncated).
func CanonicalName(name string) (string, error) {
	bare := strings.TrimPrefix(name, "/")
	var reason string
	switch {
	case bare == "":
		reason = "empty"
	case len(bare) > NameMax:
		reason = fmt.Sprintf("%d bytes long, the limit is %d", len(bare), NameMax)
	case strings.IndexByte(bare, '/') >= 0:
		reason = "a slash is allowed only as the first character"
	case strings.IndexByte(bare, 0) >= 0:
		reason = "contains a NUL byte"
	case bare == "." || bare == "..":
		reason = `"." and ".." are not queue names`
	default:
		return "/" + bare, nil
	}
	return "", fmt.Errorf("mq: queue name %q: %s: %w", name, reason, engines.ErrInvalid)
}

// kernelName is the NUL-terminated name the system calls take: libc strips
// the leading slash before calling the kernel, and so do we.
func kernelName(canonical string) []byte {
	b := make([]byte, len(canonical))
	copy(b, canonical[1:])
	b[len(b)-1] = 0
	return b
}
