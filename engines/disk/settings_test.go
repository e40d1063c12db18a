package disk_test

import (
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/internal/settings/settingstest"
)

func TestSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       []string // substrings of the diagnostics; none means valid
	}{
		{"ok", "sync = \"batch\"\nmax_message_size = 1024\ndedup_window = \"1m\"\nlock_timeout = \"2s\"", nil},
		{"size string", `max_message_size = "1MiB"`, nil},
		{"bad sync", "\nsync = \"sometimes\"", []string{"engine.hcl:2:8: Invalid sync mode"}},
		{"bad size", `max_message_size = -1`, []string{"engine.hcl:1:20: Invalid max_message_size"}},
		{"bad size string", `max_message_size = "1 parsec"`, []string{"engine.hcl:1:20: Invalid size", `unknown unit "parsec"`}},
		{"bad duration", `dedup_window = "soon"`, []string{"engine.hcl:1:16: Invalid duration"}},
		{"duration as number", `dedup_window = 60`, []string{"engine.hcl:1:16: Invalid duration", "duration string"}},
		{"zero duration", `lock_timeout = "0s"`, []string{"engine.hcl:1:16: Invalid lock_timeout", "positive"}},
		{"unknown", `fsync = true`, []string{"engine.hcl:1:1: Unsupported argument"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, diags := settingstest.Decode(t, tt.body, disk.DecodeSettings)
			settingstest.Expect(t, diags, tt.want...)
		})
	}
}

// TestSettingsValues: what the block says reaches the engine's options,
// and a size string means the same bytes as the number.
func TestSettingsValues(t *testing.T) {
	t.Parallel()
	s, diags := settingstest.Decode(t, "sync = \"batch\"\nmax_message_size = \"1MiB\"\ndedup_window = \"1m\"\nlock_timeout = \"2s\"", disk.DecodeSettings)
	settingstest.Expect(t, diags)
	want := disk.Options{Sync: disk.SyncBatch, MaxMessageSize: 1 << 20, DedupWindow: time.Minute, LockTimeout: 2 * time.Second}
	if s.Options != want {
		t.Fatalf("options %+v, want %+v", s.Options, want)
	}
}
