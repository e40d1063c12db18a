package config

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"strconv"
	"strings"
	"time"
)

// Throttle is a consumer's flow control (docs/schedules.md): a rate limit,
// for the whole consumer or per value of a message attribute, and a cap on
// deliveries in flight per value of an attribute. A delivery over a limit
// waits, its lease extended; it is not a failure.
type Throttle struct {
	// Rate is the deliveries allowed per second; zero means no rate limit.
	Rate float64
	// RateText is rate_limit as written, e.g. "100/s", for listings.
	RateText string
	// Burst is how many deliveries may start at once after an idle
	// spell. Default: the rate per second rounded up, at least 1.
	Burst int
	// RateKey, when set, makes Rate a limit per value of this message
	// attribute (a message without it shares the limit of the empty value).
	RateKey string
	// RateScope is "node" (the default with a Rate: each process holds
	// its own limit; empty without a Rate) or "global" (one limit shared by every process consuming
	// through the engine, which must keep it: postgres).
	RateScope string
	// MaxInFlightPerKey caps deliveries in flight per value of
	// ConcurrencyKey; zero means no cap.
	MaxInFlightPerKey int
	// ConcurrencyKey is the attribute MaxInFlightPerKey counts by.
	ConcurrencyKey string
	// ConcurrencyScope is "node" (the default with a MaxInFlightPerKey:
	// the cap holds per process; empty without one) or "global" (the cap
	// holds across every process consuming through the engine, which must
	// keep shared slots: postgres).
	ConcurrencyScope string
}

// Rate limit scopes.
const (
	RateScopeNode   = "node"
	RateScopeGlobal = "global"
)

// Enabled reports whether any limit is set.
func (t Throttle) Enabled() bool { return t.Rate > 0 || t.MaxInFlightPerKey > 0 }

// ParseRate reads a rate such as "100/s", "5/m", "2/h" or "10/500ms" into
// events per second.
func ParseRate(s string) (float64, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("rate %q is not N/unit (e.g. \"100/s\")", s)
	}
	count, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
	if err != nil || count <= 0 || count > 1e9 {
		return 0, fmt.Errorf("rate %q: the count must be a positive number up to 1e9", s)
	}
	per = strings.TrimSpace(per)
	var d time.Duration
	switch per {
	case "s", "sec", "second":
		d = time.Second
	case "m", "min", "minute":
		d = time.Minute
	case "h", "hour":
		d = time.Hour
	default:
		if d, err = time.ParseDuration(per); err != nil || d <= 0 {
			return 0, fmt.Errorf("rate %q: the unit must be s, m, h or a duration such as 500ms", s)
		}
	}
	return count / d.Seconds(), nil
}

