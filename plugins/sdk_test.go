package plugins_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/plugin"
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

// asMessageReuse is an AssemblyScript handler that keeps the Message of
// its previous delivery: it acks when that is the very object it is handed
// now and already reads the new delivery's body, and dead-letters otherwise.
const asMessageReuse = `import { Message, Verdict, handle } from "./qrun";
export { qrun_abi_v1, qrun_alloc, qrun_free, qrun_init, qrun_handle } from "./qrun";

let prev: Message | null = null;

function onMessage(m: Message): Verdict {
  const p = prev;
  prev = m;
  if (p === null) return Verdict.Ack;
  return p === m && p.length == m.length && p.text() == m.text() ? Verdict.Ack : Verdict.DeadLetter;
}

handle(onMessage);
`

// TestAssemblyScriptSDKReusesMessage: the AssemblyScript SDK hands every
// delivery the same Message, its fields set in place (a new one per
// delivery cost a garbage-collected allocation each), as
// docs/writing-handlers.md says.
func TestAssemblyScriptSDKReusesMessage(t *testing.T) {
	t.Parallel()
	env, missing := toolchainEnv(t, "assemblyscript")
	if missing != "" {
		skipOrFail(t, "assemblyscript", missing)
	}
	dir := t.TempDir()
	sdk, err := os.ReadFile("sdk/assemblyscript/qrun.ts")
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string][]byte{"qrun.ts": sdk, "reuse.ts": []byte(asMessageReuse)} {
		if err := os.WriteFile(filepath.Join(dir, name), src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	asc := filepath.Join("toolchains", "node_modules", ".bin", "asc")
	if asc, err = filepath.Abs(asc); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(asc, "reuse.ts", "-o", "reuse.wasm", "-O3", "--runtime", "incremental",
		"--exportStart", "_initialize", "--use", "abort=qrun/qrunAbort")
	cmd.Dir, cmd.Env = dir, env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("asc: %v\n%s", err, out)
	}
	wasm, err := os.ReadFile(filepath.Join(dir, "reuse.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h, err := plugin.NewHost(ctx, plugin.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	p, err := h.Load(ctx, plugin.Spec{Consumer: "reuse", Wasm: wasm}, &sink{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.NewInstance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close(ctx)
	for i, body := range []string{"first", "second delivery", "3"} {
		d := engines.NewDelivery(engines.Delivery{Message: engines.Message{ID: "m", Body: []byte(body)}, Queue: "q", Attempt: 1},
			nil, engines.Ticket{})
		if r := in.Handle(ctx, &d, time.Now()); r.Err != nil || r.Verdict != engines.Ack {
			t.Fatalf("delivery %d (%q): %v, %v; want ack (the same Message, reading the new body)", i, body, r.Verdict, r.Err)
		}
	}
}
