package redis_test

import (
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"

	"github.com/qrun-dev/qrun/engines/redis"
	"github.com/qrun-dev/qrun/internal/settings/settingstest"
)

func TestSettings(t *testing.T) {
	t.Parallel()
	t.Run("full", func(t *testing.T) {
		s, diags := settingstest.Decode(t, `
url              = "rediss://redis.internal:6380/2"
username         = "qrun"
password         = "secret"
tls_ca           = "/etc/ca.pem"
tls_cert         = "/etc/cert.pem"
tls_key          = "/etc/key.pem"
tls_server_name  = "redis"
key_prefix       = "jobs:"
pool_size        = 20
dedup_window     = "1m"
max_message_size = "8MiB"
block_interval   = "50ms"`, redis.DecodeSettings)
		settingstest.Expect(t, diags)
		o := s.Options
		if o.URL != "rediss://redis.internal:6380/2" || o.Username != "qrun" || o.Password != "secret" || o.TLSCA != "/etc/ca.pem" ||
			o.TLSCert != "/etc/cert.pem" || o.TLSKey != "/etc/key.pem" || o.TLSServerName != "redis" || o.KeyPrefix != "jobs:" ||
			o.PoolSize != 20 || o.DedupWindow != time.Minute || o.MaxMessageSize != 8<<20 || o.BlockInterval != 50*time.Millisecond {
			t.Errorf("options %+v", o)
		}
		if c := s.Capabilities(); !c.Durable || c.Priority || c.Ordering || c.FanOut || c.MaxMessageSize != 8<<20 {
			t.Errorf("capabilities %+v", c)
		}
	})
	t.Run("credentials from env()", func(t *testing.T) {
		f, diags := hclsyntax.ParseConfig([]byte("url = \"redis://h:6379\"\npassword = env(\"QRUN_REDIS_PASSWORD\")"), settingstest.File, hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		env := function.New(&function.Spec{Params: []function.Parameter{{Name: "name", Type: cty.String}}, Type: function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				return cty.StringVal("from-" + args[0].AsString()), nil
			}})
		s, diags := redis.DecodeSettings(f.Body, &hcl.EvalContext{Functions: map[string]function.Function{"env": env}})
		settingstest.Expect(t, diags)
		if s.Password != "from-QRUN_REDIS_PASSWORD" {
			t.Errorf("password = %q", s.Password)
		}
	})
	for name, tc := range map[string]struct{ src, want string }{
		"no url":          {`key_prefix = "x"`, "engine.hcl:1:1: Missing required argument"},
		"empty url":       {`url = ""`, "engine.hcl:1:7: Empty url"},
		"null url":        {"url = null", "engine.hcl:1:7: Empty url"},
		"other scheme":    {`url = "http://h:6379"`, "engine.hcl:1:7: Invalid url"},
		"no host":         {`url = "redis://"`, "engine.hcl:1:7: Invalid url"},
		"cert alone":      {"url = \"redis://h\"\ntls_cert = \"c.pem\"", "engine.hcl:2:12: Incomplete client certificate"},
		"empty prefix":    {"url = \"redis://h\"\nkey_prefix = \"\"", "engine.hcl:2:14: Empty key_prefix"},
		"no pool":         {"url = \"redis://h\"\npool_size = 0", "engine.hcl:2:13: Invalid pool_size"},
		"bad window":      {"url = \"redis://h\"\ndedup_window = \"soon\"", "engine.hcl:2:16: Invalid duration"},
		"huge messages":   {"url = \"redis://h\"\nmax_message_size = \"1GiB\"", "engine.hcl:2:20: Invalid max_message_size"},
		"unknown setting": {"url = \"redis://h\"\npool = 3", "engine.hcl:2:1: Unsupported argument"},
	} {
		t.Run(name, func(t *testing.T) {
			_, diags := settingstest.Decode(t, tc.src, redis.DecodeSettings)
			settingstest.Expect(t, diags, tc.want)
		})
	}
}
