package nats

import (
	"context"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/internal/settings"
)

// Settings are a nats engine block's settings:
//
//	engine "js" {
//	  type             = "nats"
//	  urls             = ["nats://n1:4222", "nats://n2:4222"]  # or url = "..."
//	  user             = env("QRUN_NATS_USER")       # with password
//	  password         = env("QRUN_NATS_PASSWORD")
//	  token            = env("QRUN_NATS_TOKEN")      # or a token
//	  creds            = "/etc/qrun/nats.creds"      # or a credentials file
//	  tls_ca           = "/etc/qrun/ca.pem"          # verify the server
//	  tls_cert         = "/etc/qrun/client.pem"      # client certificate,
//	  tls_key          = "/etc/qrun/client-key.pem"  # with its key
//	  prefix           = "qrun_"    # stream and bucket names; default
//	  replicas         = 3          # stream replicas; default 1
//	  storage          = "file"     # or "memory"; default file
//	  dedup_window     = "2m"       # Nats-Msg-Id duplicate window
//	  ack_margin       = "2s"       # server ack wait beyond the visibility timeout
//	  max_ack_pending  = 20000      # leases a queue may have outstanding
//	  max_message_size = "1MiB"     # at most the server's max_payload
//	}
//
// Zero fields take the engine's defaults (see Options).
type Settings struct {
	Options
}

// Type is the nats engine type. Its queues live on the NATS server for
// every process and machine that reaches it, so it is Shared.
func Type() enginetype.Type {
	t := enginetype.Define("nats", DecodeSettings)
	t.Shared = true
	return t
}

var natsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "url"}, {Name: "urls"},
	{Name: "user"}, {Name: "password"}, {Name: "token"}, {Name: "creds"},
	{Name: "tls_ca"}, {Name: "tls_cert"}, {Name: "tls_key"},
	{Name: "prefix"}, {Name: "replicas"}, {Name: "storage"},
	{Name: "dedup_window"}, {Name: "ack_margin"}, {Name: "max_ack_wait"}, {Name: "max_ack_pending"},
	{Name: "max_message_size"},
}}

// DecodeSettings decodes and validates a nats engine block (minus its type
// attribute), reporting each problem at its attribute.
func DecodeSettings(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics) {
	d := settings.Decoder{Ctx: ctx}
	c := d.Content(body, natsSchema)
	var s Settings
	url, urls := c.Attributes["url"], c.Attributes["urls"]
	switch {
	case url != nil && urls != nil:
		d.Errorf(urls, "Both url and urls", "Set url or urls, not both.")
	case url != nil:
		if u := d.String(url, ""); u != "" {
			s.URLs = []string{u}
		}
	case urls != nil:
		var list []string
		v, ok, diags := settings.Value(urls, ctx)
		d.Diags = append(d.Diags, diags...)
		if ok && (v.Type().IsListType() || v.Type().IsTupleType()) {
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				if e.IsNull() || !e.Type().Equals(cty.String) || e.AsString() == "" {
					d.Errorf(urls, "Invalid urls", "urls must be a list of non-empty strings.")
					list = nil
					break
				}
				list = append(list, e.AsString())
			}
		} else if !diags.HasErrors() {
			d.Errorf(urls, "Invalid urls", "urls must be a list of strings, e.g. [\"nats://n1:4222\"].")
		}
		s.URLs = list
	}
	s.User = d.String(c.Attributes["user"], "")
	s.Password = d.String(c.Attributes["password"], "")
	s.Token = d.String(c.Attributes["token"], "")
	s.CredsFile = d.String(c.Attributes["creds"], "")
	if a := c.Attributes["password"]; a != nil && s.User == "" && s.Password != "" {
		d.Errorf(a, "Password without user", "password needs user.")
	}
	if a := c.Attributes["token"]; a != nil && s.Token != "" && (s.User != "" || s.CredsFile != "") {
		d.Errorf(a, "More than one credential", "Use one of user/password, token or creds.")
	}
	s.TLSCA = d.String(c.Attributes["tls_ca"], "")
	s.TLSCert = d.String(c.Attributes["tls_cert"], "")
	s.TLSKey = d.String(c.Attributes["tls_key"], "")
	if a := c.Attributes["tls_cert"]; a != nil && (s.TLSCert == "") != (s.TLSKey == "") {
		d.Errorf(a, "Client certificate without key", "tls_cert and tls_key go together.")
	} else if a := c.Attributes["tls_key"]; a != nil && (s.TLSCert == "") != (s.TLSKey == "") {
		d.Errorf(a, "Client key without certificate", "tls_cert and tls_key go together.")
	}
	if a := c.Attributes["prefix"]; a != nil {
		if p, ok := d.StringValue(a); ok {
			if err := checkPrefix(p); err != nil {
				d.Errorf(a, "Invalid prefix", "%v.", err)
			}
			s.Prefix = p
		}
	}
	s.Replicas = d.Int(c.Attributes["replicas"], 0, 1, 5)
	s.Memory = d.OneOf(c.Attributes["storage"], "file", "file", "memory") == "memory"
	s.DedupWindow = d.Duration(c.Attributes["dedup_window"], 0, time.Second, 24*time.Hour)
	s.AckMargin = d.Duration(c.Attributes["ack_margin"], 0, 100*time.Millisecond, time.Hour)
	s.MaxAckWait = d.Duration(c.Attributes["max_ack_wait"], 0, time.Second, 24*time.Hour)
	s.MaxAckPending = d.Int(c.Attributes["max_ack_pending"], 0, 1, 1<<24)
	s.MaxMessageSize = d.Size(c.Attributes["max_message_size"], 0, 1, 64<<20)
	return s, d.Diags
}

// Open implements enginetype.Settings.
func (s Settings) Open(ctx context.Context, o enginetype.OpenOptions) (engines.Engine, error) {
	opts := s.Options
	opts.Logger = o.Logger
	opts.Events = o.Events // qrun_engine_reconnects_total, qrun_engine_errors_total{op="fetch"}
	opts.Producer = o.Producer
	return enginetype.Opened(New(ctx, opts))
}

// CheckQueueName implements enginetype.QueueNamer: a queue name becomes a
// stream name and a subject token.
func (s Settings) CheckQueueName(name string) error { return checkName(name) }

// Capabilities implements enginetype.Capable.
func (s Settings) Capabilities() engines.Capabilities { return capabilities(s.Options) }

// capabilities are those of a nats engine with options o: its settings
// report them at validate and the engine itself once open.
func capabilities(o Options) engines.Capabilities {
	return engines.Capabilities{
		Durable:        !o.Memory,
		Visibility:     true,
		Delay:          true,
		DeadLetter:     true,
		Dedup:          true,
		CrossProcess:   true,
		MultiNode:      true,
		MaxMessageSize: o.MaxMessageSize,
	}
}
