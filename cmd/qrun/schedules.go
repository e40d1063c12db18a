package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// schedulesHelp is `qrun schedules --help`'s text.
const schedulesHelp = `List the schedules of the running qrun (GET /v1/schedules): each one's
expression and time zone, its queue, the next tick, the last tick claimed
(by this qrun or another sharing the engine), and how many ticks this qrun
fired or found claimed already. Times print in the local time zone; --json
prints them in RFC 3339. See docs/schedules.md.`

func cmdSchedules(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	ss, err := fetch(af, stderr, (*admin.Client).Schedules)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSONTo(stdout, map[string]any{"schedules": ss})
	}
	printSchedules(stdout, ss)
	return nil
}

func printSchedules(w io.Writer, ss []admin.ScheduleInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCHEDULE\tQUEUE\tEXPR\tTIME ZONE\tNEXT\tLAST TICK\tFIRED\tSKIPPED\tERROR")
	for _, s := range ss {
		last := "-"
		if !s.LastTick.IsZero() {
			last = s.LastTick.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.Name, s.Queue, s.Expr, s.TimeZone,
			s.Next.Local().Format(time.DateTime), last, s.Fired, s.Skipped, oneLine(s.LastError, 80))
	}
	_ = tw.Flush()
}

// printThrottles adds, under `qrun consumers`' table, a line per consumer
// with a rate limit or per-key cap: the limits and the deliveries waiting
// for them.
func printThrottles(w io.Writer, cs []admin.ConsumerInfo) {
	for _, c := range cs {
		t := c.Throttle
		if t == nil {
			continue
		}
		var limits []string
		if t.RateLimit != "" {
			l := fmt.Sprintf("rate %s burst %d", t.RateLimit, t.Burst)
			if t.RateLimitKey != "" {
				l += " per " + t.RateLimitKey
			}
			if t.RateLimitScope == "global" {
				l += " across nodes"
			}
			limits = append(limits, l)
		}
		if t.MaxInFlightPerKey > 0 {
			l := fmt.Sprintf("%d in flight per %s", t.MaxInFlightPerKey, t.ConcurrencyKey)
			if t.ConcurrencyScope == "global" {
				l += " across nodes"
			}
			limits = append(limits, l)
		}
		fmt.Fprintf(w, "throttle of %s: %s; waiting %d, throttled %d for %s, %d keys\n", c.Name, strings.Join(limits, ", "),
			t.Waiting, t.Throttled, time.Duration(t.ThrottledSeconds*float64(time.Second)).Round(time.Millisecond), t.Keys)
	}
}
