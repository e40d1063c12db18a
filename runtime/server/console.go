package server

import (
	"context"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
)

// What the web console needs of a Server beyond the operations surface:
// the configuration in effect (admin.ConfigSourcer) and a latency summary
// per consumer.

// secretName matches the attribute and object key names whose literal
// values the console must not show: admin_token, passwords, DSNs and URLs
// (which may carry credentials), keys, secrets and authorization headers.
// Object keys count too, for a plugin's config = { api_key = "..." } and an
// http block's headers = { Authorization = "..." }.
var secretName = regexp.MustCompile(`(?i)(token|password|passwd|secret|dsn|url|credential|key|authorization|cookie)$`)

// Redacted replaces a secret value in ConfigSource.
const redacted = `"<redacted>"`

// ConfigSource implements admin.ConfigSourcer: the text of the file in
// effect, as last started or reloaded, with the literal values of
// secret-looking attributes redacted. Values from env() are left as the
// env() call, which shows no secret.
func (s *Server) ConfigSource(context.Context) (admin.ConfigSource, error) {
	s.reload.mu.Lock()
	cfg := s.reload.applied
	s.reload.mu.Unlock()
	if cfg == nil || cfg.Path == "" {
		return admin.ConfigSource{}, admin.ErrNoConfigFile
	}
	out := admin.ConfigSource{Path: cfg.Path}
	if abs, err := filepath.Abs(cfg.Path); err == nil {
		out.Path = abs
	}
	f := cfg.Files[cfg.Path]
	if f == nil {
		return out, nil
	}
	src, n := redactSecrets(f)
	out.Source, out.Redacted = string(src), n
	return out, nil
}

// redactSecrets returns f's bytes with every secret-looking attribute's
// literal value (a string with no interpolation) replaced by "<redacted>",
// and how many it replaced.
func redactSecrets(f *hcl.File) ([]byte, int) {
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return f.Bytes, 0
	}
	var spans []hcl.Range
	// value notes e's range when name is secret-looking and e a literal.
	value := func(name string, e hclsyntax.Expression) {
		if t, ok := e.(*hclsyntax.TemplateExpr); ok && t.IsStringLiteral() && secretName.MatchString(name) {
			spans = append(spans, t.SrcRange)
		}
	}
	var walk func(b *hclsyntax.Body)
	walk = func(b *hclsyntax.Body) {
		for name, a := range b.Attributes {
			value(name, a.Expr)
			if obj, ok := a.Expr.(*hclsyntax.ObjectConsExpr); ok {
				for _, item := range obj.Items {
					value(objectKey(item.KeyExpr), item.ValueExpr)
				}
			}
		}
		for _, blk := range b.Blocks {
			walk(blk.Body)
		}
	}
	walk(body)
	if len(spans) == 0 {
		return f.Bytes, 0
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].Start.Byte < spans[j].Start.Byte })
	out := make([]byte, 0, len(f.Bytes))
	at := 0
	for _, r := range spans {
		out = append(out, f.Bytes[at:r.Start.Byte]...)
		out = append(out, redacted...)
		at = r.End.Byte
	}
	return append(out, f.Bytes[at:]...), len(spans)
}

// objectKey is the name of an object item's key: a bare word or a literal
// string; "" for a computed key.
func objectKey(e hclsyntax.Expression) string {
	if k, ok := e.(*hclsyntax.ObjectConsKeyExpr); ok {
		if kw := hcl.ExprAsKeyword(k.Wrapped); kw != "" {
			return kw
		}
		e = k.Wrapped
	}
	if t, ok := e.(*hclsyntax.TemplateExpr); ok && t.IsStringLiteral() {
		if v, diags := t.Value(nil); !diags.HasErrors() && v.Type() == cty.String {
			return v.AsString()
		}
	}
	return ""
}

// latencyInfo sums up a consumer's latency histogram; nil when nothing was
// recorded (metrics off, or no call yet).
func latencyInfo(l dispatch.Latency) *admin.LatencyInfo {
	if l.Count == 0 {
		return nil
	}
	ms := func(d float64) float64 { return d / 1e6 }
	out := &admin.LatencyInfo{Count: l.Count, MeanMS: ms(float64(l.Sum) / float64(l.Count))}
	quantile := func(q float64) float64 {
		rank := uint64(q*float64(l.Count) + 0.5)
		if rank < 1 {
			rank = 1
		}
		var seen uint64
		for i, n := range l.Counts {
			seen += n
			if seen >= rank {
				if i < len(l.Bounds) {
					return ms(float64(l.Bounds[i]))
				}
				break
			}
		}
		// Past the last bound: the mean is the best the histogram knows.
		return max(out.MeanMS, ms(float64(l.Bounds[len(l.Bounds)-1])))
	}
	out.P50MS, out.P99MS = quantile(0.5), quantile(0.99)
	return out
}
