package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/qrun-dev/qrun/runtime/httpout"
)

func TestHTTPAndWASIBlocks(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, map[string]string{"HOOK_TOKEN": "s3cret"})
	if err := os.Mkdir(filepath.Join(fx.dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, diags := fx.parse(brokenBase + `queue "a" { engine = "local" }
consumer "c" {
  queue   = "a"
  plugin  = "h.wasm"
  timeout = "5s"
  http {
    allow              = ["https://api.example.com", "*.hooks.example.com:8443", "http://127.0.0.1:9000"]
    timeout            = "2s"
    max_response_size  = "64KiB"
    max_requests       = 3
    max_connections    = 2
    headers            = { Authorization = "Bearer ${env("HOOK_TOKEN")}" }
    idempotency_header = "Idempotency-Key"
  }
  wasi {
    env = { LANG = "C.UTF-8" }
    dir "/data" { host = "data" }
    dir "/scratch" {
      host       = "data"
      read_write = true
    }
  }
}
consumer "plain" {
  queue  = "a"
  plugin = "h.wasm"
}
`)
	if diags.HasErrors() {
		t.Fatal(render(t, f, diags))
	}
	c, _ := f.Consumer("c")
	p := c.HTTP
	var allow []string
	for _, r := range p.Allow {
		allow = append(allow, r.String())
	}
	if fmt.Sprint(allow) != "[https://api.example.com *.hooks.example.com:8443 http://127.0.0.1:9000]" ||
		p.Timeout != 2*time.Second || p.MaxResponseSize != 64<<10 || p.MaxRequests != 3 || p.MaxConnections != 2 ||
		p.Headers["Authorization"] != "Bearer s3cret" || p.IdempotencyHeader != "Idempotency-Key" {
		t.Fatalf("http = %+v", p)
	}
	data := filepath.Join(fx.dir, "data")
	want := WASI{Env: map[string]string{"LANG": "C.UTF-8"}, Dirs: []Dir{{Guest: "/data", Host: data}, {Guest: "/scratch", Host: data, ReadWrite: true}}}
	if !reflect.DeepEqual(c.WASI, want) {
		t.Fatalf("wasi = %+v, want %+v", c.WASI, want)
	}
	plain, _ := f.Consumer("plain")
	if len(plain.HTTP.Allow) != 0 || plain.WASI.Env != nil || plain.WASI.Dirs != nil {
		t.Fatalf("a consumer without http and wasi blocks is granted %+v %+v", plain.HTTP, plain.WASI)
	}
}

func TestHTTPAndWASIErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, attr string
		want       []want
	}{
		{"bad allowed host", "http {\n    allow = [\"https://ok.example.com\",\n      \"ftp://x.example.com\"]\n  }", []want{{"Invalid allowed host", 7}}},
		{"bare wildcard", "http {\n    allow = [\"*\"]\n  }", []want{{"Invalid allowed host", 6}}},
		{"zero http timeout", "http {\n    timeout = \"0s\"\n  }", []want{{"Invalid HTTP timeout", 6}}},
		{"zero max requests", "http {\n    max_requests = 0\n  }", []want{{"Invalid max requests", 6}}},
		{"zero max connections", "http {\n    max_connections = 0\n  }", []want{{"Invalid max connections", 6}}},
		{"huge response size", "http {\n    max_response_size = \"2GiB\"\n  }", []want{{"Invalid max response size", 6}}},
		{"bad header name", "http {\n    headers = { \"Bad Name\" = \"x\" }\n  }", []want{{"Invalid header", 6}}},
		{"bad idempotency header", "http {\n    idempotency_header = \"a b\"\n  }", []want{{"Invalid header", 6}}},
		{"duplicate http block", "http {}\n  http {}", []want{{"Duplicate http block", 6}}},
		{"unknown http attribute", "http {\n    allowed_hosts = []\n  }", []want{{"Unsupported argument", 6}}},
		{"relative guest dir", "wasi {\n    dir \"data\" { host = \".\" }\n  }", []want{{"Invalid guest path", 6}}},
		{"missing host dir", "wasi {\n    dir \"/data\" { host = \"nope\" }\n  }", []want{{"Directory not found", 6}}},
		{"duplicate guest dir", "wasi {\n    dir \"/d\" { host = \".\" }\n    dir \"/d\" { host = \".\" }\n  }", []want{{"Duplicate directory", 7}}},
		{"bad env name", "wasi {\n    env = { \"A=B\" = \"x\" }\n  }", []want{{"Invalid environment variable", 6}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t, nil)
			f, diags := fx.parse(brokenBase + consumerWith(tc.attr))
			var got []want
			offset := 0
			for i := 0; i < len(brokenBase); i++ {
				if brokenBase[i] == '\n' {
					offset++
				}
			}
			for _, d := range diags {
				if d.Severity == hcl.DiagError {
					got = append(got, want{d.Summary, d.Subject.Start.Line - offset})
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v\n%s", got, tc.want, render(t, f, diags))
			}
		})
	}
}

func TestHTTPTimeoutAboveConsumerTimeoutWarns(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, nil)
	f, diags := fx.parse(brokenBase + consumerWith("http {\n    timeout = \"1m\"\n  }"))
	if diags.HasErrors() || len(diags) != 1 || diags[0].Summary != "HTTP timeout exceeds consumer timeout" {
		t.Fatal(render(t, f, diags))
	}
	c, _ := f.Consumer("c")
	if c.HTTP.Timeout != time.Minute || c.HTTP.MaxRequests != httpout.DefaultMaxRequests {
		t.Fatalf("http = %+v", c.HTTP)
	}
}
