package main_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/server"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readRepo(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const drainConfig = `
runtime {
  data_dir      = %q
  admin_listen  = %q
  drain_timeout = "%ds"
}
%s
engine "tags" { type = "memory" }
queue "in"  { engine = "e" }
queue "out" { engine = %q }
consumer "slow" {
  queue       = "in"
  plugin      = %q
  concurrency = 4
  publish     = ["out"]
}
`

// TestSIGTERMDrainsUnderLoad stops qrun while a producer keeps sending and a
// slow handler (50 ms a message) is busy: qrun must stop receiving, let the
// deliveries in progress finish, hand back the rest and exit 0 within the
// drain timeout. On a durable engine a restarted qrun then handles every
// message that was not acked, so that in the end each message was handled
// exactly once.
func TestSIGTERMDrainsUnderLoad(t *testing.T) {
	t.Parallel()
	const drainTimeout = 5 * time.Second
	// restartable engines keep what was not acked across a restart of
	// qrun: durable ones, and the kernel-resident ones (until a reboot).
	// Their handler output is in the same engine, so a restart can count
	// it; a memory engine's is gone with the process.
	for _, et := range []struct {
		typ         string
		restartable bool
		settings    func(t *testing.T) string
	}{
		{"memory", false, nil},
		{"disk", true, nil},
		{"shm", true, func(t *testing.T) string {
			p := fmt.Sprintf("qrun-e2e-%d-%s.", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
			t.Cleanup(func() {
				paths, _ := filepath.Glob("/dev/shm/" + p + "*")
				for _, path := range paths {
					_ = os.Remove(path)
				}
			})
			return fmt.Sprintf("prefix = %q", p)
		}},
		// posixmq keeps its queues across a restart too, but a kernel queue
		// holds at most msg_max messages (10 on a machine without
		// CAP_SYS_RESOURCE), too few for the handler output the restart
		// check counts: this row checks the drain only.
		{"posixmq", false, func(t *testing.T) string {
			p := fmt.Sprintf("qe%d_%d.", os.Getpid(), time.Now().UnixNano()%1e6)
			t.Cleanup(func() {
				for _, q := range []string{"in", "out"} {
					unlinkMQ("/" + p + q)
				}
			})
			return fmt.Sprintf("prefix = %q", p)
		}},
	} {
		t.Run(et.typ, func(t *testing.T) {
			t.Parallel()
			if !slices.Contains(server.Builtin().EngineTypes(), et.typ) {
				t.Skipf("SKIP: engine type %q is not built into this qrun yet", et.typ)
			}
			if err := server.Builtin().EngineAvailable(et.typ); err != nil {
				t.Skipf("SKIP: %v", err)
			}
			dir := t.TempDir()
			addr := freeAddr(t)
			cfgPath := filepath.Join(dir, "qrun.hcl")
			eb := fmt.Sprintf("engine \"e\" { type = %q }", et.typ)
			if et.settings != nil {
				eb = fmt.Sprintf("engine \"e\" {\n  type = %q\n  %s\n}", et.typ, et.settings(t))
			}
			outEngine := "tags"
			if et.restartable {
				outEngine = "e"
			}
			writeFile(t, cfgPath, fmt.Appendf(nil, drainConfig, filepath.Join(dir, "data"), addr,
				int(drainTimeout/time.Second), eb, outEngine, repoPath(t, "runtime/server/testdata/slow.wasm")))
			p := runQrun(t, cfgPath)
			c := &admin.Client{BaseURL: "http://" + addr}
			waitReady(t, c)

			// The producer sends until qrun goes away; what it got IDs for
			// was accepted.
			accepted := make(chan int, 1)
			go func() {
				n := 0
				defer func() { accepted <- n }()
				for i := 0; ; i++ {
					msgs := make([]admin.SendMessage, 10)
					for j := range msgs {
						msgs[j].Body = fmt.Sprintf("m-%d-%d", i, j)
					}
					resp, err := c.Send(context.Background(), "in", admin.SendRequest{Messages: msgs})
					if err != nil {
						return
					}
					n += len(resp.IDs)
					time.Sleep(20 * time.Millisecond) // a steady load, not a flood
				}
			}()
			waitFor(t, "some messages handled", 30*time.Second, func() (bool, string) {
				d := depths(t, c)
				return d["out"] >= 20, fmt.Sprint(d)
			})
			start := time.Now()
			p.signal(t, syscall.SIGTERM)
			// A drain that overran is cut at drain_timeout, plus a few
			// seconds for settling and closing: far less than this.
			if code := p.wait(t, drainTimeout+10*time.Second); code != 0 {
				t.Fatalf("qrun exited %d after SIGTERM, want 0", code)
			}
			took := time.Since(start)
			sent := <-accepted
			log := p.stderr.String()
			if !strings.Contains(log, `"msg":"drained"`) || strings.Contains(log, "drain timed out") {
				t.Fatalf("the drain did not complete cleanly (took %v):\n%s", took, log)
			}
			t.Logf("exited 0 %v after SIGTERM with %d messages accepted", took, sent)
			if !et.restartable {
				return
			}
			runQrun(t, cfgPath)
			waitReady(t, c)
			waitFor(t, "every accepted message handled once after the restart", 60*time.Second, func() (bool, string) {
				d := depths(t, c)
				return d["in"] == 0 && d["out"] == int64(sent), fmt.Sprintf("%v, %d sent", d, sent)
			})
		})
	}
}

// A second signal during a drain exits at once, with status 1.
func TestSecondSignalForcesExit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "qrun.hcl")
	// ok.wasm loops forever on a body starting with "l"; the consumer's
	// timeout and the drain timeout are long, so only the second signal can
	// end this drain quickly.
	writeFile(t, cfgPath, fmt.Appendf(nil, `
