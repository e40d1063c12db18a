package config

import (
	"fmt"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// Limits on a configuration file, checked before the HCL parser sees it. The
// parser recurses once per nesting level and keeps every diagnostic, so
// without them a file of a few hundred kilobytes of brackets overflows the
// goroutine stack (a fatal error no recover can catch) and a file of binary
// junk yields a diagnostic per byte. Real configurations are a few
// kilobytes deep in nothing.
const (
	// MaxFileSize is the largest configuration file qrun reads.
	MaxFileSize = 1 << 20
	// MaxNesting is the deepest nesting the parser is allowed to see:
	// brackets, braces, parentheses, template interpolations, conditionals
	// and runs of unary operators, each of which is a level of recursion.
	MaxNesting = 256
	// MaxTokens bounds the parser's work, which grows with the number of
	// tokens (and of diagnostics, up to one per token) more than with the
	// size: a megabyte of '@' is a million invalid tokens and took seconds.
	// The count is an estimate that errs high (each punctuation byte is
	// one, each run of letters, digits or '_' another, strings included):
	// half a megabyte of real configuration, 15,000 one-line queue blocks,
	// estimates 175,000, far more than any real file.
	MaxTokens = 200_000
)

// prescan rejects, with a single diagnostic at the offending position, a
// file the HCL parser must not be given: one larger than MaxFileSize, one
// that is not UTF-8 text (a NUL byte or an invalid sequence: a binary file
// given by mistake), one of more than MaxTokens tokens, and one nested
// deeper than MaxNesting. BenchmarkHostileFiles times the worst cases.
//
// Nesting is counted on the raw bytes, strings and comments included,
// because a template interpolation inside a string is parsed recursively
// too. A bracket inside a string therefore counts; a configuration would
// need hundreds of unmatched ones to be refused.
func prescan(filename string, src []byte) *hcl.Diagnostic {
	if len(src) > MaxFileSize {
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Configuration file too large",
			Detail:   fmt.Sprintf("The file has %d bytes; a configuration may have at most %d (1 MiB).", len(src), MaxFileSize),
			Subject:  pointRange(filename, src, 0).Ptr(),
		}
	}
	var (
		brackets, conds, unary int
		tokens                 int
		inWord                 bool
		pos                    = -1
		tooMany                = -1
	)
	for i := 0; i < len(src); {
		c := src[i]
		if c == 0 {
			return &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Not a text file",
				Detail:   "The file contains a NUL byte, so it is binary, not an HCL configuration.",
				Subject:  pointRange(filename, src, i).Ptr(),
			}
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(src[i:])
			if r == utf8.RuneError && size <= 1 {
				return &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid UTF-8",
					Detail:   "The file is not valid UTF-8 text; an HCL configuration must be.",
					Subject:  pointRange(filename, src, i).Ptr(),
				}
			}
			i += size
			unary = 0
			continue
		}
		word := c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		space := c == ' ' || c == '\t' || c == '\r' || c == '\n'
		if (word && !inWord) || (!word && !space) {
			tokens++
			if tokens > MaxTokens {
				tooMany = i
				break
			}
		}
		inWord = word
		switch c {
		case '(', '[', '{':
			brackets++
			unary = 0
		case ')', ']', '}':
			brackets = max(brackets-1, 0)
			unary = 0
		case '?':
			conds++
			unary = 0
		case ':':
			conds = max(conds-1, 0)
			unary = 0
		case '!', '-':
			unary++
		case ' ', '\t', '\r', '\n':
		default:
			unary = 0
		}
		if brackets+conds+unary > MaxNesting && pos < 0 {
			pos = i
			break
		}
		i++
	}
	if tooMany >= 0 {
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Too many tokens",
			Detail:   fmt.Sprintf("The file has more than about %d tokens (words, numbers and punctuation) by here; qrun refuses such a file rather than spend seconds parsing it. A real configuration has far fewer.", MaxTokens),
			Subject:  pointRange(filename, src, tooMany).Ptr(),
		}
	}
	if pos >= 0 {
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Nesting too deep",
			Detail:   fmt.Sprintf("Expressions here are nested more than %d levels deep (brackets, braces, parentheses, interpolations, conditionals or unary operators); qrun refuses such a file rather than risk its parser.", MaxNesting),
			Subject:  pointRange(filename, src, pos).Ptr(),
		}
	}
	return nil
}

// pointRange is the one-character range at byte offset off of src, with
// its line and column (counted in characters, as HCL does).
func pointRange(filename string, src []byte, off int) hcl.Range {
	line, col := 1, 1
	for i := 0; i < off; {
		if src[i] == '\n' {
			line++
			col = 1
			i++
			continue
		}
		_, size := utf8.DecodeRune(src[i:])
		i += size
		col++
	}
	start := hcl.Pos{Line: line, Column: col, Byte: off}
	end := start
	if off < len(src) {
		_, size := utf8.DecodeRune(src[off:])
		end.Byte += size
		end.Column++
	}
	return hcl.Range{Filename: filename, Start: start, End: end}
}
