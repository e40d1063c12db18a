package server_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/qrun-dev/qrun/runtime/plugin"
)

// precompileChild makes this test binary act as the child that compiles a
// plugin version at low priority (`qrun plugin precompile` in the real
// binary), for the benchmarks that swap a large module.
const precompileChild = "precompile-child"

func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == precompileChild && os.Args[2] == "--cache" {
		if err := plugin.PrecompileChild(context.Background(), os.Args[3], os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	stopPostgres()
	os.Exit(code)
}
