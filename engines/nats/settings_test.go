package nats_test

import (
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines/nats"
	"github.com/qrun-dev/qrun/internal/settings/settingstest"
)

func TestSettings(t *testing.T) {
	t.Parallel()
	t.Run("full", func(t *testing.T) {
		s, diags := settingstest.Decode(t, `
urls             = ["nats://a:4222", "nats://b:4222"]
user             = "u"
password         = "p"
tls_ca           = "ca.pem"
tls_cert         = "c.pem"
tls_key          = "k.pem"
prefix           = "jobs_"
replicas         = 3
storage          = "memory"
dedup_window     = "1m"
ack_margin       = "2s"
max_ack_wait     = "20s"
max_ack_pending  = 500
max_message_size = "512KiB"`, nats.DecodeSettings)
		settingstest.Expect(t, diags)
		o := s.Options
		if len(o.URLs) != 2 || o.URLs[1] != "nats://b:4222" || o.User != "u" || o.Password != "p" || o.TLSCA != "ca.pem" ||
			o.TLSCert != "c.pem" || o.TLSKey != "k.pem" || o.Prefix != "jobs_" || o.Replicas != 3 || !o.Memory ||
			o.DedupWindow != time.Minute || o.AckMargin != 2*time.Second || o.MaxAckWait != 20*time.Second ||
			o.MaxAckPending != 500 || o.MaxMessageSize != 512<<10 {
			t.Errorf("options %+v", o)
		}
		if c := s.Capabilities(); c.Durable || !c.DeadLetter || !c.MultiNode {
			t.Errorf("memory storage: capabilities %+v, want not Durable", c)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		s, diags := settingstest.Decode(t, `url = "nats://x:4222"`+"\ntoken = \"t\"\ncreds = null", nats.DecodeSettings)
		settingstest.Expect(t, diags)
		if len(s.URLs) != 1 || s.Token != "t" || s.Memory || !s.Capabilities().Durable {
			t.Errorf("options %+v", s.Options)
		}
		if err := s.CheckQueueName("a.b"); err == nil {
			t.Error("CheckQueueName(a.b) = nil; a dot would split the subject")
		}
	})
	for name, tc := range map[string]struct{ src, want string }{
		"url and urls":     {"url = \"a\"\nurls = [\"b\"]", "engine.hcl:2:8: Both url and urls"},
		"urls not list":    {`urls = "a"`, "engine.hcl:1:8: Invalid urls"},
		"empty url in":     {`urls = ["a", ""]`, "engine.hcl:1:8: Invalid urls"},
		"password alone":   {`password = "p"`, "engine.hcl:1:12: Password without user"},
		"two credentials":  {"user = \"u\"\ntoken = \"t\"", "engine.hcl:2:9: More than one credential"},
		"cert without key": {`tls_cert = "c"`, "engine.hcl:1:12: Client certificate without key"},
		"key without cert": {`tls_key = "k"`, "engine.hcl:1:11: Client key without certificate"},
		"bad prefix":       {`prefix = "a.b"`, "engine.hcl:1:10: Invalid prefix"},
		"replicas":         {`replicas = 7`, "engine.hcl:1:12: Invalid replicas"},
		"storage":          {`storage = "disk"`, "engine.hcl:1:11: Invalid storage"},
		"tiny window":      {`dedup_window = "1ms"`, "engine.hcl:1:16: Invalid dedup_window"},
		"unknown":          {`servers = 1`, "engine.hcl:1:1: Unsupported argument"},
	} {
		t.Run(name, func(t *testing.T) {
			_, diags := settingstest.Decode(t, tc.src, nats.DecodeSettings)
			settingstest.Expect(t, diags, tc.want)
		})
	}
}
