package memory_test

import (
	"testing"

	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/internal/settings/settingstest"
)

func TestSettings(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, body string
		size       int
		want       []string // substrings of the diagnostics; none means valid
	}{
		{"defaults", ``, 0, nil},
		{"bytes", `max_message_size = 1024`, 1024, nil},
		{"size string", `max_message_size = "1MiB"`, 1 << 20, nil},
		{"negative", `max_message_size = -1`, 0, []string{"engine.hcl:1:20: Invalid max_message_size"}},
		{"bad unit", `max_message_size = "1mb"`, 0, []string{"engine.hcl:1:20: Invalid size"}},
		{"unknown", `dedup = "1m"`, 0, []string{"engine.hcl:1:1: Unsupported argument"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, diags := settingstest.Decode(t, tt.body, memory.DecodeSettings)
			settingstest.Expect(t, diags, tt.want...)
			if s.MaxMessageSize != tt.size {
				t.Errorf("max_message_size = %d, want %d", s.MaxMessageSize, tt.size)
			}
		})
	}
}
