package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

const scheduleBase = `engine "local" { type = "memory" }
queue "reports" { engine = "local" }
`

func TestSchedulesAndThrottleDecode(t *testing.T) {
	fx := newFixture(t, nil)
	f, diags := fx.parse(scheduleBase + `
schedule "nightly" {
  cron       = "0 3 * * *"
  time_zone  = "Europe/Paris"
  queue      = "reports"
  body       = "run"
  attributes = { kind = "nightly" }
  missed     = "skip"
}
schedule "often" {
  every = "5m"
  queue = "reports"
}
consumer "c" {
  queue  = "reports"
  plugin = "h.wasm"
  concurrency = 8
  rate_limit = "100/s"
  burst = 10
  rate_limit_key = "tenant"
  max_in_flight_per_key = 2
  concurrency_key = "tenant"
}
`)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if len(f.Schedules) != 2 {
		t.Fatalf("schedules %+v", f.Schedules)
	}
	n := f.Schedules[0]
	if n.Cron != "0 3 * * *" || n.TimeZone != "Europe/Paris" || n.Queue != "reports" || n.Body != "run" || n.Attributes["kind"] != "nightly" || n.Missed != MissedSkip {
		t.Errorf("nightly %+v", n)
	}
	if o := f.Schedules[1]; o.Every != 5*time.Minute || o.Missed != MissedFire || o.TimeZone != "UTC" {
		t.Errorf("often %+v", o)
	}
	th := f.Consumers[0].Throttle
	if th.Rate != 100 || th.Burst != 10 || th.RateKey != "tenant" || th.MaxInFlightPerKey != 2 || th.ConcurrencyKey != "tenant" || th.RateText != "100/s" {
		t.Errorf("throttle %+v", th)
	}
}

