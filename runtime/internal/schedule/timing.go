package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Timing computes a schedule's ticks. Ticks are instants, fixed by the
// expression and time zone alone (never by when qrun started), so every
// node computes the same ticks and can claim the same one.
type Timing struct {
	spec  *cron.SpecSchedule // nil for every
	every time.Duration
	loc   *time.Location
	// fixedHour: the cron's hour field is not "*", so the daylight-saving
	// rules of Next apply (see there).
	fixedHour bool
}

// starBit is robfig/cron's mark of a field written "*" (its starBit).
const starBit = 1 << 63

// ParseCron parses a standard five-field expression or a descriptor such
// as @hourly, in time zone loc.
func ParseCron(expr string, loc *time.Location) (Timing, error) {
	if strings.HasPrefix(strings.TrimSpace(expr), "@every") {
		return Timing{}, errors.New("@every is not a cron expression here: use every = \"5m\" instead of cron")
	}
	if strings.Contains(expr, "TZ=") {
		return Timing{}, errors.New("give the time zone with time_zone, not inside the expression")
	}
	s, err := cron.ParseStandard(expr)
	if err != nil {
		return Timing{}, err
	}
	spec, ok := s.(*cron.SpecSchedule)
	if !ok {
		return Timing{}, fmt.Errorf("%q is not a calendar expression", expr)
	}
	spec.Location = loc
	return Timing{spec: spec, loc: loc, fixedHour: spec.Hour&starBit == 0}, nil
}

// Every returns ticks at each multiple of d since the Unix epoch, so a
// restart does not shift them.
func Every(d time.Duration) (Timing, error) {
	if d < time.Second {
		return Timing{}, fmt.Errorf("every must be at least 1s, not %s", d)
	}
	return Timing{every: d, loc: time.UTC}, nil
}

// Next returns the first tick strictly after t.
//
// Daylight-saving changes, for an expression with a fixed hour (such as
// "30 2 * * *"): a wall time that happens twice (autumn) fires once, at
// its first occurrence; a wall time that does not exist (spring) fires
// once, at the instant the clocks jump. An expression whose hour is "*"
// follows real time: every hour that happens fires, so an hourly schedule
// fires at both 02:00 in autumn and at none in the missing spring hour.
func (tm Timing) Next(t time.Time) time.Time {
	if tm.spec == nil {
		d := int64(tm.every)
		u := t.UnixNano()
		n := (u/d + 1) * d
		if u < 0 && u%d != 0 {
			n = (u / d) * d
		}
		return time.Unix(0, n).UTC()
	}
	for {
		n := tm.spec.Next(t.In(tm.loc))
		if n.IsZero() {
			return n
		}
		if tm.fixedHour {
			if g, ok := tm.gapTick(t, n); ok {
				return g
			}
			if repeated(n, tm.loc) {
				t = n
				continue
			}
		}
		return n
	}
}

// repeated reports whether n is the second occurrence of its wall time,
// which an autumn change makes happen twice.
func repeated(n time.Time, loc *time.Location) bool {
	for _, back := range []time.Duration{30 * time.Minute, time.Hour, 2 * time.Hour} {
		p := n.Add(-back).In(loc)
		if p.Hour() == n.Hour() && p.Minute() == n.Minute() && p.Day() == n.Day() {
			_, po := p.Zone()
			_, no := n.Zone()
			if po > no {
				return true
			}
		}
	}
	return false
}

// gapTick finds a forward clock change in (t, n) whose skipped wall times
// the expression would have matched, and returns the instant of the jump.
func (tm Timing) gapTick(t, n time.Time) (time.Time, bool) {
	_, to := t.In(tm.loc).Zone()
	_, no := n.In(tm.loc).Zone()
	if no <= to {
		return time.Time{}, false
	}
	// The jump: the last instant still at t's offset, to the second.
	lo, hi := t.Unix(), n.Unix()
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if _, o := time.Unix(mid, 0).In(tm.loc).Zone(); o == to {
			lo = mid
		} else {
			hi = mid
		}
	}
	jump := time.Unix(hi, 0).In(tm.loc)
	// The skipped wall times are [jump's wall time - gap, jump's wall
	// time); match the expression against them as UTC wall times.
	gap := time.Duration(no-to) * time.Second
	w := jump
	wallEnd := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, time.UTC)
	wallStart := wallEnd.Add(-gap)
	inUTC := *tm.spec
	inUTC.Location = time.UTC
	if m := inUTC.Next(wallStart.Add(-time.Second)); !m.IsZero() && m.Before(wallEnd) && jump.After(t) && jump.Before(n) {
		return jump, true
	}
	return time.Time{}, false
}

// Location is the time zone ticks are computed in.
func (tm Timing) Location() *time.Location { return tm.loc }
