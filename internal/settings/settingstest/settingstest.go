// Package settingstest helps the engine packages test their settings
// decoders: it parses an engine block's body from a named file and renders
// each diagnostic with its file:line:col, as `qrun validate` shows it.
package settingstest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// File is the name the body is parsed from.
const File = "engine.hcl"

// Decode parses src, an engine block's body (without its type attribute),
// as File and decodes it with decode.
func Decode[S any](t testing.TB, src string, decode func(hcl.Body, *hcl.EvalContext) (S, hcl.Diagnostics)) (S, hcl.Diagnostics) {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), File, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("parse %q: %v", src, diags)
	}
	return decode(f.Body, nil)
}

// String renders diags one per line as "file:line:col: summary: detail";
// a diagnostic without a position renders as "?:".
func String(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		if d.Subject == nil {
			b.WriteString("?: ")
		} else {
			fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		fmt.Fprintf(&b, "%s: %s\n", d.Summary, d.Detail)
	}
	return b.String()
}

// Expect checks diags against want: none means valid; otherwise every
// want must occur in the rendered diagnostics (a want such as
// "engine.hcl:2:15" pins the position) and every diagnostic has a
// position.
func Expect(t testing.TB, diags hcl.Diagnostics, want ...string) {
	t.Helper()
	got := String(diags)
	if len(want) == 0 {
		if diags.HasErrors() {
			t.Fatalf("valid settings rejected:\n%s", got)
		}
		return
	}
	if !diags.HasErrors() {
		t.Fatalf("settings accepted; want an error mentioning %q", want)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("diagnostics do not mention %q:\n%s", w, got)
		}
	}
	if strings.Contains(got, "?: ") {
		t.Errorf("a diagnostic has no position:\n%s", got)
	}
}
