package settings_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/qrun-dev/qrun/internal/settings"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want uint64
		err  bool
	}{
		{in: "1048576", want: 1 << 20},
		{in: "32MiB", want: 32 << 20},
		{in: "512KiB", want: 512 << 10},
		{in: "1GiB", want: 1 << 30},
		{in: "64MB", want: 64e6},
		{in: "64 kB", want: 64e3},
		{in: "2TiB", want: 2 << 40},
		{in: "1.5KiB", want: 1536},
		{in: "0.5B", err: true},
		{in: "MiB", err: true},
		{in: "", err: true},
		{in: "1.2.3MiB", err: true},
		{in: "1.MiB", err: true},
		{in: "32mib", err: true},
		{in: "-1MiB", err: true},
		{in: "99999999999999999999", err: true},
		{in: "20000000TiB", err: true},
	} {
		got, err := settings.ParseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("settings.ParseSize(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// attr parses "x = <expr>" from a file called s.hcl, with the expression
// starting at line 2, column 5.
func attr(t *testing.T, expr string) *hcl.Attribute {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte("\nx = "+expr+"\n"), "s.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	attrs, diags := f.Body.JustAttributes()
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return attrs["x"]
}

// TestSizeAndDurationRules: one rule for every block; a size is a number
// of bytes or a string with a unit, a duration only a Go duration string,
// and a bad value is reported at s.hcl:2:5, where it is written.
func TestSizeAndDurationRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr    string
		size    uint64
		dur     time.Duration
		sizeErr string // "" means it is a size
		durErr  string // "" means it is a duration
	}{
		{expr: `1048576`, size: 1 << 20, durErr: "must be a duration string"},
		{expr: `"1MiB"`, size: 1 << 20, durErr: "is not a duration"},
		{expr: `"64MB"`, size: 64e6, durErr: "is not a duration"},
		{expr: `"1.5KiB"`, size: 1536, durErr: "is not a duration"},
		{expr: `"30s"`, sizeErr: "unknown unit", dur: 30 * time.Second},
		{expr: `"1h30m"`, sizeErr: "unknown unit", dur: 90 * time.Minute},
		{expr: `"-1s"`, sizeErr: "a size starts with a number", dur: -time.Second},
		{expr: `"32mib"`, sizeErr: "unknown unit", durErr: "is not a duration"},
		{expr: `true`, sizeErr: "not a bool", durErr: "not a bool"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			a := attr(t, tc.expr)
			check := func(what, wantErr string, ok bool, diags hcl.Diagnostics) {
				t.Helper()
				if wantErr == "" {
					if !ok || diags.HasErrors() {
						t.Errorf("%s of %s: %v, want no error", what, tc.expr, diags)
					}
					return
				}
				if ok || len(diags) != 1 || !strings.Contains(diags[0].Detail, wantErr) {
					t.Fatalf("%s of %s: ok=%v %v, want one error mentioning %q", what, tc.expr, ok, diags, wantErr)
				}
				if got := fmt.Sprintf("%s:%d:%d", diags[0].Subject.Filename, diags[0].Subject.Start.Line, diags[0].Subject.Start.Column); got != "s.hcl:2:5" {
					t.Errorf("%s of %s: error at %s, want s.hcl:2:5", what, tc.expr, got)
				}
			}
			n, ok, diags := settings.Size(a, nil)
			check("size", tc.sizeErr, ok, diags)
			if ok && n != tc.size {
				t.Errorf("size of %s = %d, want %d", tc.expr, n, tc.size)
			}
			d, ok, diags := settings.Duration(a, nil)
			check("duration", tc.durErr, ok, diags)
			if ok && d != tc.dur {
				t.Errorf("duration of %s = %v, want %v", tc.expr, d, tc.dur)
			}
		})
	}
}

// TestAbsentOrNull: an absent or null attribute is not set and not an
// error, so a caller keeps its default.
func TestAbsentOrNull(t *testing.T) {
	t.Parallel()
	for _, a := range []*hcl.Attribute{nil, attr(t, "null")} {
		if _, ok, diags := settings.Size(a, nil); ok || diags.HasErrors() {
			t.Errorf("Size(%v) = ok %v, %v", a, ok, diags)
		}
		if _, ok, diags := settings.Duration(a, nil); ok || diags.HasErrors() {
			t.Errorf("Duration(%v) = ok %v, %v", a, ok, diags)
		}
	}
}

// TestDecoderRanges: the Decoder's bounds are checked and reported at the
// attribute; a value in range is returned, a bad one leaves the default.
func TestDecoderRanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		got  func(d *settings.Decoder) any
		want any
		err  string
	}{
		{"size in range", func(d *settings.Decoder) any { return d.Size(attr(t, `"2KiB"`), 7, 1, 4096) }, 2048, ""},
		{"size too big", func(d *settings.Decoder) any { return d.Size(attr(t, `"8KiB"`), 7, 1, 4096) }, 7, "between 1 and 4096 bytes"},
		{"duration too short", func(d *settings.Decoder) any {
			return d.Duration(attr(t, `"1us"`), time.Second, time.Millisecond, time.Hour)
		}, time.Second, "between 1ms and 1h0m0s"},
		{"int", func(d *settings.Decoder) any { return d.Int(attr(t, `3`), 0, 2, 10) }, 3, ""},
		{"int too small", func(d *settings.Decoder) any { return d.Int(attr(t, `1`), 0, 2, 10) }, 0, "between 2 and 10"},
		{"one of", func(d *settings.Decoder) any { return d.OneOf(attr(t, `"b"`), "a", "a", "b") }, "b", ""},
		{"not one of", func(d *settings.Decoder) any { return d.OneOf(attr(t, `"c"`), "a", "a", "b") }, "a", `one of a, b; got "c"`},
		{"bool", func(d *settings.Decoder) any { return d.Bool(attr(t, `true`), false) }, true, ""},
		{"string from number", func(d *settings.Decoder) any { return d.String(attr(t, `5`), "") }, "5", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d settings.Decoder
			if got := tc.got(&d); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if tc.err == "" {
				if d.Diags.HasErrors() {
					t.Errorf("unexpected %v", d.Diags)
				}
				return
			}
			if len(d.Diags) != 1 || !strings.Contains(d.Diags[0].Detail, tc.err) || d.Diags[0].Subject.Start.Line != 2 || d.Diags[0].Subject.Start.Column != 5 {
				t.Errorf("diagnostics %v, want one at s.hcl:2:5 mentioning %q", d.Diags, tc.err)
			}
		})
	}
}