func (d *decoder) throttle(rc *rawConsumer, queue string, concurrency int) Throttle {
	var t Throttle
	if a := rc.RateLimit; a != nil {
		t.RateText = d.str(a, "")
		r, err := ParseRate(t.RateText)
		if err != nil {
			d.errorf(a.Expr.Range(), "Invalid rate limit", "%s.", sentence(err.Error()))
		} else {
			t.Rate = r
		}
	}
	t.Burst = d.integer(rc.Burst, 0)
	switch {
	case rc.Burst != nil && rc.RateLimit == nil:
		d.errorf(rc.Burst.Expr.Range(), "Burst without rate limit", "burst only applies with rate_limit.")
	case rc.Burst != nil && t.Burst < 1:
		d.errorf(rc.Burst.Expr.Range(), "Invalid burst", "burst must be at least 1, not %d.", t.Burst)
	case rc.Burst == nil && t.Rate > 0:
		t.Burst = max(1, int(t.Rate+0.999999))
	}
	t.RateKey = d.str(rc.RateLimitKey, "")
	if rc.RateLimitKey != nil && (t.RateKey == "" || rc.RateLimit == nil) {
		d.errorf(rc.RateLimitKey.Expr.Range(), "Invalid rate limit key", "rate_limit_key names a message attribute and needs rate_limit.")
	}
	scope := d.oneOf(rc.RateLimitScope, RateScopeNode, "Invalid rate limit scope", []string{RateScopeNode, RateScopeGlobal})
	if rc.RateLimit != nil {
		t.RateScope = scope // empty without a rate limit, so a consumer without one compares equal to the zero Throttle
	}
	if a := rc.RateLimitScope; a != nil && rc.RateLimit == nil {
		d.errorf(a.Expr.Range(), "Scope without rate limit", "rate_limit_scope needs rate_limit.")
	} else if a != nil && scope == RateScopeGlobal {
		switch {
		case rc.RateLimitKey != nil:
			d.errorf(a.Expr.Range(), "Global per-key rate limit unsupported", "A global rate limit is one shared bucket for the consumer; per-key limits (rate_limit_key) are per node. Drop one of the two.")
		default:
			d.globalRates = append(d.globalRates, globalRate{consumer: rc.Name, queue: queue, attr: a})
		}
	}
	t.MaxInFlightPerKey = d.integer(rc.MaxInFlightPerKey, 0)
	t.ConcurrencyKey = d.str(rc.ConcurrencyKey, "")
	switch {
	case rc.MaxInFlightPerKey != nil && t.MaxInFlightPerKey < 1:
		d.errorf(rc.MaxInFlightPerKey.Expr.Range(), "Invalid per-key concurrency", "max_in_flight_per_key must be at least 1, not %d.", t.MaxInFlightPerKey)
	case rc.MaxInFlightPerKey != nil && t.ConcurrencyKey == "":
		d.errorf(rc.MaxInFlightPerKey.Expr.Range(), "Missing concurrency key", "max_in_flight_per_key needs concurrency_key, the message attribute it counts by.")
	case rc.ConcurrencyKey != nil && rc.MaxInFlightPerKey == nil:
		d.errorf(rc.ConcurrencyKey.Expr.Range(), "Concurrency key without a cap", "concurrency_key needs max_in_flight_per_key.")
	case t.MaxInFlightPerKey >= concurrency && rc.MaxInFlightPerKey != nil:
		d.warnf(rc.MaxInFlightPerKey.Expr.Range(), "Per-key cap never reached",
			"max_in_flight_per_key (%d) is not below concurrency (%d), so no key can ever reach it.", t.MaxInFlightPerKey, concurrency)
	}
	cscope := d.oneOf(rc.ConcurrencyScope, RateScopeNode, "Invalid concurrency scope", []string{RateScopeNode, RateScopeGlobal})
	if rc.MaxInFlightPerKey != nil {
		t.ConcurrencyScope = cscope
	}
	if a := rc.ConcurrencyScope; a != nil && rc.MaxInFlightPerKey == nil {
		d.errorf(a.Expr.Range(), "Scope without per-key cap", "concurrency_scope needs max_in_flight_per_key.")
	} else if a != nil && cscope == RateScopeGlobal {
		d.globalSlots = append(d.globalSlots, globalRate{consumer: rc.Name, queue: queue, attr: a})
	}
	return t
}

// globalRate is a consumer asking for rate_limit_scope = "global", checked
// against its engine by validateThrottles.
type globalRate struct {
	consumer, queue string
	attr            *hcl.Attribute
}

// validateThrottles refuses a global rate limit on an engine known not to
// be shared across machines: only such an engine keeps a shared bucket.
func (d *decoder) validateThrottles() {
	for _, g := range d.globalRates {
		q, ok := d.queueNamed(g.queue)
		if !ok {
			continue
		}
		if c, known := d.caps[q.Engine]; known && !c.MultiNode {
			d.errorf(g.attr.Expr.Range(), "Global rate limit unsupported",
				"Consumer %q asks for a rate limit global across nodes, but engine %q is not shared between machines, so there is nothing to share it with. Use the default scope, \"node\", or a postgres engine.", g.consumer, q.Engine)
		}
	}
	// A global per-key cap needs an engine that keeps shared slots
	// (engines.SlotKeeper); an engine whose facts are unknown (its block
	// did not decode) is reported there.
	for _, g := range d.globalSlots {
		q, ok := d.queueNamed(g.queue)
		if !ok {
			continue
		}
		if keeps, known := d.slotKeepers[q.Engine]; known && !keeps {
			d.errorf(g.attr.Expr.Range(), "Global per-key cap unsupported",
				"Consumer %q asks for a per-key cap global across nodes, but engine %q keeps no slots shared between nodes. Use the default scope, \"node\", or a postgres engine.", g.consumer, q.Engine)
		}
	}
}
