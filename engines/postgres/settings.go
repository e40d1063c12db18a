package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/internal/settings"
)

// Settings are a postgres engine block's settings:
//
//	engine "pg" {
//	  type              = "postgres"
//	  dsn               = env("QRUN_PG_DSN")
//	  schema            = "qrun"      # default
//	  max_conns         = 10          # pool size
//	  statement_timeout = "30s"       # 0 or absent: the server's default
//	  migrate           = true        # migrate the schema at start
//	  poll_interval     = "1s"        # polling fallback of LISTEN/NOTIFY
//	  dedup_window      = "5m"
//	  max_message_size  = "64MiB"     # bytes or a size string
//	  topic "events" {
//	    subscription "events_billing" {}
//	    subscription "events_audit" {}
//	  }
//	}
//
// Zero fields take the engine's defaults (see Options).
type Settings struct {
	Options
}

// Type is the postgres engine type. Its queues live in the database, for
// every process that reaches it, so it is Shared.
func Type() enginetype.Type {
	t := enginetype.Define("postgres", DecodeSettings)
	t.Shared = true
	return t
}

var (
	postgresSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "dsn", Required: true},
			{Name: "schema"},
			{Name: "max_conns"},
			{Name: "statement_timeout"},
			{Name: "migrate"},
			{Name: "poll_interval"},
			{Name: "dedup_window"},
			{Name: "max_message_size"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "topic", LabelNames: []string{"name"}}},
	}
	topicSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "subscription", LabelNames: []string{"name"}}}}
)

// DecodeSettings decodes and validates a postgres engine block (minus its
// type attribute). `qrun migrate` uses it for the DSN and schema without
// opening an engine.
func DecodeSettings(body hcl.Body, ctx *hcl.EvalContext) (Settings, hcl.Diagnostics) {
	d := settings.Decoder{Ctx: ctx}
	c := d.Content(body, postgresSchema)
	var s Settings
	if a := c.Attributes["dsn"]; a != nil {
		// Empty or null (e.g. an unset env() with a null default), unless
		// the value was wrong in some other way, already reported.
		reported := len(d.Diags)
		if s.DSN = d.String(a, ""); s.DSN == "" && len(d.Diags) == reported {
			d.Errorf(a, "Empty dsn", `The postgres engine needs a connection string, e.g. dsn = "postgres://user@host/db" or dsn = env("QRUN_PG_DSN").`)
		}
	}
	if a := c.Attributes["schema"]; a != nil {
		if schema, ok := d.StringValue(a); ok {
			if n := len(schema); n == 0 || n > 58 {
				d.Errorf(a, "Invalid schema", "schema must be 1 to 58 bytes long, not %d.", n)
			}
			s.Schema = schema
		}
	}
	s.MaxConns = int32(d.Int(c.Attributes["max_conns"], 0, 2, 10000))
	s.MaxMessageSize = d.Size(c.Attributes["max_message_size"], 0, 1, 512<<20)
	s.StatementTimeout = duration(&d, c.Attributes["statement_timeout"], 0)
	s.PollInterval = duration(&d, c.Attributes["poll_interval"], time.Millisecond)
	s.DedupWindow = duration(&d, c.Attributes["dedup_window"], time.Millisecond)
	s.NoMigrate = !d.Bool(c.Attributes["migrate"], true)
	s.Options.Topics = decodeTopics(&d, c.Blocks)
	return s, d.Diags
}

// duration decodes an optional duration that is zero (the engine's
// default) or at least least.
func duration(d *settings.Decoder, a *hcl.Attribute, least time.Duration) time.Duration {
	v, ok := d.DurationValue(a)
	if !ok {
		return 0
	}
	if v < 0 || v > 0 && v < least {
		d.Errorf(a, "Invalid "+a.Name, "%s must be 0 (the default) or at least %v, not %v.", a.Name, max(least, time.Nanosecond), v)
		return 0
	}
	return v
}

// decodeTopics decodes topic blocks: each names a topic and lists its
// subscriptions, which are queues of their own.
func decodeTopics(d *settings.Decoder, blocks hcl.Blocks) []Topic {
	var out []Topic
	topics := map[string]hcl.Range{}
	type subscription struct {
		topic string
		block *hcl.Block
	}
	var subs []subscription
	for _, b := range blocks {
		name := b.Labels[0]
		if prev, dup := topics[name]; dup {
			d.Diags = append(d.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate topic",
				Detail: fmt.Sprintf("Topic %q is already declared at %s.", name, prev), Subject: b.DefRange.Ptr()})
			continue
		}
		topics[name] = b.DefRange
		t := Topic{Name: name, Subscriptions: []string{}}
		content := d.Content(b.Body, topicSchema)
		seen := map[string]bool{}
		for _, sb := range content.Blocks {
			d.Content(sb.Body, &hcl.BodySchema{})
			sub := sb.Labels[0]
			switch {
			case sub == name:
				d.Diags = append(d.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Topic subscribes to itself",
					Detail: fmt.Sprintf("Subscription %q of topic %q names the topic itself; a subscription is a queue of its own.", sub, name), Subject: sb.DefRange.Ptr()})
			case seen[sub]:
				d.Diags = append(d.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate subscription",
					Detail: fmt.Sprintf("Topic %q lists subscription %q twice.", name, sub), Subject: sb.DefRange.Ptr()})
			default:
				seen[sub] = true
				t.Subscriptions = append(t.Subscriptions, sub)
				subs = append(subs, subscription{name, sb})
			}
		}
		out = append(out, t)
	}
	for _, sub := range subs {
		name := sub.block.Labels[0]
		if r, clash := topics[name]; clash {
			d.Diags = append(d.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Subscription is a topic",
				Detail: fmt.Sprintf("Subscription %q of topic %q is itself a topic (declared at %s); subscriptions are queues.", name, sub.topic, r), Subject: sub.block.DefRange.Ptr()})
		}
	}
	return out
}

// Topics implements enginetype.Topics.
func (s Settings) Topics() []string {
	names := make([]string, len(s.Options.Topics))
	for i, t := range s.Options.Topics {
		names[i] = t.Name
	}
	return names
}

// Open implements enginetype.Settings.
func (s Settings) Open(ctx context.Context, o enginetype.OpenOptions) (engines.Engine, error) {
	opts := s.Options
	opts.Logger = o.Logger
	opts.Producer = o.Producer
	opts.Events = o.Events // qrun_engine_reconnects_total, qrun_engine_errors_total{op="listen"}
	return enginetype.Opened(New(ctx, opts))
}

// Capabilities implements enginetype.Capable. MaxMessageSize is zero when
// the settings leave it to the default, which New fills in.
func (s Settings) Capabilities() engines.Capabilities { return capabilities(s.Options) }

// capabilities are those of a postgres engine with options o: its settings
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
		FanOut:         true,
		CrossProcess:   true,
		MultiNode:      true,
		KV:             true,
		Transactions:   true,
		MaxMessageSize: o.MaxMessageSize,
	}
}
