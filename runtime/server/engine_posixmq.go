package server

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/posixmq"
)

// posixmqSettings are the posixmq engine's HCL attributes, kept as
// attributes so every problem is reported at its own line.
type posixmqSettings struct {
	MaxMessages *hcl.Attribute `hcl:"max_messages,optional"`
	MessageSize *hcl.Attribute `hcl:"message_size,optional"`
	OnMismatch  *hcl.Attribute `hcl:"on_mismatch,optional"`
	Format      *hcl.Attribute `hcl:"format,optional"`
	Prefix      *hcl.Attribute `hcl:"prefix,optional"`
	Mode        *hcl.Attribute `hcl:"mode,optional"`
	Spill       *hcl.Attribute `hcl:"spill,optional"`
	SendTimeout *hcl.Attribute `hcl:"send_timeout,optional"`
}

// posixmqType builds posixmq engines:
//
//	engine "ipc" {
//	  type          = "posixmq"
//	  max_messages  = 10        # queue depth; at most /proc/sys/fs/mqueue/msg_max
//	  message_size  = 8192      # bytes, envelope included
//	  on_mismatch   = "warn"    # or "error": an existing queue with other sizes
//	  format        = "framed"  # or "raw": bodies only, for C consumers
//	  prefix        = ""        # kernel name = "/" + prefix + queue name
//	  mode          = "0600"    # permissions of created queues
//	  spill         = 0         # messages held in memory when the queue is full
//	  send_timeout  = "5s"      # longest wait for room
//	}
func posixmqType() EngineType {
	t := decodedType(decodePosixmq, func(_ context.Context, opts posixmq.Options, o EngineOptions) (engines.Engine, error) {
		opts.Logger = o.Logger
		return posixmq.New(opts)
	})
	// The kernel name is "/" + prefix + name, at most NAME_MAX bytes after
	// the slash; qrun's own rule already excludes '/', NUL, "." and "..".
	t.QueueNameRule = func(body hcl.Body, eval *hcl.EvalContext) func(string) error {
		o, _ := decodePosixmq(body, eval)
		return func(name string) error { return prefixedNameFits("kernel queue name", o.Prefix, name) }
	}
	return t
}

// nameMax is NAME_MAX, the longest file or POSIX queue name in bytes.
const nameMax = 255

// prefixedNameFits reports whether prefix+name fits in nameMax bytes.
func prefixedNameFits(what, prefix, name string) error {
	if n := len(prefix) + len(name); n > nameMax {
		return fmt.Errorf("the %s %q is %d bytes, more than the %d the kernel allows", what, prefix+name, n, nameMax)
	}
	return nil
}

func decodePosixmq(body hcl.Body, eval *hcl.EvalContext) (posixmq.Options, hcl.Diagnostics) {
	var raw posixmqSettings
	diags := gohcl.DecodeBody(body, eval, &raw)
	if diags.HasErrors() {
		return posixmq.Options{}, diags
	}
	d := &attrDecoder{eval: eval}
	var o posixmq.Options
	if d.oneOf(raw.Format, "framed", "framed", "raw") == "raw" {
		o.Format = posixmq.Raw
	}
	o.MaxMessages = d.count(raw.MaxMessages, 1)
	o.MessageSize = d.count(raw.MessageSize, 1)
	o.Spill = d.count(raw.Spill, 0)
	if d.oneOf(raw.OnMismatch, "warn", "warn", "error") == "error" {
		o.OnMismatch = posixmq.Fail
	}
	if raw.Prefix != nil {
		o.Prefix = d.str(raw.Prefix)
	}
	if raw.Mode != nil {
		s := d.str(raw.Mode)
		m, err := strconv.ParseUint(s, 8, 32)
		if err != nil || m&^uint64(os.ModePerm) != 0 {
			d.errorf(raw.Mode, "Invalid mode", "mode %q must be octal permission bits such as \"0600\" or \"0660\".", s)
		}
		o.Mode = os.FileMode(m) & os.ModePerm
	}
	if raw.SendTimeout != nil {
		s := d.str(raw.SendTimeout)
		t, err := time.ParseDuration(s)
		if err != nil || t < 0 {
			d.errorf(raw.SendTimeout, "Invalid send_timeout", "%q is not a non-negative duration such as \"5s\" or \"500ms\".", s)
		}
		o.SendTimeout = t
	}
	if !d.diags.HasErrors() {
		// The engine's own checks, including this machine's limits, each
		// reported at the attribute it is about.
		attrs := map[string]*hcl.Attribute{"max_messages": raw.MaxMessages, "message_size": raw.MessageSize, "prefix": raw.Prefix}
		for _, p := range o.Check() {
			if a := attrs[p.Option]; a != nil {
				d.errorf(a, "Invalid "+p.Option, "%s.", p.Reason)
			} else {
				d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid posixmq engine", Detail: p.Error()})
			}
		}
	}
	return o, append(diags, d.diags...)
}

// attrDecoder evaluates single attributes, collecting diagnostics at their
// ranges.
type attrDecoder struct {
	eval  *hcl.EvalContext
	diags hcl.Diagnostics
}

func (d *attrDecoder) errorf(a *hcl.Attribute, summary, format string, args ...any) {
	r := a.Expr.Range()
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: &r})
}

func (d *attrDecoder) value(a *hcl.Attribute, ty cty.Type, to any) bool {
	v, diags := a.Expr.Value(d.eval)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return false
	}
	if err := gocty.FromCtyValue(v, to); err != nil {
		d.errorf(a, "Invalid "+a.Name, "%s must be a %s: %v.", a.Name, ty.FriendlyName(), err)
		return false
	}
	return true
}

func (d *attrDecoder) str(a *hcl.Attribute) string {
	var s string
	d.value(a, cty.String, &s)
	return s
}

// count decodes a whole number of at least least (0 when absent).
func (d *attrDecoder) count(a *hcl.Attribute, least int) int {
	if a == nil {
		return 0
	}
	var n int
	if !d.value(a, cty.Number, &n) {
		return 0
	}
	if n < least {
		d.errorf(a, "Invalid "+a.Name, "%s must be at least %d, not %d.", a.Name, least, n)
		return 0
	}
	return n
}

func (d *attrDecoder) oneOf(a *hcl.Attribute, def string, allowed ...string) string {
	if a == nil {
		return def
	}
	s := d.str(a)
	if !slices.Contains(allowed, s) {
		d.errorf(a, "Invalid "+a.Name, "%s must be one of %s; got %q.", a.Name, strings.Join(allowed, ", "), s)
		return def
	}
	return s
}
