package settings

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// SizeHelp is how a size is written, for diagnostics.
const SizeHelp = `Use a number of bytes or a number with a unit: B, KiB, MiB, GiB, TiB (1024-based) or KB, MB, GB, TB (1000-based), e.g. "32MiB".`

// DurationHelp is how a duration is written, for diagnostics.
const DurationHelp = `Use Go duration syntax such as "500ms", "30s", "5m" or "1h30m".`

// Value evaluates a present attribute. ok is false when a is nil, its
// value is null or unknown, or evaluating it failed (diags say why).
func Value(a *hcl.Attribute, ctx *hcl.EvalContext) (v cty.Value, ok bool, diags hcl.Diagnostics) {
	if a == nil {
		return cty.NilVal, false, nil
	}
	v, diags = a.Expr.Value(ctx)
	if diags.HasErrors() || v.IsNull() || !v.IsWhollyKnown() {
		return cty.NilVal, false, diags
	}
	return v, true, diags
}

// Size evaluates a as a byte size: a whole number of bytes, or a string
// with a unit ("32MiB", "64MB", "1048576"; see ParseSize). ok is false when
// a is absent or null, or its value is not a size (diags say why, at a's
// value).
func Size(a *hcl.Attribute, ctx *hcl.EvalContext) (n uint64, ok bool, diags hcl.Diagnostics) {
	v, ok, diags := Value(a, ctx)
	if !ok {
		return 0, false, diags
	}
	var s string
	switch v.Type() {
	case cty.String:
		s = v.AsString()
	case cty.Number:
		s = v.AsBigFloat().Text('f', -1)
	default:
		return 0, false, append(diags, errorAt(a, "Invalid size", "%s must be a size such as \"32MiB\", not a %s.", a.Name, v.Type().FriendlyName()))
	}
	n, err := ParseSize(s)
	if err != nil {
		return 0, false, append(diags, errorAt(a, "Invalid size", "%q is not a size: %v. %s", s, err, SizeHelp))
	}
	return n, true, diags
}

// Duration evaluates a as a duration, which is always a string in Go's
// syntax: a bare number would be ambiguous between seconds and
// nanoseconds. ok is false when a is absent or null, or its value is not a
// duration (diags say why, at a's value).
func Duration(a *hcl.Attribute, ctx *hcl.EvalContext) (d time.Duration, ok bool, diags hcl.Diagnostics) {
	v, ok, diags := Value(a, ctx)
	if !ok {
		return 0, false, diags
	}
	if v.Type() != cty.String {
		return 0, false, append(diags, errorAt(a, "Invalid duration",
			"%s must be a duration string such as \"30s\" or \"5m\", not a %s.", a.Name, v.Type().FriendlyName()))
	}
	s := v.AsString()
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false, append(diags, errorAt(a, "Invalid duration", "%q is not a duration (%v). %s", s, err, DurationHelp))
	}
	return d, true, diags
}

func errorAt(a *hcl.Attribute, summary, format string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: a.Expr.Range().Ptr()}
}

// Decoder decodes single attributes of a settings block, collecting every
// diagnostic at its attribute's value, so that one pass reports all the
// block's problems. Methods take the value to return when the attribute is
// absent or wrong. The zero value evaluates without variables or functions.
type Decoder struct {
	// Ctx evaluates expressions (it knows env()).
	Ctx *hcl.EvalContext
	// Diags collects what went wrong.
	Diags hcl.Diagnostics
}

// Errorf records an error at a's value.
func (d *Decoder) Errorf(a *hcl.Attribute, summary, format string, args ...any) {
	d.Diags = append(d.Diags, errorAt(a, summary, format, args...))
}

// Content returns body's attributes and blocks per schema, recording
// unsupported or missing arguments.
func (d *Decoder) Content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(schema)
	d.Diags = append(d.Diags, diags...)
	return c
}

// into converts a present, non-null attribute into dst, a pointer to a Go
// value of type ty, and reports whether it did.
func (d *Decoder) into(a *hcl.Attribute, ty cty.Type, dst any) bool {
	v, ok, diags := Value(a, d.Ctx)
	d.Diags = append(d.Diags, diags...)
	if !ok {
		return false
	}
	cv, err := convert.Convert(v, ty)
	if err == nil {
		err = gocty.FromCtyValue(cv, dst)
	}
	if err != nil {
		d.Errorf(a, "Incorrect attribute value type", "Inappropriate value for %s: %s.", a.Name, err)
		return false
	}
	return true
}

