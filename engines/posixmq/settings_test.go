//go:build linux

package posixmq_test

import (
	"fmt"
	"testing"

	"github.com/qrun-dev/qrun/engines/posixmq"
	"github.com/qrun-dev/qrun/engines/posixmq/mq"
	"github.com/qrun-dev/qrun/internal/settings/settingstest"
)

func TestSettings(t *testing.T) {
	t.Parallel()
	lim, err := mq.SystemLimits()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, body string
		want       []string // substrings of the diagnostics; none means valid
	}{
		{"defaults", ``, nil},
		{"everything", "max_messages = 5\nmessage_size = 4096\non_mismatch = \"error\"\nformat = \"raw\"\nprefix = \"app.\"\nmode = \"0660\"\nspill = 100\nsend_timeout = \"2s\"", nil},
		{"size string", `message_size = "4KiB"`, nil},
		{"too deep", fmt.Sprintf("max_messages = %d", lim.MsgMax+1), []string{"engine.hcl:1:16: Invalid max_messages", mq.MsgMaxFile, "fs.mqueue.msg_max"}},
		{"too large", fmt.Sprintf("message_size = %d", lim.MsgSizeMax+1), []string{"engine.hcl:1:16", mq.MsgSizeMaxFile}},
		{"no room for the envelope", `message_size = 20`, []string{"engine.hcl:1:16", "envelope"}},
		{"raw allows tiny messages", "format = \"raw\"\nmessage_size = 20", nil},
		{"zero depth", `max_messages = 0`, []string{"engine.hcl:1:16", "at least 1"}},
		{"bad size string", `message_size = "8 KiB please"`, []string{"engine.hcl:1:16: Invalid size"}},
		{"bad format", `format = "json"`, []string{"engine.hcl:1:10", "framed, raw"}},
		{"bad mismatch", `on_mismatch = "maybe"`, []string{"engine.hcl:1:15", "warn, error"}},
		{"bad mode", `mode = "rwx"`, []string{"engine.hcl:1:8", "octal"}},
		{"bad prefix", `prefix = "a/b"`, []string{"engine.hcl:1:10", "slash"}},
		{"bad timeout", `send_timeout = "soon"`, []string{"engine.hcl:1:16", "Invalid duration"}},
		{"negative timeout", `send_timeout = "-1s"`, []string{"engine.hcl:1:16", "Invalid send_timeout"}},
		{"unknown", `depth = 3`, []string{"engine.hcl:1:1", "depth"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if mq.HasSysResource() && (tt.name == "too deep" || tt.name == "too large") {
				t.Skip("CAP_SYS_RESOURCE lifts the limits under test")
			}
			_, diags := settingstest.Decode(t, tt.body, posixmq.DecodeSettings)
			settingstest.Expect(t, diags, tt.want...)
		})
	}
}

// TestSettingsQueueName: the kernel name is "/" + prefix + name, and the
// part after the slash is at most NAME_MAX bytes.
func TestSettingsQueueName(t *testing.T) {
	t.Parallel()
	s, diags := settingstest.Decode(t, `prefix = "app."`, posixmq.DecodeSettings)
	settingstest.Expect(t, diags)
	if err := s.CheckQueueName(string(make([]byte, 251))); err != nil {
		t.Errorf("a 255-byte kernel name refused: %v", err)
	}
	if err := s.CheckQueueName(string(make([]byte, 252))); err == nil {
		t.Error("a 256-byte kernel name accepted")
	}
}
