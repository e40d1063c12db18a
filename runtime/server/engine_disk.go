package server

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
)

// diskSchema lists the disk engine's HCL settings; anything else in its
// block is an error.
var diskSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "sync"},
	{Name: "max_message_size"},
	{Name: "dedup_window"},
	{Name: "lock_timeout"},
}}

// diskType builds the embedded durable engine; its files go under
// DataDir (the runtime's data_dir/<engine name>).
func diskType() EngineType {
	decode := func(body hcl.Body, eval *hcl.EvalContext) (disk.Options, hcl.Diagnostics) {
		var opts disk.Options
		content, diags := body.Content(diskSchema)
		if a := content.Attributes["sync"]; a != nil {
			var s string
			if d := gohcl.DecodeExpression(a.Expr, eval, &s); d.HasErrors() {
				diags = append(diags, d...)
			} else if m, err := disk.ParseSyncMode(s); err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid sync mode", Subject: a.Expr.Range().Ptr(),
					Detail: fmt.Sprintf("sync = %q: use \"always\" (leases and settlements durable before they return) or \"batch\" (they reach the disk with the next group commit; enqueues are durable before returning in both).", s)})
			} else {
				opts.Sync = m
			}
		}
		if a := content.Attributes["max_message_size"]; a != nil {
			var n int
			if d := gohcl.DecodeExpression(a.Expr, eval, &n); d.HasErrors() {
				diags = append(diags, d...)
			} else if n < 0 {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid max_message_size", Subject: a.Expr.Range().Ptr(),
					Detail: fmt.Sprintf("max_message_size must be positive (bytes) or 0 for the default (%d).", disk.DefaultMaxMessageSize)})
			} else {
				opts.MaxMessageSize = n
			}
		}
		for name, dst := range map[string]*time.Duration{"dedup_window": &opts.DedupWindow, "lock_timeout": &opts.LockTimeout} {
			a := content.Attributes[name]
			if a == nil {
				continue
			}
			var s string
			if d := gohcl.DecodeExpression(a.Expr, eval, &s); d.HasErrors() {
				diags = append(diags, d...)
				continue
			}
			v, err := time.ParseDuration(s)
			if err != nil || v <= 0 {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid duration", Subject: a.Expr.Range().Ptr(),
					Detail: fmt.Sprintf("%s = %q: use a positive Go duration such as \"5m\" or \"1s\".", name, s)})
				continue
			}
			*dst = v
		}
		return opts, diags
	}
	return decodedType(decode, func(ctx context.Context, opts disk.Options, o EngineOptions) (engines.Engine, error) {
		opts.Dir = o.DataDir
		opts.Logger = o.Logger
		return disk.Open(ctx, opts)
	})
}
