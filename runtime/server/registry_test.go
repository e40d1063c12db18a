package server_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/builtin"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// at renders where each error diagnostic points, with its summary.
func at(diags hcl.Diagnostics) []string {
	var out []string
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil {
			out = append(out, fmt.Sprintf("%s:%d:%d %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
		}
	}
	return out
}

// TestEngineTypesOffLinux: the built-in list, as a qrun built for macOS
// or Windows sees it, refuses posixmq and shm at the type attribute with
// the platforms they run on, and accepts memory, disk and postgres.
func TestEngineTypesOffLinux(t *testing.T) {
	t.Parallel()
	for _, goos := range []string{"darwin", "windows"} {
		reg := server.NewRegistryFor(goos, builtin.Types()...)
		for _, tc := range []struct{ typ, body, want string }{
			{"posixmq", "", "is available on Linux only"},
			{"shm", `slot_size = "1KiB"`, "is available on Linux only"},
			{"memory", "", ""},
			{"disk", `max_message_size = "1MiB"`, ""},
			{"postgres", `dsn = "host=/tmp"`, ""},
		} {
			t.Run(goos+"/"+tc.typ, func(t *testing.T) {
				t.Parallel()
				src := fmt.Sprintf("engine \"e\" {\n  type = %q\n  %s\n}\n", tc.typ, tc.body)
				_, diags := config.Parse("p.hcl", []byte(src), config.Options{Engines: reg})
				if tc.want == "" {
					if diags.HasErrors() {
						t.Fatalf("%s refused on %s: %v", tc.typ, goos, diags)
					}
					return
				}
				if got := at(diags); !slices.Equal(got, []string{"p.hcl:2:10 Engine type unavailable"}) || !strings.Contains(diags[0].Detail, tc.want) {
					t.Fatalf("diagnostics %v (%v); want one \"Engine type unavailable\" at p.hcl:2:10 saying %q", got, diags, tc.want)
				}
			})
		}
	}
	if err := builtin.Types()[0].Available("plan9"); err != nil {
		t.Errorf("memory unavailable on plan9: %v", err)
	}
}

// TestUnavailableEngineDoesNotOpen: a registry refuses to open a type
// that does not run on its platform, even if validate was skipped.
func TestUnavailableEngineDoesNotOpen(t *testing.T) {
	t.Parallel()
	opened := false
	typ := enginetype.WithoutSettings("linuxonly", func(context.Context, enginetype.OpenOptions) (engines.Engine, error) {
		opened = true
		return nil, errors.New("must not open")
	})
	typ.Platforms = []string{"linux"}
	cfg := parse(t, `
runtime { admin_listen = "off" }
engine "m" { type = "memory" }`)
	cfg.Engines[0].Type = "linuxonly"
	_, err := server.New(context.Background(), cfg, server.Options{Registry: server.NewRegistryFor("darwin", typ)})
	if !errors.Is(err, engines.ErrUnsupported) || !strings.Contains(err.Error(), `engine type "linuxonly" is available on Linux only, not on macOS`) || opened {
		t.Fatalf("New: %v (opened %v); want ErrUnsupported naming the platforms", err, opened)
	}
}

// TestSizeStringsInEngineBlocks: engine blocks take sizes as numbers or
// "1MiB"-style strings, as queue and consumer blocks always did, and a
// bad one is reported at the value in the config file.
func TestSizeStringsInEngineBlocks(t *testing.T) {
	t.Parallel()
	reg := server.NewRegistryFor("linux", builtin.Types()...)
	for _, tc := range []struct{ typ, setting, want string }{
		{"memory", `max_message_size = "1MiB"`, ""},
		{"disk", `max_message_size = "16MiB"`, ""},
		{"disk", `max_message_size = 16777216`, ""},
		{"postgres", `max_message_size = "64MB"`, ""},
		{"posixmq", `message_size = "4KiB"`, ""},
		{"shm", `slot_size = "2KiB"`, ""},
		{"memory", `max_message_size = "1 MiBs"`, "p.hcl:4:22 Invalid size"},
		{"disk", `max_message_size = "16mib"`, "p.hcl:4:22 Invalid size"},
		{"postgres", `max_message_size = "1GiB"`, "p.hcl:4:22 Invalid max_message_size"},
		{"shm", `slot_size = "-1KiB"`, "p.hcl:4:15 Invalid size"},
		{"disk", `dedup_window = 300`, "p.hcl:4:18 Invalid duration"},
		{"postgres", `poll_interval = "fast"`, "p.hcl:4:19 Invalid duration"},
	} {
		t.Run(tc.typ+" "+tc.setting, func(t *testing.T) {
			t.Parallel()
			dsn := ""
			if tc.typ == "postgres" {
				dsn = `dsn = "host=/tmp"`
			}
			src := fmt.Sprintf("engine \"e\" {\n  type = %q\n  %s\n  %s\n}\n", tc.typ, dsn, tc.setting)
			_, diags := config.Parse("p.hcl", []byte(src), config.Options{Engines: reg})
			if tc.want == "" {
				if diags.HasErrors() {
					t.Fatalf("refused: %v", diags)
				}
				return
			}
			if got := at(diags); !slices.Equal(got, []string{tc.want}) {
				t.Fatalf("diagnostics %v (%v); want %q", got, diags, tc.want)
			}
		})
	}
}
