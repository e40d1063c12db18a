package config

import (
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// ScheduleSpec is a schedule block (docs/schedules.md). Give Cron or
// Every.
type ScheduleSpec struct {
	Name, Queue string
	Cron        string
	Every       string // a duration such as "5m"
	TimeZone    string // default "UTC"
	Body        string
	Attributes  map[string]string
	ContentType string
	// Missed is MissedFire (the default) or MissedSkip.
	Missed string
}

// ThrottleSpec is a consumer's flow control (docs/schedules.md); the zero
// value sets no limit.
type ThrottleSpec struct {
	RateLimit         string // e.g. "100/s"
	Burst             int
	RateLimitKey      string
	MaxInFlightPerKey int
	ConcurrencyKey    string
}

func (t ThrottleSpec) write(b *hclwrite.Body) {
	setStr(b, "rate_limit", t.RateLimit)
	setInt(b, "burst", t.Burst)
	setStr(b, "rate_limit_key", t.RateLimitKey)
	setInt(b, "max_in_flight_per_key", t.MaxInFlightPerKey)
	setStr(b, "concurrency_key", t.ConcurrencyKey)
}

func writeSchedules(root *hclwrite.Body, ss []ScheduleSpec) {
	for _, s := range ss {
		b := root.AppendNewBlock("schedule", []string{s.Name}).Body()
		setStr(b, "cron", s.Cron)
		setStr(b, "every", s.Every)
		setStr(b, "time_zone", s.TimeZone)
		setStr(b, "queue", s.Queue)
		if s.Body != "" {
			b.SetAttributeValue("body", cty.StringVal(s.Body))
		}
		if len(s.Attributes) > 0 {
			b.SetAttributeValue("attributes", strMap(s.Attributes))
		}
		setStr(b, "content_type", s.ContentType)
		setStr(b, "missed", s.Missed)
	}
}
