package memory

import (
	"context"
	"math"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/internal/settings"
)

// Settings are a memory engine block's settings:
//
//	engine "mem" {
//	  type             = "memory"
//	  max_message_size = "1MiB"  # bytes or a size string; 0 or absent: no limit
//	}
type Settings struct {
	Options
}

// Type is the memory engine type: queues inside the qrun process, gone
// when it exits.
func Type() enginetype.Type { return enginetype.Define("memory", DecodeSettings) }

var memorySchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "max_message_size"}}}

// DecodeSettings decodes and validates a memory engine block (minus its
// type attribute).
func DecodeSettings(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics) {
	d := settings.Decoder{Ctx: ctx}
	c := d.Content(body, memorySchema)
	var s Settings
	s.MaxMessageSize = d.Size(c.Attributes["max_message_size"], 0, 0, math.MaxInt)
	return s, d.Diags
}

// Open implements enginetype.Settings.
func (s Settings) Open(context.Context, enginetype.OpenOptions) (engines.Engine, error) {
	return New(s.Options), nil
}

// Capabilities implements enginetype.Capable.
func (s Settings) Capabilities() engines.Capabilities { return capabilities(s.Options) }

// capabilities are those of a memory engine with options o: its settings
// report them at validate and the engine itself once open.
func capabilities(o Options) engines.Capabilities {
	return engines.Capabilities{
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
