package posixmq

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/internal/settings"
)

// Settings are a posixmq engine block's settings:
//
//	engine "ipc" {
//	  type          = "posixmq"
//	  max_messages  = 10        # queue depth; at most /proc/sys/fs/mqueue/msg_max
//	  message_size  = "8KiB"    # bytes or a size string, envelope included
//	  on_mismatch   = "warn"    # or "error": an existing queue with other sizes
//	  format        = "framed"  # or "raw": bodies only, for C consumers
//	  prefix        = ""        # kernel name = "/" + prefix + queue name
//	  mode          = "0600"    # permissions of created queues
//	  spill         = 0         # messages held in memory when the queue is full
//	  send_timeout  = "5s"      # longest wait for room
//	}
type Settings struct {
	Options
}

// Type is the posixmq engine type. POSIX message queues of this kind are
// Linux's, so it is available there only.
func Type() enginetype.Type {
	t := enginetype.Define("posixmq", DecodeSettings)
	t.Platforms = []string{"linux"}
	return t
}

var posixmqSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "max_messages"},
	{Name: "message_size"},
	{Name: "on_mismatch"},
	{Name: "format"},
	{Name: "prefix"},
	{Name: "mode"},
	{Name: "spill"},
	{Name: "send_timeout"},
}}

// DecodeSettings decodes and validates a posixmq engine block (minus its
// type attribute), including this machine's limits on depth and message
// size, each problem at the attribute it is about.
func DecodeSettings(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics) {
	d := settings.Decoder{Ctx: ctx}
	c := d.Content(body, posixmqSchema)
	if d.Diags.HasErrors() {
		return Settings{}, d.Diags
	}
	attr := c.Attributes
	var o Options
	if d.OneOf(attr["format"], "framed", "framed", "raw") == "raw" {
		o.Format = Raw
	}
	o.MaxMessages = d.Int(attr["max_messages"], 0, 1, math.MaxInt)
	o.MessageSize = d.Size(attr["message_size"], 0, 1, math.MaxInt)
	o.Spill = d.Int(attr["spill"], 0, 0, math.MaxInt)
	if d.OneOf(attr["on_mismatch"], "warn", "warn", "error") == "error" {
		o.OnMismatch = Fail
	}
	o.Prefix = d.String(attr["prefix"], "")
	if a := attr["mode"]; a != nil {
		if s, ok := d.StringValue(a); ok {
			m, err := strconv.ParseUint(s, 8, 32)
			if err != nil || m&^uint64(os.ModePerm) != 0 {
				d.Errorf(a, "Invalid mode", "mode %q must be octal permission bits such as \"0600\" or \"0660\".", s)
			}
			o.Mode = os.FileMode(m) & os.ModePerm
		}
	}
	if a := attr["send_timeout"]; a != nil {
		if t, ok := d.DurationValue(a); ok && t < 0 {
			d.Errorf(a, "Invalid send_timeout", "send_timeout must not be negative, not %v.", t)
		} else {
			o.SendTimeout = t
		}
	}
	if !d.Diags.HasErrors() {
		// The engine's own checks, including this machine's limits, each
		// reported at the attribute it is about.
		for _, p := range o.Check() {
			if a := attr[p.Option]; a != nil {
				d.Errorf(a, "Invalid "+p.Option, "%s.", p.Reason)
			} else {
				d.Diags = append(d.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid posixmq engine", Detail: p.Error()})
			}
		}
	}
	return Settings{o}, d.Diags
}

// nameMax is NAME_MAX, the longest POSIX queue name in bytes.
const nameMax = 255

// CheckQueueName implements enginetype.QueueNamer: the kernel name is "/"
// + prefix + name, at most NAME_MAX bytes after the slash; qrun's own rule
// already excludes '/', NUL, "." and "..".
func (s Settings) CheckQueueName(name string) error {
	if n := len(s.Prefix) + len(name); n > nameMax {
		return fmt.Errorf("the kernel queue name %q is %d bytes, more than the %d the kernel allows", s.Prefix+name, n, nameMax)
	}
	return nil
}

// Open implements enginetype.Settings.
func (s Settings) Open(_ context.Context, o enginetype.OpenOptions) (engines.Engine, error) {
	opts := s.Options
	opts.Logger = o.Logger
	return enginetype.Opened(New(opts))
}

// Capabilities implements enginetype.Capable. MaxMessageSize is zero: it
// is the kernel queue's message size, known once the engine is open.
func (s Settings) Capabilities() engines.Capabilities { return capabilities(s.Options) }

// capabilities are those of a posixmq engine with options o, but for
// MaxMessageSize: its settings report them at validate and the engine
// itself once open.
func capabilities(o Options) engines.Capabilities {
	return engines.Capabilities{
		Visibility:   true,
		Delay:        true,
		DeadLetter:   true,
		Priority:     true,
		TTL:          o.Format == Framed,
		CrossProcess: true,
	}
}
