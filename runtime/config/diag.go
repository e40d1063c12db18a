package config

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// sortDiags orders diagnostics by position: HCL reports some attributes in map
// order, and a reader (or a test) wants the file top to bottom.
func sortDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
	return diags
}

// WriteDiagnostics renders diags for a terminal: each starts with a
// file:line:col position (which editors and terminals can jump to), followed
// by HCL's own rendering with the source snippet and the detail. f supplies
// the sources; when f is nil, or lacks a file, the file is read from disk so
// errors from a failed Load still show their snippet. color adds VT100
// escapes and should only be set when w is a terminal.
func WriteDiagnostics(w io.Writer, f *File, diags hcl.Diagnostics, color bool) error {
	files := map[string]*hcl.File{}
	if f != nil {
		for name, hf := range f.Files {
			files[name] = hf
		}
	}
	parser := hclparse.NewParser()
	for _, d := range diags {
		if d.Subject == nil || files[d.Subject.Filename] != nil {
			continue
		}
		if src, err := readLimited(d.Subject.Filename, MaxFileSize+1); err == nil {
			// Parse errors are irrelevant here: only the bytes and, when
			// available, the block structure for the "in queue" context.
			// A file the parser must not see gives its bytes alone.
			var hf *hcl.File
			if prescan(d.Subject.Filename, src) == nil {
				hf, _ = parser.ParseHCL(src, d.Subject.Filename)
			}
			if hf == nil {
				hf = &hcl.File{Bytes: printable(src)}
			}
			files[d.Subject.Filename] = hf
		}
	}
	var buf bytes.Buffer
	shown := diags[:min(len(diags), MaxDiagnostics)]
	for _, d := range shown {
		buf.Reset()
		writeDiagnostic(&buf, files, d, color)
		if d.Subject != nil {
			if _, err := fmt.Fprintf(w, "%s: ", Position(*d.Subject)); err != nil {
				return err
			}
		}
		if _, err := w.Write(clipLines(buf.Bytes(), maxLineBytes)); err != nil {
			return err
		}
	}
	if rest := diags[len(shown):]; len(rest) > 0 {
		var errs int
		for _, d := range rest {
			if d.Severity == hcl.DiagError {
				errs++
			}
		}
		if _, err := fmt.Fprintf(w, "... and %d more diagnostics (%d errors, %d warnings) not shown.\n", len(rest), errs, len(rest)-errs); err != nil {
			return err
		}
	}
	return nil
}

// printable returns src with every byte that would garble a terminal (a
// control character other than tab, CR and newline, or a byte of invalid
// UTF-8) replaced by '.', one byte for one so that columns still match: a
// snippet quotes a binary file's line, and a NUL or an escape sequence has
// no business reaching the reader's terminal.
func printable(src []byte) []byte {
	out := make([]byte, 0, len(src))
	for len(src) > 0 {
		r, n := utf8.DecodeRune(src)
		switch {
		case r == utf8.RuneError && n <= 1, r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0x7f:
			out = append(out, bytes.Repeat([]byte{'.'}, max(n, 1))...)
		default:
			out = append(out, src[:n]...)
		}
		src = src[max(n, 1):]
	}
	return out
}

// MaxDiagnostics is the most diagnostics WriteDiagnostics prints; the rest
// are counted. A broken file can yield one per byte, and the first few are
// what a reader fixes first (the others are often their echoes).
const MaxDiagnostics = 20

// maxLineBytes bounds each printed line, because a snippet quotes a whole
// source line and a detail may quote a value, either of which can be as
// long as the file.
const maxLineBytes = 512

// clipLines shortens every line of b longer than limit bytes, cutting at a
// character boundary and saying how much was left out.
func clipLines(b []byte, limit int) []byte {
	var out []byte
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line = b[:i+1]
		}
		b = b[len(line):]
		body := bytes.TrimSuffix(line, []byte("\n"))
		if len(body) <= limit {
			out = append(out, line...)
			continue
		}
		cut := limit
		for cut > 0 && !utf8.RuneStart(body[cut]) {
			cut--
		}
		out = append(out, body[:cut]...)
		out = fmt.Appendf(out, "... (%d more bytes)\n", len(body)-cut)
	}
	return out
}

// Position formats the start of r as file:line:col, the form compilers use,
// for one-line log messages about a config location.
func Position(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// writeDiagnostic renders d as hcl.NewDiagnosticTextWriter does (the same
// layout, so output reads like any HCL tool's), but finds the snippet's
// lines from the subject's byte offsets instead of scanning the whole file
// line by line for each diagnostic: that scan made 20 diagnostics near the
// end of a 1 MiB file take seconds.
func writeDiagnostic(buf *bytes.Buffer, files map[string]*hcl.File, d *hcl.Diagnostic, color bool) {
	var colorCode, highlight, reset string
	if color {
		colorCode, highlight, reset = "\x1b[31m", "\x1b[1;4m", "\x1b[0m"
		if d.Severity == hcl.DiagWarning {
			colorCode = "\x1b[33m"
		}
	}
	severity := "Error"
	if d.Severity == hcl.DiagWarning {
		severity = "Warning"
	}
	fmt.Fprintf(buf, "%s%s%s: %s\n\n", colorCode, severity, reset, d.Summary)
	if d.Subject != nil {
		writeSnippet(buf, files[d.Subject.Filename], d, highlight, reset)
	}
	if d.Detail != "" {
		fmt.Fprintf(buf, "%s\n\n", d.Detail)
	}
}

func writeSnippet(buf *bytes.Buffer, file *hcl.File, d *hcl.Diagnostic, highlight, reset string) {
	subj := *d.Subject
	if file == nil || file.Bytes == nil {
		fmt.Fprintf(buf, "  on %s line %d:\n  (source code not available)\n\n", subj.Filename, subj.Start.Line)
		return
	}
	var where string
	if cs, ok := file.Nav.(interface{ ContextString(int) string }); ok {
		if s := cs.ContextString(subj.Start.Byte); s != "" {
			where = ", in " + s
		}
	}
	fmt.Fprintf(buf, "  on %s line %d%s:\n", subj.Filename, subj.Start.Line, where)
	src := file.Bytes
	clamp := func(n int) int { return min(max(n, 0), len(src)) }
	snip := subj
	if d.Context != nil {
		snip = hcl.RangeOver(snip, *d.Context)
	}
	hs, he := clamp(subj.Start.Byte), clamp(subj.End.Byte)
	if he <= hs { // an empty range is shown as one character
		he = clamp(hs + 1)
	}
	from, to := clamp(snip.Start.Byte), clamp(max(snip.End.Byte, he))
	// Back to the start of the first line, then line by line to the end
	// of the last one.
	ls := bytes.LastIndexByte(src[:from], '\n') + 1
	line := snip.Start.Line
	for {
		le := len(src)
		if i := bytes.IndexByte(src[ls:], '\n'); i >= 0 {
			le = ls + i
		}
		text := bytes.TrimSuffix(src[ls:le], []byte("\r"))
		a, b := min(max(hs, ls), ls+len(text)), min(max(he, ls), ls+len(text))
		if a == b {
			fmt.Fprintf(buf, "%4d: %s\n", line, text)
		} else {
			fmt.Fprintf(buf, "%4d: %s%s%s%s%s\n", line, src[ls:a], highlight, src[a:b], reset, src[b:ls+len(text)])
		}
		if le >= len(src) || le+1 >= to {
			break
		}
		ls = le + 1
		line++
	}
	buf.WriteByte('\n')
}