runtime {
  data_dir      = %q
  admin_listen  = %q
  drain_timeout = "5m"
}
engine "e" { type = "memory" }
queue "in" { engine = "e" }
consumer "stuck" {
  queue   = "in"
  plugin  = %q
  timeout = "5m"
}
`, filepath.Join(dir, "data"), addr, repoPath(t, "runtime/plugin/testdata/ok.wasm")))
	p := runQrun(t, cfgPath)
	c := &admin.Client{BaseURL: "http://" + addr}
	waitReady(t, c)
	if _, err := c.Send(context.Background(), "in", admin.SendRequest{SendMessage: admin.SendMessage{Body: "loop"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the looping delivery to start", 30*time.Second, func() (bool, string) {
		qs, err := c.Queues(context.Background())
		if err != nil || len(qs) == 0 {
			return false, fmt.Sprint(err)
		}
		return qs[0].Stats.InFlight == 1, fmt.Sprintf("%+v", qs[0].Stats)
	})
	p.signal(t, syscall.SIGTERM)
	waitFor(t, "the drain to begin", 30*time.Second, func() (bool, string) {
		return strings.Contains(p.stderr.String(), `"msg":"draining"`), "no draining line yet"
	})
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit %d after the second signal, want 1", code)
	}
	if !strings.Contains(p.stderr.String(), "second signal") {
		t.Fatalf("no word of the second signal in the log:\n%s", p.stderr.String())
	}
}

const reloadCmdConfig = `
runtime {
  data_dir     = %q
  admin_listen = %q
  admin_token  = "tok"
}
engine "e" { type = "memory" }
queue "in_a"   { engine = "e" }
queue "in_b"   { engine = "e" }
queue "seen_a" { engine = "e" }
queue "seen_b" { engine = "e" }
consumer "ca" {
  queue   = "in_a"
  plugin  = %q
  publish = ["seen_a", "seen_b"]
}
%s`

// TestReloadCommandAndSIGHUP drives a running qrun's reloads from outside:
// `qrun reload` with a file qrun refuses (exit 2, the diagnostics printed),
// with a good one (exit 0, the changes printed), SIGHUP, and a hot swap of
// the plugin file, each checked through GET /v1/consumers.
func TestReloadCommandAndSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	data := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "qrun.hcl")
	pluginA := filepath.Join(dir, "a.wasm")
	pluginB := filepath.Join(dir, "b.wasm")
	initFail := filepath.Join(dir, "init_fail.wasm")
	tagA, tagB := readRepo(t, "runtime/server/testdata/tag_a.wasm"), readRepo(t, "runtime/server/testdata/tag_b.wasm")
	writeFile(t, pluginA, tagA)
	writeFile(t, pluginB, tagB)
	writeFile(t, initFail, readRepo(t, "runtime/server/testdata/tag_init_fail.wasm"))
	consumerB := func(plugin string) string {
		return fmt.Sprintf("consumer \"cb\" {\n  queue   = \"in_b\"\n  plugin  = %q\n  publish = [\"seen_b\"]\n}\n", plugin)
	}
	config := func(extra string) []byte { return fmt.Appendf(nil, reloadCmdConfig, data, addr, pluginA, extra) }
	writeFile(t, cfgPath, config(""))
	proc := runQrun(t, cfgPath)
	c := &admin.Client{BaseURL: "http://" + addr, Token: "tok"}
	waitReady(t, c)

	reload := func() (int, string) {
		out, err := exec.Command(qrunBin, "reload", "-c", cfgPath).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	consumers := func() []string {
		infos, err := c.Consumers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ci := range infos {
			names = append(names, ci.Name)
		}
		return names
	}

	// qrun itself refuses this one: the file is valid, the plugin's
	// qrun_init fails when qrun starts it.
	writeFile(t, cfgPath, config(consumerB(initFail)))
	if code, out := reload(); code != 2 || !strings.Contains(out, "qrun_init returned 1") || !strings.Contains(out, "qrun.hcl:") {
		t.Fatalf("reload with a failing plugin: exit %d, want 2 with diagnostics:\n%s", code, out)
	}
	// This one fails validation already.
	writeFile(t, cfgPath, append(config(consumerB(pluginB)), "queue \"x\" { engine = \"nope\" }\n"...))
	if code, out := reload(); code != 2 || !strings.Contains(out, "Unknown engine") {
		t.Fatalf("reload with an invalid file: exit %d, want 2:\n%s", code, out)
	}
	if got := consumers(); !slices.Equal(got, []string{"ca"}) {
		t.Fatalf("consumers after refused reloads: %v, want [ca]", got)
	}

	writeFile(t, cfgPath, config(consumerB(pluginB)))
	if code, out := reload(); code != 0 || !strings.Contains(out, `consumer "cb" added`) {
		t.Fatalf("reload: exit %d, want 0 listing the new consumer:\n%s", code, out)
	}
	if got := consumers(); !slices.Equal(got, []string{"ca", "cb"}) {
		t.Fatalf("consumers after reload: %v, want [ca cb]", got)
	}

	writeFile(t, cfgPath, config(""))
	proc.signal(t, syscall.SIGHUP)
	waitFor(t, "SIGHUP to remove cb", 30*time.Second, func() (bool, string) {
		got := consumers()
		return slices.Equal(got, []string{"ca"}), fmt.Sprint(got)
	})

	// Hot swap: replace ca's file by renaming a new one over it.
	writeFile(t, pluginA+".new", tagB)
	if err := os.Rename(pluginA+".new", pluginA); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tagB)
	want := hex.EncodeToString(sum[:])
	waitFor(t, "the new version in GET /v1/consumers", 30*time.Second, func() (bool, string) {
		infos, err := c.Consumers(context.Background())
		if err != nil || len(infos) != 1 {
			return false, fmt.Sprint(infos, err)
		}
		pi := infos[0].Plugin
		return pi.Version == want && pi.Reloads == 1 && pi.FailedReloads == 0, fmt.Sprintf("%+v", pi)
	})
	if _, err := c.Send(context.Background(), "in_a", admin.SendRequest{SendMessage: admin.SendMessage{Body: "after swap"}}); err != nil {
		t.Fatal(err)
	}
	// The new version tags seen_b.
	waitFor(t, "the new version to handle a message", 30*time.Second, func() (bool, string) {
		d := depths(t, c)
		return d["seen_b"] == 1 && d["in_a"] == 0, fmt.Sprint(d)
	})
}