func TestBrokenSchedulesAndThrottles(t *testing.T) {
	fx := newFixture(t, nil)
	cases := []struct {
		src, summary string
		line, col    int
	}{
		{"schedule \"s\" {\n  cron = \"61 * * * *\"\n  queue = \"reports\"\n}", "Invalid cron expression", 4, 10},
		{"schedule \"s\" {\n  cron = \"@every 5m\"\n  queue = \"reports\"\n}", "Invalid cron expression", 4, 10},
		{"schedule \"s\" {\n  cron = \"0 3 * * *\"\n  time_zone = \"Europe/Pariss\"\n  queue = \"reports\"\n}", "Invalid time zone", 5, 15},
		{"schedule \"s\" {\n  cron = \"0 3 * * *\"\n  queue = \"report\"\n}", "Unknown queue", 5, 11},
		{"schedule \"s\" {\n  queue = \"reports\"\n}", "Missing schedule", 3, 1},
		{"schedule \"s\" {\n  every = \"1ms\"\n  queue = \"reports\"\n}", "Invalid interval", 4, 11},
		{"schedule \"s\" {\n  every = \"1m\"\n  queue = \"reports\"\n  missed = \"later\"\n}", "Invalid missed-tick policy", 6, 12},
		{"schedule \"s\" {\n  cron = \"0 3 * * *\"\n  every = \"1m\"\n  queue = \"reports\"\n}", "Conflicting schedule", 5, 11},
		{"schedule \"s\" {\n  cron = \"0 3 * * *\"\n  time_zone = \"Local\"\n  queue = \"reports\"\n}", "Invalid time zone", 5, 15},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  concurrency = 2\n  max_in_flight_per_key = 2\n  concurrency_key = \"k\"\n}", "Per-key cap never reached", 7, 27},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  rate_limit = \"100/fortnight\"\n}", "Invalid rate limit", 6, 16},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  rate_limit_scope = \"global\"\n}", "Scope without rate limit", 6, 22},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  rate_limit = \"1/s\"\n  rate_limit_key = \"k\"\n  rate_limit_scope = \"global\"\n}", "Global per-key rate limit unsupported", 8, 22},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  rate_limit = \"1/s\"\n  rate_limit_scope = \"everywhere\"\n}", "Invalid rate limit scope", 7, 22},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  burst = 3\n}", "Burst without rate limit", 6, 11},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  max_in_flight_per_key = 1\n}", "Missing concurrency key", 6, 27},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  concurrency_key = \"k\"\n}", "Concurrency key without a cap", 6, 21},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  concurrency_scope = \"global\"\n}", "Scope without per-key cap", 6, 23},
		{"consumer \"c\" {\n  queue = \"reports\"\n  plugin = \"h.wasm\"\n  max_in_flight_per_key = 1\n  concurrency_key = \"k\"\n  concurrency_scope = \"all\"\n}", "Invalid concurrency scope", 8, 23},
	}
	for _, c := range cases {
		_, diags := fx.parse(scheduleBase + c.src)
		var found *hcl.Diagnostic
		for _, d := range diags {
			if d.Summary == c.summary {
				found = d
			}
		}
		if found == nil {
			t.Errorf("%q: no %q among %v", c.src, c.summary, diags)
			continue
		}
		if found.Subject.Start.Line != c.line || found.Subject.Start.Column != c.col {
			t.Errorf("%q: %q at %d:%d, want %d:%d", c.src, c.summary, found.Subject.Start.Line, found.Subject.Start.Column, c.line, c.col)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"100/s": 100, "6/m": 0.1, "3600/h": 1, "5/500ms": 10, " 2 / sec ": 2} {
		got, err := ParseRate(in)
		if err != nil || fmt.Sprintf("%.6f", got) != fmt.Sprintf("%.6f", want) {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"100", "0/s", "-1/s", "x/s", "1/0s", "1/week"} {
		if _, err := ParseRate(bad); err == nil || !strings.Contains(err.Error(), "rate") {
			t.Errorf("ParseRate(%q) = %v", bad, err)
		}
	}
}

// A Spec's schedules and throttles build to what the HCL decodes to, and
// are validated the same way.
func TestSpecBuildSchedulesAndThrottle(t *testing.T) {
	s := Spec{
		Dir:     t.TempDir(),
		Engines: []EngineSpec{{Name: "m", Type: "memory"}},
		Queues:  []QueueSpec{{Name: "reports", Engine: "m"}},
		Consumers: []ConsumerSpec{{Name: "c", Queue: "reports", PluginWasm: tinyWasm, Concurrency: 8,
			Throttle: ThrottleSpec{RateLimit: "10/s", Burst: 3, RateLimitKey: "tenant", MaxInFlightPerKey: 2, ConcurrencyKey: "tenant"}}},
		Schedules: []ScheduleSpec{
			{Name: "nightly", Cron: "0 3 * * *", TimeZone: "Europe/Paris", Queue: "reports", Body: "go", Attributes: map[string]string{"a": "b"}, Missed: MissedSkip},
			{Name: "often", Every: "30s", Queue: "reports"},
		},
	}
	f, err := s.Build(Options{Engines: fakeEngines{}})
	if err != nil {
		t.Fatal(err)
	}
	if th := f.Consumers[0].Throttle; th.Rate != 10 || th.Burst != 3 || th.RateKey != "tenant" || th.MaxInFlightPerKey != 2 {
		t.Errorf("throttle %+v", th)
	}
	if len(f.Schedules) != 2 || f.Schedules[0].Attributes["a"] != "b" || f.Schedules[0].Missed != MissedSkip || f.Schedules[1].Every != 30*time.Second {
		t.Errorf("schedules %+v", f.Schedules)
	}
	s.Schedules[0].Cron = "0 25 * * *"
	_, err = s.Build(Options{Engines: fakeEngines{}})
	if err == nil || !strings.Contains(err.Error(), `schedule "nightly": Invalid cron expression`) {
		t.Fatalf("bad cron in a Spec: %v", err)
	}
}
