package config

import (
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/runtime/internal/schedule"
)

// Schedule is a `schedule "name"` block: a message enqueued on Queue at
// every tick of Cron (in TimeZone) or of Every (docs/schedules.md).
type Schedule struct {
	Name  string
	Queue string
	// Cron is a five-field expression or a descriptor such as @hourly;
	// empty when Every is set.
	Cron string
	// Every is the interval of an interval schedule; ticks fall on its
	// multiples since the Unix epoch. Zero when Cron is set.
	Every time.Duration
	// TimeZone is the IANA zone Cron is read in. Default "UTC".
	TimeZone string
	// Body and Attributes make the message.
	Body        string
	Attributes  map[string]string
	ContentType string
	// Missed is what a tick missed while qrun was down does: "fire" (once,
	// at start; the default) or "skip".
	Missed string
	// Range is the block header.
	Range hcl.Range
}

// Missed-tick policies.
const (
	MissedFire = "fire"
	MissedSkip = "skip"
)

type rawSchedule struct {
	Name        string         `hcl:"name,label"`
	NameRange   hcl.Range      `hcl:"name,label_range"`
	Queue       *hcl.Attribute `hcl:"queue,optional"`
	Cron        *hcl.Attribute `hcl:"cron,optional"`
	Every       *hcl.Attribute `hcl:"every,optional"`
	TimeZone    *hcl.Attribute `hcl:"time_zone,optional"`
	Body        *hcl.Attribute `hcl:"body,optional"`
	Attributes  *hcl.Attribute `hcl:"attributes,optional"`
	ContentType *hcl.Attribute `hcl:"content_type,optional"`
	Missed      *hcl.Attribute `hcl:"missed,optional"`
	DefRange    hcl.Range      `hcl:",def_range"`
}

// schedules decodes the schedule blocks; their queues are checked by
// validateSchedules once every queue is known.
func (d *decoder) schedules(raws []*rawSchedule) {
	seen := map[string]hcl.Range{}
	for _, rs := range raws {
		if !d.checkName("schedule", rs.Name, rs.NameRange, seen) {
			continue
		}
		s := Schedule{Name: rs.Name, Range: rs.DefRange, TimeZone: "UTC", Missed: MissedFire}
		s.Queue = d.required(rs.Queue, rs.DefRange, "queue", "schedule")
		if rs.Queue != nil {
			d.scheduleQueues = append(d.scheduleQueues, rs.Queue)
		} else {
			d.scheduleQueues = append(d.scheduleQueues, nil)
		}
		s.TimeZone = d.str(rs.TimeZone, s.TimeZone)
		loc, err := time.LoadLocation(s.TimeZone)
		if err != nil || s.TimeZone == "" || s.TimeZone == "Local" {
			d.errorf(rs.TimeZone.Expr.Range(), "Invalid time zone",
				"time_zone %q is not an IANA time zone name such as \"Europe/Paris\" or \"UTC\" (\"Local\" is refused: the schedule must mean the same on every node).", s.TimeZone)
			loc = time.UTC
		}
		switch {
		case rs.Cron != nil && rs.Every != nil:
			d.errorf(rs.Every.Expr.Range(), "Conflicting schedule", "A schedule has either cron or every, not both.")
		case rs.Cron == nil && rs.Every == nil:
			d.errorf(rs.DefRange, "Missing schedule", "A schedule needs cron = \"0 3 * * *\" (five fields, or a descriptor such as @hourly) or every = \"5m\".")
		case rs.Cron != nil:
			s.Cron = d.str(rs.Cron, "")
			if _, err := schedule.ParseCron(s.Cron, loc); err != nil {
				d.errorf(rs.Cron.Expr.Range(), "Invalid cron expression",
					"cron %q: %s. Use five fields (minute hour day-of-month month day-of-week), e.g. \"0 3 * * *\", or @yearly, @monthly, @weekly, @daily, @hourly.", s.Cron, sentence(err.Error()))
			}
		default:
			s.Every = d.duration(rs.Every, 0)
			if _, err := schedule.Every(s.Every); err != nil {
				d.errorf(rs.Every.Expr.Range(), "Invalid interval", "%s.", sentence(err.Error()))
			}
			if rs.TimeZone != nil {
				d.warnf(rs.TimeZone.Expr.Range(), "Time zone unused", "An every schedule ticks at multiples of its interval since the Unix epoch; time_zone only applies to cron.")
			}
		}
		s.Body = d.str(rs.Body, "")
		s.ContentType = d.str(rs.ContentType, "")
		if rs.Attributes != nil {
			s.Attributes = d.stringMap(rs.Attributes)
		}
		s.Missed = d.oneOf(rs.Missed, s.Missed, "Invalid missed-tick policy", []string{MissedFire, MissedSkip})
		d.file.Schedules = append(d.file.Schedules, s)
	}
}

// validateSchedules checks that each schedule's queue exists and is not a
// topic's subscription-only name.
func (d *decoder) validateSchedules(queueNames []string) {
	for i := range d.file.Schedules {
		s := &d.file.Schedules[i]
		a := d.scheduleQueues[i]
		if s.Queue == "" || a == nil {
			continue
		}
		if _, ok := d.queueNamed(s.Queue); !ok {
			d.errorf(a.Expr.Range(), "Unknown queue",
				"Schedule %q enqueues on queue %q, which is not declared.%s", s.Name, s.Queue, didYouMean(s.Queue, queueNames))
		}
	}
}
