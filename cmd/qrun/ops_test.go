package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// qrunRun runs the qrun binary and returns its stdout, stderr and exit code.
func qrunRun(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(qrunBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// benchEngines are the engines qrun bench is proven against: adding an
// engine is adding a row.
var benchEngines = []struct{ name, block string }{
	{"memory", `engine "e" { type = "memory" }`},
}

func TestBench(t *testing.T) {
	t.Parallel()
	for _, eng := range benchEngines {
		for _, tc := range []struct {
			name, plugin, verdict string
			args                  []string
		}{
			{"ack", "plugins/examples/wat/forward/forward.wasm", "ack", []string{"--producers", "2", "--batch", "16"}},
			{"dead-letter", "runtime/plugin/testdata/deadletter.wasm", "dead_letter", []string{"--size", "0"}},
			{"paced", "plugins/examples/wat/forward/forward.wasm", "ack", []string{"--rate", "20000"}},
		} {
			t.Run(eng.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				cfg := filepath.Join(dir, "bench.hcl")
				src := fmt.Sprintf(`%s
queue "q" {
  engine      = "e"
  dead_letter = "q_dead"
}
queue "q_dead" { engine = "e" }
consumer "c" {
  queue       = "q"
  plugin      = %q
  concurrency = 2
}
`, eng.block, repoPath(t, tc.plugin))
				if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
					t.Fatal(err)
				}
				const n = 3000
				args := append([]string{"bench", "-c", cfg, "-q", "q", "-n", fmt.Sprint(n), "--json"}, tc.args...)
				out, errOut, code := qrunRun(t, nil, args...)
				if code != 0 {
					t.Fatalf("qrun bench exited %d:\n%s\n%s", code, out, errOut)
				}
				var r struct {
					Messages   int                `json:"messages"`
					Throughput float64            `json:"throughput_per_second"`
					Latency    map[string]float64 `json:"latency_seconds"`
					Verdicts   map[string]int     `json:"verdicts"`
					EngineType string             `json:"engine_type"`
				}
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					t.Fatalf("bench --json printed %q: %v", out, err)
				}
				l := r.Latency
				if r.Messages != n || r.Verdicts[tc.verdict] != n || r.Throughput <= 0 || r.EngineType != eng.name {
					t.Fatalf("result %+v: want %d %s verdicts on %s", r, n, tc.verdict, eng.name)
				}
				if !(0 < l["p50"] && l["p50"] <= l["p90"] && l["p90"] <= l["p99"] && l["p99"] <= l["max"]) {
					t.Fatalf("latency percentiles out of order: %v", l)
				}

				// The text form prints the same figures.
				out, errOut, code = qrunRun(t, nil, "bench", "-c", cfg, "-q", "q", "-n", "500")
				if code != 0 {
					t.Fatalf("qrun bench exited %d:\n%s\n%s", code, out, errOut)
				}
				for _, want := range []string{"msgs/s", "p50 ", "p90 ", "p99 ", "max ", tc.verdict + " 500"} {
					if !strings.Contains(out, want) {
						t.Errorf("bench output lacks %q:\n%s", want, out)
					}
				}
			})
		}
	}
}

func TestBenchRefusesBadUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "q.hcl")
	if err := os.WriteFile(cfg, []byte("engine \"e\" { type = \"memory\" }\nqueue \"lonely\" { engine = \"e\" }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "-c", cfg}, "missing -q"},
		{[]string{"bench", "-c", cfg, "-q", "nope"}, `queue "nope" is not in the config`},
		{[]string{"bench", "-c", cfg, "-q", "lonely"}, "no consumer reads queue"},
		{[]string{"bench", "-c", cfg, "-q", "lonely", "-n", "0"}, "at least 1"},
		{[]string{"bench", "-c", cfg, "-q", "lonely", "--rate", "-5"}, "--rate"},
	} {
		_, errOut, code := qrunRun(t, nil, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("qrun %v: exit %d, want 2 with %q:\n%s", tc.args, code, tc.want, errOut)
		}
	}
}

