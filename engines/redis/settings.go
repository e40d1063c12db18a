package redis

import (
	"context"
	"net/url"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/internal/settings"
)

// Settings are a redis engine block's settings:
//
//	engine "rd" {
//	  type             = "redis"
//	  url              = "rediss://redis.internal:6380/0"  # redis:// or rediss://
//	  username         = env("QRUN_REDIS_USER")             # overrides the URL's
//	  password         = env("QRUN_REDIS_PASSWORD")         # overrides the URL's
//	  tls_ca           = "/etc/qrun/redis-ca.pem"           # any tls_* turns TLS on
//	  tls_cert         = "/etc/qrun/client.pem"
//	  tls_key          = "/etc/qrun/client-key.pem"
//	  tls_server_name  = "redis.internal"
//	  key_prefix       = "qrun:"                           # default
//	  pool_size        = 20                                # connections; default 10 per CPU
//	  dedup_window     = "5m"
//	  max_message_size = "64MiB"
//	  block_interval   = "200ms"                           # longest single blocking read
//	}
//
// Zero fields take the engine's defaults (see Options).
type Settings struct {
	Options
}

// Type is the redis engine type. Its queues live in the Redis server, for
// every process that reaches it, so it is Shared.
func Type() enginetype.Type {
	t := enginetype.Define("redis", DecodeSettings)
	t.Shared = true
	return t
}

var redisSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "url", Required: true},
	{Name: "username"},
	{Name: "password"},
	{Name: "tls_ca"},
	{Name: "tls_cert"},
	{Name: "tls_key"},
	{Name: "tls_server_name"},
	{Name: "key_prefix"},
	{Name: "pool_size"},
	{Name: "dedup_window"},
	{Name: "max_message_size"},
	{Name: "block_interval"},
}}

// DecodeSettings decodes and validates a redis engine block (minus its
// type attribute), reporting each problem at its source range.
func DecodeSettings(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics) {
	d := settings.Decoder{Ctx: ctx}
	c := d.Content(body, redisSchema)
	var s Settings
	if a := c.Attributes["url"]; a != nil {
		reported := len(d.Diags)
		s.URL = d.String(a, "")
		switch u, err := url.Parse(s.URL); {
		case len(d.Diags) > reported:
		case s.URL == "":
			d.Errorf(a, "Empty url", `The redis engine needs a server, e.g. url = "redis://localhost:6379/0" or url = env("QRUN_REDIS_URL").`)
		case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "":
			d.Errorf(a, "Invalid url", `url must be redis://host:port/db or rediss://host:port/db (TLS), not %q.`, s.URL)
		}
	}
	s.Username = d.String(c.Attributes["username"], "")
	s.Password = d.String(c.Attributes["password"], "")
	s.TLSCA = d.String(c.Attributes["tls_ca"], "")
	s.TLSCert = d.String(c.Attributes["tls_cert"], "")
	s.TLSKey = d.String(c.Attributes["tls_key"], "")
	s.TLSServerName = d.String(c.Attributes["tls_server_name"], "")
	if (s.TLSCert == "") != (s.TLSKey == "") {
		a := c.Attributes["tls_cert"]
		if a == nil {
			a = c.Attributes["tls_key"]
		}
		d.Errorf(a, "Incomplete client certificate", "tls_cert and tls_key go together: give both or neither.")
	}
	if a := c.Attributes["key_prefix"]; a != nil {
		if p, ok := d.StringValue(a); ok {
			if p == "" {
				d.Errorf(a, "Empty key_prefix", `key_prefix keeps qrun's keys apart from others on the server; leave it out for the default %q.`, DefaultKeyPrefix)
			}
			s.KeyPrefix = p
		}
	}
	s.PoolSize = d.Int(c.Attributes["pool_size"], 0, 1, 10000)
	s.DedupWindow = d.Duration(c.Attributes["dedup_window"], 0, time.Millisecond, 365*24*time.Hour)
	s.MaxMessageSize = d.Size(c.Attributes["max_message_size"], 0, 1, 512<<20)
	s.BlockInterval = d.Duration(c.Attributes["block_interval"], 0, time.Millisecond, time.Minute)
	return s, d.Diags
}

// Open implements enginetype.Settings.
func (s Settings) Open(ctx context.Context, o enginetype.OpenOptions) (engines.Engine, error) {
	opts := s.Options
	opts.Logger = o.Logger
	opts.Events = o.Events // qrun_engine_errors_total, qrun_engine_reconnects_total
	opts.Producer = o.Producer
	return enginetype.Opened(New(ctx, opts))
}

// Capabilities implements enginetype.Capable.
func (s Settings) Capabilities() engines.Capabilities { return capabilities(s.Options) }

// capabilities are those of a redis engine with options o. Durable
// assumes the server configuration docs/redis.md requires (appendonly
// yes, appendfsync always); New warns when the server says otherwise.
// Priority, ordering and fan-out are absent: a stream is one FIFO log.
func capabilities(o Options) engines.Capabilities {
	size := o.MaxMessageSize
	if size == 0 {
		size = DefaultMaxMessageSize
	}
	return engines.Capabilities{
		Durable:        true,
		Visibility:     true,
		Delay:          true,
		DeadLetter:     true,
		TTL:            true,
		Dedup:          true,
		CrossProcess:   true,
		MultiNode:      true,
		MaxMessageSize: size,
	}
}
