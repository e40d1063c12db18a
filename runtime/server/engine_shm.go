package server

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/shm"
	"github.com/qrun-dev/qrun/engines/shm/ring"
)

// shmSettings are the shm engine's HCL settings. Every queue of the engine
// gets a ring of this shape; an existing segment must have the same.
type shmSettings struct {
	SlotSize     *int    `hcl:"slot_size,optional"`
	Capacity     *int    `hcl:"capacity,optional"`
	Mode         *string `hcl:"mode,optional"`
	Prefix       *string `hcl:"prefix,optional"`
	SendTimeout  *string `hcl:"send_timeout,optional"`
	StallTimeout *string `hcl:"stall_timeout,optional"`
}

// shmType builds shm engines:
//
//	engine "fast" {
//	  type          = "shm"
//	  slot_size     = 1024        # bytes, the largest message record
//	  capacity      = 4096        # slots per queue, a power of two
//	  mode          = "blocking"  # or "cyclic": overwrite the oldest when full
//	  prefix        = "qrun."     # segment name = prefix + queue name, in /dev/shm
//	  send_timeout  = "10s"       # longest a send waits on a full blocking ring
//	  stall_timeout = "1s"        # how long a dead process's half-written slot blocks readers
//	}
func shmType() EngineType {
	decode := func(body hcl.Body, eval *hcl.EvalContext) (shm.Options, hcl.Diagnostics) {
		var s shmSettings
		diags := gohcl.DecodeBody(body, eval, &s)
		if diags.HasErrors() {
			return shm.Options{}, diags
		}
		attrs, _ := body.JustAttributes()
		bad := func(name, summary, detail string) {
			d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail}
			if a := attrs[name]; a != nil {
				d.Subject = a.Expr.Range().Ptr()
			}
			diags = diags.Append(d)
		}
		var o shm.Options
		if s.SlotSize != nil {
			o.SlotSize = *s.SlotSize
			if o.SlotSize < 1 || o.SlotSize > ring.MaxSlotSize {
				bad("slot_size", "Invalid slot_size", fmt.Sprintf("slot_size is the largest message record in bytes: 1 to %d, not %d.", ring.MaxSlotSize, o.SlotSize))
			}
		}
		if s.Capacity != nil {
			o.Capacity = *s.Capacity
			if c := o.Capacity; c < 2 || c > ring.MaxCapacity || c&(c-1) != 0 {
				bad("capacity", "Invalid capacity", fmt.Sprintf("capacity is the number of slots per queue, a power of two from 2 to %d, not %d.", ring.MaxCapacity, c))
			}
		}
		if s.Mode != nil {
			m, err := ring.ParseMode(*s.Mode)
			if err != nil {
				bad("mode", "Invalid mode", fmt.Sprintf("mode is \"blocking\" (a producer waits for space, up to send_timeout) or \"cyclic\" (the oldest message is overwritten), not %q.", *s.Mode))
			}
			o.Mode = m
		}
		if s.Prefix != nil {
			o.Prefix = *s.Prefix
			if err := ring.ValidateName(o.Prefix + "q"); err != nil || o.Prefix == "" {
				bad("prefix", "Invalid prefix", fmt.Sprintf("prefix starts every segment file name under /dev/shm: it cannot be empty or contain '/' or NUL (%q).", o.Prefix))
			}
		}
		dur := func(name string, v *string, dst *time.Duration) {
			if v == nil {
				return
			}
			d, err := time.ParseDuration(*v)
			if err != nil || d <= 0 {
				bad(name, "Invalid "+name, fmt.Sprintf("%q is not a positive duration. Use Go duration syntax such as \"500ms\" or \"10s\".", *v))
				return
			}
			*dst = d
		}
		dur("send_timeout", s.SendTimeout, &o.SendTimeout)
		dur("stall_timeout", s.StallTimeout, &o.StallTimeout)
		if !diags.HasErrors() {
			g := ring.Geometry{SlotSize: max(o.SlotSize, 0), Capacity: max(o.Capacity, 0), Mode: o.Mode}
			if g.SlotSize == 0 {
				g.SlotSize = shm.DefaultSlotSize
			}
			if g.Capacity == 0 {
				g.Capacity = shm.DefaultCapacity
			}
			if err := g.Validate(); err != nil {
				bad("capacity", "Ring too large", err.Error())
			}
		}
		return o, diags
	}
	t := decodedType(decode, func(_ context.Context, opts shm.Options, o EngineOptions) (engines.Engine, error) {
		opts.Logger = o.Logger
		return shm.New(opts)
	})
	t.Shared = true
	// The segment file is prefix + name in /dev/shm.
	t.QueueNameRule = func(body hcl.Body, eval *hcl.EvalContext) func(string) error {
		o, _ := decode(body, eval)
		if o.Prefix == "" {
			o.Prefix = shm.DefaultPrefix
		}
		return func(name string) error { return prefixedNameFits("segment file name", o.Prefix, name) }
	}
	return t
}
