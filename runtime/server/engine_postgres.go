package server

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
)

// postgresSettings are the postgres engine's HCL settings:
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
//	  max_message_size  = 67108864    # bytes
//	  topic "events" {
//	    subscription "events_billing" {}
//	    subscription "events_audit" {}
//	  }
//	}
type postgresSettings struct {
	DSN              string          `hcl:"dsn"`
	Schema           *string         `hcl:"schema,optional"`
	MaxConns         *int            `hcl:"max_conns,optional"`
	StatementTimeout hcl.Expression  `hcl:"statement_timeout,optional"`
	Migrate          *bool           `hcl:"migrate,optional"`
	PollInterval     hcl.Expression  `hcl:"poll_interval,optional"`
	DedupWindow      hcl.Expression  `hcl:"dedup_window,optional"`
	MaxMessageSize   *int            `hcl:"max_message_size,optional"`
	Topics           []postgresTopic `hcl:"topic,block"`
}

type postgresTopic struct {
	Name          string                 `hcl:"name,label"`
	Subscriptions []postgresSubscription `hcl:"subscription,block"`
	DeclRange     hcl.Range              `hcl:",def_range"`
}

type postgresSubscription struct {
	Name      string    `hcl:"name,label"`
	DeclRange hcl.Range `hcl:",def_range"`
}

// PostgresOptions decodes a postgres engine block into engine options
// (for `qrun migrate`, which needs the DSN and schema without opening an
// engine).
func PostgresOptions(body hcl.Body, eval *hcl.EvalContext) (postgres.Options, hcl.Diagnostics) {
	var s postgresSettings
	diags := gohcl.DecodeBody(body, eval, &s)
	if diags.HasErrors() {
		return postgres.Options{}, diags
	}
	// The attributes' ranges, so each diagnostic below points at its
	// value; topic blocks make JustAttributes unusable here.
	content, _, _ := body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "dsn"}, {Name: "schema"}, {Name: "max_conns"}, {Name: "max_message_size"},
	}})
	at := func(name string) *hcl.Range {
		if a := content.Attributes[name]; a != nil {
			return a.Expr.Range().Ptr()
		}
		r := body.MissingItemRange()
		return &r
	}
	var o postgres.Options
	o.DSN = s.DSN
	if s.DSN == "" {
		diags = diags.Append(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Empty dsn",
			Detail: `The postgres engine needs a connection string, e.g. dsn = "postgres://user@host/db" or dsn = env("QRUN_PG_DSN").`, Subject: at("dsn")})
	}
	if s.Schema != nil {
		o.Schema = *s.Schema
		if n := len(o.Schema); n == 0 || n > 58 {
			diags = diags.Append(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid schema", Detail: fmt.Sprintf("schema must be 1 to 58 bytes long, not %d.", n), Subject: at("schema")})
		}
	}
	if s.MaxConns != nil {
		if *s.MaxConns < 2 || *s.MaxConns > 10000 {
			diags = diags.Append(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid max_conns", Detail: "max_conns must be between 2 and 10000.", Subject: at("max_conns")})
		} else {
			o.MaxConns = int32(*s.MaxConns)
		}
	}
	if s.MaxMessageSize != nil {
		if *s.MaxMessageSize < 1 || *s.MaxMessageSize > 512<<20 {
			diags = diags.Append(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid max_message_size", Detail: "max_message_size must be between 1 and 536870912 bytes.", Subject: at("max_message_size")})
		} else {
			o.MaxMessageSize = *s.MaxMessageSize
		}
	}
	var d hcl.Diagnostics
	o.StatementTimeout, d = durationSetting(s.StatementTimeout, eval, "statement_timeout", 0)
	diags = append(diags, d...)
	o.PollInterval, d = durationSetting(s.PollInterval, eval, "poll_interval", time.Millisecond)
	diags = append(diags, d...)
	o.DedupWindow, d = durationSetting(s.DedupWindow, eval, "dedup_window", time.Millisecond)
	diags = append(diags, d...)
	o.NoMigrate = s.Migrate != nil && !*s.Migrate
	topics := map[string]hcl.Range{}
	for _, t := range s.Topics {
		if prev, dup := topics[t.Name]; dup {
			diags = diags.Append(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate topic",
				Detail: fmt.Sprintf("Topic %q is already declared at %s.", t.Name, prev), Subject: t.DeclRange.Ptr()})
			continue
		}
		topics[t.Name] = t.DeclRange
		pt := postgres.Topic{Name: t.Name, Subscriptions: []string{}}
		seen := map[string]bool{}
		for _, sub := range t.Subscriptions {
			switch {
			case sub.Name == t.Name:
				diags = diags.Append(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Topic subscribes to itself",
					Detail: fmt.Sprintf("Subscription %q of topic %q names the topic itself; a subscription is a queue of its own.", sub.Name, t.Name), Subject: sub.DeclRange.Ptr()})
			case seen[sub.Name]:
				diags = diags.Append(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate subscription",
					Detail: fmt.Sprintf("Topic %q lists subscription %q twice.", t.Name, sub.Name), Subject: sub.DeclRange.Ptr()})
			default:
				seen[sub.Name] = true
				pt.Subscriptions = append(pt.Subscriptions, sub.Name)
			}
		}
		o.Topics = append(o.Topics, pt)
	}
	for _, t := range s.Topics {
		for _, sub := range t.Subscriptions {
			if r, clash := topics[sub.Name]; clash {
				diags = diags.Append(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Subscription is a topic",
					Detail: fmt.Sprintf("Subscription %q of topic %q is itself a topic (declared at %s); subscriptions are queues.", sub.Name, t.Name, r), Subject: sub.DeclRange.Ptr()})
			}
		}
	}
	return o, diags
}

