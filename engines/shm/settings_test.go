package shm_test

import (
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines/shm"
	"github.com/qrun-dev/qrun/engines/shm/ring"
	"github.com/qrun-dev/qrun/internal/settings/settingstest"
)

func TestSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       []string // substrings of the diagnostics; none means valid
	}{
		{"defaults", ``, nil},
		{"size string", `slot_size = "4KiB"`, nil},
		{"slot size", `slot_size = 0`, []string{"engine.hcl:1:13: Invalid slot_size"}},
		{"slot size string", `slot_size = "65MiB"`, []string{"engine.hcl:1:13: Invalid slot_size"}},
		{"capacity", `capacity = 1000`, []string{"engine.hcl:1:12", "power of two"}},
		{"mode", `mode = "ring"`, []string{"engine.hcl:1:8", `not "ring"`}},
		{"prefix", `prefix = "a/b"`, []string{"engine.hcl:1:10: Invalid prefix"}},
		{"duration", `send_timeout = "soon"`, []string{"engine.hcl:1:16: Invalid duration"}},
		{"zero duration", `stall_timeout = "0s"`, []string{"engine.hcl:1:17: Invalid stall_timeout"}},
		{"too large", "slot_size = 67108864\ncapacity = 16777216", []string{"engine.hcl:2:12: Ring too large"}},
		{"too large as strings", "slot_size = \"64MiB\"\ncapacity = 16777216", []string{"engine.hcl:2:12: Ring too large"}},
		{"unknown", `slots = 4`, []string{"engine.hcl:1:1: Unsupported argument"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, diags := settingstest.Decode(t, tt.body, shm.DecodeSettings)
			settingstest.Expect(t, diags, tt.want...)
		})
	}
}

func TestSettingsValues(t *testing.T) {
	t.Parallel()
	s, diags := settingstest.Decode(t, "slot_size = \"1KiB\"\ncapacity = 64\nmode = \"cyclic\"\nprefix = \"p.\"\nsend_timeout = \"2s\"\nstall_timeout = \"3s\"", shm.DecodeSettings)
	settingstest.Expect(t, diags)
	want := shm.Options{SlotSize: 1024, Capacity: 64, Mode: ring.Cyclic, Prefix: "p.", SendTimeout: 2 * time.Second, StallTimeout: 3 * time.Second}
	if s.Options != want {
		t.Fatalf("options %+v, want %+v", s.Options, want)
	}
	if err := s.CheckQueueName(strings.Repeat("q", 253)); err != nil {
		t.Errorf("a 255-byte segment name refused: %v", err)
	}
	if err := s.CheckQueueName(strings.Repeat("q", 254)); err == nil {
		t.Error("a 256-byte segment name accepted")
	}
}
