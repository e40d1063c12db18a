package schedule

import (
	"testing"
	"time"
)

func paris(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// ticks lists the first n ticks after from.
func ticks(tm Timing, from time.Time, n int) []time.Time {
	var out []time.Time
	for range n {
		from = tm.Next(from)
		out = append(out, from)
	}
	return out
}

func mustCron(t *testing.T, expr string, loc *time.Location) Timing {
	t.Helper()
	tm, err := ParseCron(expr, loc)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func wantTicks(t *testing.T, got []time.Time, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d ticks, want %d", len(got), len(want))
	}
	for i := range want {
		if g := got[i].UTC().Format(time.RFC3339); g != want[i] {
			t.Errorf("tick %d = %s (%s), want %s", i, g, got[i], want[i])
		}
	}
}

// In 2026 Paris springs forward on 29 March at 02:00 CET (01:00 UTC) to
// 03:00 CEST: 02:30 does not exist that day, and fires at the jump.
func TestCronSpringForwardFiresAtTheJump(t *testing.T) {
	loc := paris(t)
	tm := mustCron(t, "30 2 * * *", loc)
	got := ticks(tm, time.Date(2026, 3, 28, 12, 0, 0, 0, loc), 3)
	wantTicks(t, got,
		"2026-03-29T01:00:00Z", // 03:00 CEST, the instant the clocks jump
		"2026-03-30T00:30:00Z", // 02:30 CEST
		"2026-03-31T00:30:00Z")
}

// An hourly schedule follows real time: the missing hour has no tick.
func TestCronSpringForwardHourly(t *testing.T) {
	loc := paris(t)
	tm := mustCron(t, "@hourly", loc)
	got := ticks(tm, time.Date(2026, 3, 29, 0, 30, 0, 0, loc), 3)
	wantTicks(t, got, "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z")
}

// On 25 October 2026 Paris falls back at 03:00 CEST to 02:00 CET: 02:30
// happens twice and a daily 02:30 fires once, at the first.
func TestCronFallBackFiresOnce(t *testing.T) {
	loc := paris(t)
	tm := mustCron(t, "30 2 * * *", loc)
	got := ticks(tm, time.Date(2026, 10, 24, 12, 0, 0, 0, loc), 3)
	wantTicks(t, got,
		"2026-10-25T00:30:00Z", // 02:30 CEST
		"2026-10-26T01:30:00Z", // 02:30 CET the next day; not 02:30 CET on the 25th
		"2026-10-27T01:30:00Z")
}

// Every real hour of the long autumn day fires an hourly schedule.
func TestCronFallBackHourly(t *testing.T) {
	loc := paris(t)
	tm := mustCron(t, "0 * * * *", loc)
	got := ticks(tm, time.Date(2026, 10, 25, 1, 30, 0, 0, loc), 3)
	wantTicks(t, got, "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z")
}

func TestCronLeapDay(t *testing.T) {
	tm := mustCron(t, "0 12 29 2 *", time.UTC)
	got := ticks(tm, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), 3)
	wantTicks(t, got, "2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z", "2036-02-29T12:00:00Z")
	// The last day of February, whichever it is, through a leap year.
	tm = mustCron(t, "0 0 1 3 *", time.UTC)
	from := time.Date(2028, 2, 28, 0, 0, 0, 0, time.UTC)
	wantTicks(t, ticks(tm, from, 1), "2028-03-01T00:00:00Z")
	tm = mustCron(t, "0 0 * 2 *", time.UTC)
	wantTicks(t, ticks(tm, from, 2), "2028-02-29T00:00:00Z", "2029-02-01T00:00:00Z")
}

func TestCronDescriptorsAndErrors(t *testing.T) {
	tm := mustCron(t, "@daily", time.UTC)
	wantTicks(t, ticks(tm, time.Date(2026, 1, 1, 5, 0, 0, 0, time.UTC), 1), "2026-01-02T00:00:00Z")
	for _, bad := range []string{"", "* * *", "61 * * * *", "@every 5m", "CRON_TZ=UTC 0 * * * *", "@sometimes"} {
		if _, err := ParseCron(bad, time.UTC); err == nil {
			t.Errorf("ParseCron(%q) accepted", bad)
		}
	}
}

func TestEveryIsAlignedToTheEpoch(t *testing.T) {
	tm, err := Every(5 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wantTicks(t, ticks(tm, time.Date(2026, 1, 1, 0, 3, 10, 0, time.UTC), 2), "2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z")
	// A tick time itself is not its own next.
	wantTicks(t, ticks(tm, time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC), 1), "2026-01-01T00:10:00Z")
	if _, err := Every(time.Millisecond); err == nil {
		t.Error("every 1ms accepted")
	}
}