// String decodes a string.
func (d *Decoder) String(a *hcl.Attribute, def string) string {
	s := def
	if !d.into(a, cty.String, &s) {
		return def
	}
	return s
}

// StringValue decodes a string, reporting whether a was present and valid.
func (d *Decoder) StringValue(a *hcl.Attribute) (string, bool) {
	var s string
	ok := d.into(a, cty.String, &s)
	return s, ok
}

// Bool decodes a bool.
func (d *Decoder) Bool(a *hcl.Attribute, def bool) bool {
	b := def
	if !d.into(a, cty.Bool, &b) {
		return def
	}
	return b
}

// IntValue decodes a whole number, reporting whether a was present and
// valid; the caller checks its range.
func (d *Decoder) IntValue(a *hcl.Attribute) (int, bool) {
	var n int
	ok := d.into(a, cty.Number, &n)
	return n, ok
}

// Int decodes a whole number within [lo, hi].
func (d *Decoder) Int(a *hcl.Attribute, def, lo, hi int) int {
	n, ok := d.IntValue(a)
	if !ok {
		return def
	}
	if n < lo || n > hi {
		d.Errorf(a, "Invalid "+a.Name, "%s must be %s, not %d.", a.Name, between(lo, hi, ""), n)
		return def
	}
	return n
}

// OneOf decodes a string that must be one of allowed.
func (d *Decoder) OneOf(a *hcl.Attribute, def string, allowed ...string) string {
	if a == nil {
		return def
	}
	s := d.String(a, def)
	if !slices.Contains(allowed, s) {
		d.Errorf(a, "Invalid "+a.Name, "%s must be one of %s; got %q.", a.Name, strings.Join(allowed, ", "), s)
		return def
	}
	return s
}

// Size decodes a byte size (see the function Size) within [lo, hi] bytes.
// A negative number is out of range rather than malformed.
func (d *Decoder) Size(a *hcl.Attribute, def, lo, hi int) int {
	n, ok := d.SizeValue(a)
	if !ok {
		return def
	}
	if n < lo || n > hi {
		d.Errorf(a, "Invalid "+a.Name, "%s must be %s, not %d.", a.Name, between(lo, hi, " bytes"), n)
		return def
	}
	return n
}

// SizeValue decodes a byte size (see the function Size), reporting
// whether a was present and valid; the caller checks its range.
func (d *Decoder) SizeValue(a *hcl.Attribute) (int, bool) {
	if v, ok, _ := Value(a, d.Ctx); ok && v.Type() == cty.Number && v.AsBigFloat().Sign() < 0 {
		n, _ := v.AsBigFloat().Int64()
		return int(n), true
	}
	n, ok, diags := Size(a, d.Ctx)
	d.Diags = append(d.Diags, diags...)
	if !ok {
		return 0, false
	}
	if n > math.MaxInt {
		d.Errorf(a, "Invalid "+a.Name, "%s is too large: %d bytes.", a.Name, n)
		return 0, false
	}
	return int(n), true
}

// Duration decodes a duration (see the function Duration) within [lo, hi].
func (d *Decoder) Duration(a *hcl.Attribute, def, lo, hi time.Duration) time.Duration {
	v, ok := d.DurationValue(a)
	if !ok {
		return def
	}
	if v < lo || v > hi {
		d.Errorf(a, "Invalid "+a.Name, "%s must be between %v and %v, not %v.", a.Name, lo, hi, v)
		return def
	}
	return v
}

// DurationValue decodes a duration (see the function Duration), reporting
// whether a was present and valid; the caller checks its range.
func (d *Decoder) DurationValue(a *hcl.Attribute) (time.Duration, bool) {
	v, ok, diags := Duration(a, d.Ctx)
	d.Diags = append(d.Diags, diags...)
	return v, ok
}

// between words the range [lo, hi], leaving out a bound that is no bound.
func between(lo, hi int, unit string) string {
	if hi == math.MaxInt {
		return fmt.Sprintf("at least %d%s", lo, unit)
	}
	return fmt.Sprintf("between %d and %d%s", lo, hi, unit)
}
