package plugins_test

import (
	"os/exec"
	"testing"
)

// TestRustSDKUnitTests runs the Rust SDK's own unit tests (attribute
// encoding, the read-again-when-too-small loop, duration rounding) on the
// build machine, where the crate compiles against a host that is absent.
func TestRustSDKUnitTests(t *testing.T) {
	t.Parallel()
	env, missing := toolchainEnv(t, "rust")
	if missing != "" {
		skipOrFail(t, "rust", missing)
	}
	cmd := exec.Command("/usr/bin/cargo", "test", "--offline", "--quiet")
	cmd.Dir = "sdk/rust"
	cmd.Env = append(env, "RUSTC=/usr/bin/rustc", "CARGO_TARGET_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cargo test: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