// TestOperatorCommands drives stats, consumers, pause, resume and dlq
// against a running qrun whose handler dead-letters everything.
func TestOperatorCommands(t *testing.T) {
	t.Parallel()
	srv := startQrun(t, "s3cret", "", fmt.Sprintf(`
engine "m" { type = "memory" }
queue "jobs" {
  engine      = "m"
  dead_letter = "jobs_dead"
}
queue "jobs_dead" { engine = "m" }
consumer "worker" {
  queue  = "jobs"
  plugin = %q
}
`, repoPath(t, "runtime/plugin/testdata/deadletter.wasm")))
	cfg, addr, c := srv.cfg, srv.addr, srv.c
	ctx := context.Background()
	resp, err := c.Send(ctx, "jobs", admin.SendRequest{Messages: []admin.SendMessage{{Body: "one"}, {Body: "two"}, {Body: "three"}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 dead letters", 20*time.Second, func() (bool, string) {
		d := depths(t, c)
		return d["jobs_dead"] == 3, fmt.Sprint(d)
	})

	run := func(wantCode int, env []string, args ...string) string {
		t.Helper()
		out, errOut, code := qrunRun(t, env, args...)
		if code != wantCode {
			t.Fatalf("qrun %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, wantCode, out, errOut)
		}
		return out + errOut
	}
	contains := func(out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Fatalf("output lacks %q:\n%s", w, out)
			}
		}
	}

	contains(run(0, nil, "stats", "-c", cfg), "QUEUE", "jobs -> jobs_dead", "jobs_dead")
	var st struct {
		Queues []admin.QueueInfo `json:"queues"`
	}
	if err := json.Unmarshal([]byte(run(0, nil, "stats", "-c", cfg, "--json")), &st); err != nil || len(st.Queues) != 2 {
		t.Fatalf("stats --json: %+v, %v", st, err)
	}
	watch := run(0, nil, "stats", "-c", cfg, "--watch", "--count", "2", "--interval", "10ms")
	if n := strings.Count(watch, "qrun stats "); n != 2 {
		t.Fatalf("--watch --count 2 printed %d tables:\n%s", n, watch)
	}
	contains(watch, "ACK/S")

	// The address and token can come from flags and the environment.
	contains(run(0, nil, "consumers", "--addr", addr, "--token", "s3cret"), "worker", "running")
	contains(run(0, []string{"QRUN_ADMIN_TOKEN=s3cret"}, "consumers", "--addr", addr), "worker")
	contains(run(1, nil, "consumers", "--addr", addr), "401")
	contains(run(1, nil, "consumers", "--addr", freeAddr(t)), "is qrun running")

	contains(run(0, nil, "pause", "worker", "-c", cfg), "consumer worker: paused")
	var cs struct {
		Consumers []admin.ConsumerInfo `json:"consumers"`
	}
	if err := json.Unmarshal([]byte(run(0, nil, "consumers", "-c", cfg, "--json")), &cs); err != nil || len(cs.Consumers) != 1 || cs.Consumers[0].State != "paused" || cs.Consumers[0].Counts.DeadLettered != 3 {
		t.Fatalf("consumers --json: %+v, %v", cs, err)
	}
	contains(run(0, nil, "resume", "-c", cfg, "worker"), "consumer worker: running")
	contains(run(1, nil, "pause", "nobody", "-c", cfg), "unknown consumer")

	contains(run(0, nil, "dlq", "list", "-c", cfg), "jobs_dead", "3", "jobs")
	// "jobs" names the queue whose dead-letter queue is meant.
	contains(run(0, nil, "dlq", "show", "jobs", "-c", cfg), resp.IDs[0], "reason: dead-lettered by handler", "from jobs", "body (3 B): one")
	contains(run(0, nil, "dlq", "redrive", "jobs_dead", "--id", resp.IDs[1], "-c", cfg), "redrove 1 message")
	// The handler still dead-letters: the redriven message comes back.
	waitFor(t, "the redriven message handled again", 20*time.Second, func() (bool, string) {
		info, err := c.Consumer(ctx, "worker")
		return err == nil && info.Counts.DeadLettered == 4, fmt.Sprint(info.Counts, err)
	})
	contains(run(2, nil, "dlq", "purge", "jobs_dead", "-c", cfg), "--yes")
	waitFor(t, "the dead-letter queue to settle", 20*time.Second, func() (bool, string) {
		d := depths(t, c)
		return d["jobs_dead"] == 3 && d["jobs"] == 0, fmt.Sprint(d)
	})
	contains(run(0, nil, "dlq", "purge", "jobs_dead", "--yes", "-c", cfg), "purged 3 message")
	contains(run(0, nil, "dlq", "show", "jobs_dead", "-c", cfg), "jobs_dead is empty")
	contains(run(2, nil, "dlq", "frob", "-c", cfg), "unknown dlq subcommand")
}

// TestDLQShowsTheHandlersReason: a reason the handler gives with set_reason
// (runtime/plugin/testdata/reason.wat: body "3s<text>" dead-letters with
// reason <text>) is what `qrun dlq show` prints, end to end.
func TestDLQShowsTheHandlersReason(t *testing.T) {
	t.Parallel()
	srv := startQrun(t, "", "", fmt.Sprintf(`
engine "m" { type = "memory" }
queue "hooks" {
  engine      = "m"
  dead_letter = "hooks_dead"
}
queue "hooks_dead" { engine = "m" }
consumer "deliver" {
  queue  = "hooks"
  plugin = %q
}
`, repoPath(t, "runtime/plugin/testdata/reason.wasm")))
	cfg, c := srv.cfg, srv.c
	ctx := context.Background()
	if _, err := c.Send(ctx, "hooks", admin.SendRequest{Messages: []admin.SendMessage{{Body: "3swebhook: 404 Not Found"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dead letter", 20*time.Second, func() (bool, string) {
		d := depths(t, c)
		return d["hooks_dead"] == 1, fmt.Sprint(d)
	})
	out, errOut, code := qrunRun(t, nil, "dlq", "show", "hooks", "-c", cfg)
	if code != 0 || !strings.Contains(out, "reason: webhook: 404 Not Found") {
		t.Fatalf("dlq show: exit %d\n%s%s\nwant the handler's reason", code, out, errOut)
	}
}
