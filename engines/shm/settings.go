package shm

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/engines/shm/ring"
	"github.com/qrun-dev/qrun/internal/settings"
)

// Settings are an shm engine block's settings. Every queue of the engine
// gets a ring of this shape; an existing segment must have the same.
//
//	engine "fast" {
//	  type          = "shm"
//	  slot_size     = "1KiB"      # bytes or a size string, the largest message record
//	  capacity      = 4096        # slots per queue, a power of two
//	  mode          = "blocking"  # or "cyclic": overwrite the oldest when full
//	  prefix        = "qrun."     # segment name = prefix + queue name, in /dev/shm
//	  send_timeout  = "10s"       # longest a send waits on a full blocking ring
//	  stall_timeout = "1s"        # how long a dead process's half-written slot blocks readers
//	}
type Settings struct {
	Options
}

// Type is the shm engine type. Its rings are shared with other processes,
// so it is Shared; they wait on Linux futexes, so it is available on Linux
// only.
func Type() enginetype.Type {
	t := enginetype.Define("shm", DecodeSettings)
	t.Shared = true
	t.Platforms = []string{"linux"}
	return t
}

var shmSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "slot_size"},
	{Name: "capacity"},
	{Name: "mode"},
	{Name: "prefix"},
	{Name: "send_timeout"},
	{Name: "stall_timeout"},
}}

// DecodeSettings decodes and validates an shm engine block (minus its type
// attribute).
func DecodeSettings(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics) {
	d := settings.Decoder{Ctx: ctx}
	c := d.Content(body, shmSchema)
	if d.Diags.HasErrors() {
		return Settings{}, d.Diags
	}
	attr := c.Attributes
	var o Options
	if a := attr["slot_size"]; a != nil {
		if n, ok := d.SizeValue(a); ok {
			if o.SlotSize = n; n < 1 || n > ring.MaxSlotSize {
				d.Errorf(a, "Invalid slot_size", "slot_size is the largest message record in bytes: 1 to %d, not %d.", ring.MaxSlotSize, n)
			}
		}
	}
	if a := attr["capacity"]; a != nil {
		if n, ok := d.IntValue(a); ok {
			if o.Capacity = n; n < 2 || n > ring.MaxCapacity || n&(n-1) != 0 {
				d.Errorf(a, "Invalid capacity", "capacity is the number of slots per queue, a power of two from 2 to %d, not %d.", ring.MaxCapacity, n)
			}
		}
	}
	if a := attr["mode"]; a != nil {
		if s, ok := d.StringValue(a); ok {
			m, err := ring.ParseMode(s)
			if err != nil {
				d.Errorf(a, "Invalid mode", "mode is \"blocking\" (a producer waits for space, up to send_timeout) or \"cyclic\" (the oldest message is overwritten), not %q.", s)
			}
			o.Mode = m
		}
	}
	if a := attr["prefix"]; a != nil {
		if s, ok := d.StringValue(a); ok {
			if o.Prefix = s; s == "" || ring.ValidateName(s+"q") != nil {
				d.Errorf(a, "Invalid prefix", "prefix starts every segment file name under /dev/shm: it cannot be empty or contain '/' or NUL (%q).", s)
			}
		}
	}
	for _, p := range []struct {
		name string
		dst  *time.Duration
	}{{"send_timeout", &o.SendTimeout}, {"stall_timeout", &o.StallTimeout}} {
		a := attr[p.name]
		if v, ok := d.DurationValue(a); ok && v <= 0 {
			d.Errorf(a, "Invalid "+p.name, "%s must be a positive duration such as \"500ms\" or \"10s\", not %v.", p.name, v)
		} else {
			*p.dst = v
		}
	}
	if !d.Diags.HasErrors() {
		g := ring.Geometry{SlotSize: o.SlotSize, Capacity: o.Capacity, Mode: o.Mode}
		if g.SlotSize == 0 {
			g.SlotSize = DefaultSlotSize
		}
		if g.Capacity == 0 {
			g.Capacity = DefaultCapacity
		}
		if err := g.Validate(); err != nil {
			r := body.MissingItemRange()
			if a := attr["capacity"]; a != nil {
				r = a.Expr.Range()
			}
			d.Diags = append(d.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Ring too large", Detail: err.Error(), Subject: &r})
		}
	}
	return Settings{o}, d.Diags
}

// CheckQueueName implements enginetype.QueueNamer: the segment file is
// prefix + name in /dev/shm, at most NAME_MAX bytes.
func (s Settings) CheckQueueName(name string) error {
	prefix := s.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if n := len(prefix) + len(name); n > ring.NameMax {
		return fmt.Errorf("the segment file name %q is %d bytes, more than the %d the kernel allows", prefix+name, n, ring.NameMax)
	}
	return nil
}

// Open implements enginetype.Settings.
func (s Settings) Open(_ context.Context, o enginetype.OpenOptions) (engines.Engine, error) {
	opts := s.Options
	opts.Logger = o.Logger
	return enginetype.Opened(New(opts))
}

// Capabilities implements enginetype.Capable. MaxMessageSize is zero when
// the settings leave the slot size to the default, which New fills in.
func (s Settings) Capabilities() engines.Capabilities { return capabilities(s.Options) }

// capabilities are those of an shm engine with options o: its settings
// report them at validate and the engine itself once open.
func capabilities(o Options) engines.Capabilities {
	return engines.Capabilities{
		Visibility:     true,
		Delay:          true,
		DeadLetter:     true,
		TTL:            true,
		CrossProcess:   true,
		MaxMessageSize: o.SlotSize,
	}
}
