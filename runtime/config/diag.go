package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"

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
		if src, err := os.ReadFile(d.Subject.Filename); err == nil {
			// Parse errors are irrelevant here: only the bytes and, when
			// available, the block structure for the "in queue" context.
			hf, _ := parser.ParseHCL(src, d.Subject.Filename)
			if hf == nil {
				hf = &hcl.File{Bytes: src}
			}
			files[d.Subject.Filename] = hf
		}
	}
	var buf bytes.Buffer
	tw := hcl.NewDiagnosticTextWriter(&buf, files, 0, color)
	for _, d := range diags {
		buf.Reset()
		if err := tw.WriteDiagnostic(d); err != nil {
			return err
		}
		if d.Subject != nil {
			if _, err := fmt.Fprintf(w, "%s: ", Position(*d.Subject)); err != nil {
				return err
			}
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// Position formats the start of r as file:line:col, the form compilers use,
// for one-line log messages about a config location.
func Position(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}
