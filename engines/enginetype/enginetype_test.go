package enginetype_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/engines/memory"
)

func TestAvailable(t *testing.T) {
	t.Parallel()
	everywhere := enginetype.Type{Name: "memory"}
	linux := enginetype.Type{Name: "shm", Platforms: []string{"linux"}}
	for _, goos := range []string{"linux", "darwin", "windows"} {
		if err := everywhere.Available(goos); err != nil {
			t.Errorf("a type without platforms is unavailable on %s: %v", goos, err)
		}
	}
	if err := linux.Available("linux"); err != nil {
		t.Errorf("a Linux type is unavailable on linux: %v", err)
	}
	err := linux.Available("windows")
	var ue *enginetype.UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, engines.ErrUnsupported) || err.Error() != `engine type "shm" is available on Linux only, not on Windows` {
		t.Errorf("Available(windows) = %v", err)
	}
}

// TestWithoutSettings: a type without settings refuses any attribute at
// its position and opens what its function builds.
func TestWithoutSettings(t *testing.T) {
	t.Parallel()
	typ := enginetype.WithoutSettings("stub", func(context.Context, enginetype.OpenOptions) (engines.Engine, error) {
		return memory.New(memory.Options{}), nil
	})
	decode := func(src string) (enginetype.Settings, hcl.Diagnostics) {
		f, diags := hclsyntax.ParseConfig([]byte(src), "s.hcl", hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return typ.Decode(f.Body, nil)
	}
	if _, diags := decode("\nsize = 1"); !diags.HasErrors() || diags[0].Subject.Start.Line != 2 {
		t.Errorf("an attribute was accepted or misplaced: %v", diags)
	}
	s, diags := decode("")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	e, err := s.Open(context.Background(), enginetype.OpenOptions{Name: "stub"})
	if err != nil {
		t.Fatal(err)
	}
	_ = e.Close()
}
