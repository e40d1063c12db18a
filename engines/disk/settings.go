package disk

import (
	"context"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/internal/settings"
)

// Settings are a disk engine block's settings:
//
//	engine "local" {
//	  type             = "disk"
//	  sync             = "always"  # or "batch"
//	  max_message_size = "16MiB"   # bytes or a size string; 0: the default
//	  dedup_window     = "5m"
//	  lock_timeout     = "1s"      # longest wait for the data file's lock
//	}
//
// Its files go under the runtime's data_dir/<engine name>.
type Settings struct {
	Options
}

// Type is the disk engine type.
func Type() enginetype.Type { return enginetype.Define("disk", DecodeSettings) }

// diskSchema lists the disk engine's settings; anything else in its block
// is an error.
var diskSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "sync"},
	{Name: "max_message_size"},
	{Name: "dedup_window"},
	{Name: "lock_timeout"},
}}

// DecodeSettings decodes and validates a disk engine block (minus its type
// attribute).
func DecodeSettings(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics) {
	d := settings.Decoder{Ctx: ctx}
	c := d.Content(body, diskSchema)
	var s Settings
	if mode, ok := d.StringValue(c.Attributes["sync"]); ok {
		if m, err := ParseSyncMode(mode); err != nil {
			d.Errorf(c.Attributes["sync"], "Invalid sync mode", "sync = %q: use \"always\" (leases and settlements durable before they return) or \"batch\" (they reach the disk with the next group commit; enqueues are durable before returning in both).", mode)
		} else {
			s.Sync = m
		}
	}
	if a := c.Attributes["max_message_size"]; a != nil {
		if n, ok := d.SizeValue(a); ok && n < 0 {
			d.Errorf(a, "Invalid max_message_size", "max_message_size must be positive (bytes) or 0 for the default (%d), not %d.", DefaultMaxMessageSize, n)
		} else {
			s.MaxMessageSize = n
		}
	}
	for _, p := range []struct {
		name string
		dst  *time.Duration
	}{{"dedup_window", &s.DedupWindow}, {"lock_timeout", &s.LockTimeout}} {
		a := c.Attributes[p.name]
		if v, ok := d.DurationValue(a); ok && v <= 0 {
			d.Errorf(a, "Invalid "+p.name, "%s must be a positive duration such as \"5m\" or \"1s\", not %v.", p.name, v)
		} else {
			*p.dst = v
		}
	}
	return s, d.Diags
}

// Open implements enginetype.Settings: the engine's files go in o.DataDir.
func (s Settings) Open(ctx context.Context, o enginetype.OpenOptions) (engines.Engine, error) {
	opts := s.Options
	opts.Dir = o.DataDir
	opts.Logger = o.Logger
	return enginetype.Opened(Open(ctx, opts))
}

// Capabilities implements enginetype.Capable. MaxMessageSize is zero when
// the settings leave it to the default, which Open fills in.
func (s Settings) Capabilities() engines.Capabilities { return capabilities(s.Options) }

// capabilities are those of a disk engine with options o: its settings
// report them at validate and the engine itself once open.
func capabilities(o Options) engines.Capabilities {
	return engines.Capabilities{
		Durable:        true,
		Visibility:     true,
		Delay:          true,
		DeadLetter:     true,
		Ordering:       true,
		Priority:       true,
		TTL:            true,
		Dedup:          true,
		KV:             true,
		Transactions:   true,
		MaxMessageSize: o.MaxMessageSize,
	}
}