// durationSetting evaluates an optional duration attribute; absent or null
// leaves it zero (the engine's default).
func durationSetting(expr hcl.Expression, eval *hcl.EvalContext, name string, least time.Duration) (time.Duration, hcl.Diagnostics) {
	if expr == nil {
		return 0, nil
	}
	v, diags := expr.Value(eval)
	if diags.HasErrors() || v.IsNull() {
		return 0, diags
	}
	if !v.IsKnown() || v.Type() != cty.String {
		return 0, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid " + name,
			Detail: name + ` must be a duration string such as "500ms", "30s" or "5m".`, Subject: expr.Range().Ptr()}}
	}
	d, err := time.ParseDuration(v.AsString())
	if err != nil || d < 0 || (d > 0 && d < least) {
		detail := fmt.Sprintf("%q is not a usable duration for %s", v.AsString(), name)
		if err != nil {
			detail += " (" + err.Error() + ")"
		} else if least > 0 {
			detail += fmt.Sprintf("; it must be at least %v", least)
		}
		return 0, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid " + name,
			Detail: detail + `. Use Go duration syntax such as "500ms", "30s" or "5m".`, Subject: expr.Range().Ptr()}}
	}
	return d, nil
}

func postgresType() EngineType {
	t := decodedType(PostgresOptions, func(ctx context.Context, opts postgres.Options, o EngineOptions) (engines.Engine, error) {
		opts.Logger = o.Logger
		opts.Producer = o.Producer
		opts.Events = o.Events // qrun_engine_reconnects_total, qrun_engine_errors_total{op="listen"}
		return postgres.New(ctx, opts)
	})
	// The queues live in the database, for every process that reaches it.
	t.Shared = true
	t.Topics = func(body hcl.Body, eval *hcl.EvalContext) []string {
		o, _ := PostgresOptions(body, eval)
		names := make([]string, len(o.Topics))
		for i, topic := range o.Topics {
			names[i] = topic.Name
		}
		return names
	}
	return t
}
