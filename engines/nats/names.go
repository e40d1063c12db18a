package nats

import (
	"fmt"

	"github.com/qrun-dev/qrun/engines"
)

// maxName bounds a queue name so that the stream name (prefix + name)
// stays well inside JetStream's limits.
const maxName = 200

// checkName reports why name cannot be a queue: it becomes a stream name
// and one subject token, so only letters, digits, '_' and '-' are allowed.
func checkName(name string) error {
	if len(name) > maxName {
		return fmt.Errorf("queue name %q is %d bytes, more than %d: %w", name, len(name), maxName, engines.ErrInvalid)
	}
	for _, c := range name {
		if !nameChar(c) {
			return fmt.Errorf("queue name %q has %q; the nats engine takes letters, digits, '_' and '-': %w", name, c, engines.ErrInvalid)
		}
	}
	return nil
}

// checkPrefix reports why p cannot start stream and bucket names.
func checkPrefix(p string) error {
	if len(p) > 32 {
		return fmt.Errorf("longer than 32 bytes: %w", engines.ErrInvalid)
	}
	for _, c := range p {
		if !nameChar(c) {
			return fmt.Errorf("has %q; use letters, digits, '_' and '-': %w", c, engines.ErrInvalid)
		}
	}
	return nil
}

func nameChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
