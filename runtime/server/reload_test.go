package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/plugin"
	"github.com/qrun-dev/qrun/runtime/server"
)

func reloadWasm(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".wasm"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// engineTypes are the engines the reload tests run on. An engine whose type
// is not built into this qrun yet is skipped by name, so adding it to
// server.Builtin() is all it takes to cover it. exactlyOnce engines must
// handle every message once; the others at least once. settings returns the
// engine block's own attributes, for names a test must not share with
// another.
var engineTypes = []struct {
	typ         string
	exactlyOnce bool
	settings    func(tb testing.TB) string
}{
	{"memory", true, nil},
	{"disk", true, nil},
	{"shm", false, func(tb testing.TB) string { return fmt.Sprintf("prefix = %q", shmPrefix(tb)) }},
	{"posixmq", false, func(tb testing.TB) string {
		return fmt.Sprintf("prefix = %q\n  spill = 100000", mqPrefix(tb, "in", "in_a", "in_b"))
	}},
}

// engineBlock is the `engine "e"` block of a test config for et.
func engineBlock(tb testing.TB, typ string, settings func(testing.TB) string) string {
	extra := ""
	if settings != nil {
		extra = "\n  " + settings(tb)
	}
	return fmt.Sprintf("engine \"e\" {\n  type = %q%s\n}\n", typ, extra)
}

func requireEngine(t *testing.T, typ string) {
	t.Helper()
	if !slices.Contains(server.Builtin().EngineTypes(), typ) {
		t.Skipf("SKIP: engine type %q is not built into this qrun (server.Builtin has %v)", typ, server.Builtin().EngineTypes())
	}
	if err := server.Builtin().EngineAvailable(typ); err != nil {
		t.Skipf("SKIP: %v", err)
	}
}

// ledger is an Observer that records every settled delivery by message ID.
type ledger struct {
	mu       sync.Mutex
	byID     map[string][]engines.Verdict
	n        atomic.Int64
	progress chan struct{}
}

func newLedger() *ledger {
	return &ledger{byID: map[string][]engines.Verdict{}, progress: make(chan struct{}, 1)}
}

func (l *ledger) Settled(d *engines.Delivery, v engines.Verdict, _ time.Duration) {
	l.mu.Lock()
	l.byID[d.ID] = append(l.byID[d.ID], v)
	l.mu.Unlock()
	l.n.Add(1)
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

// waitSettled waits until n deliveries settled.
func (l *ledger) waitSettled(t *testing.T, n int64) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for l.n.Load() < n {
		select {
		case <-l.progress:
		case <-deadline:
			t.Fatalf("%d of %d deliveries settled", l.n.Load(), n)
		}
	}
}

// producer enqueues numbered messages to a queue, never more than max
// ahead of the ledger, until stopped; it returns the IDs it sent.
type producer struct {
	stop chan struct{}
	done chan []string
}

func produce(t *testing.T, srv *server.Server, queue, prefix string, l *ledger, max int64) *producer {
	t.Helper()
	p := &producer{stop: make(chan struct{}), done: make(chan []string, 1)}
	go func() {
		var ids []string
		defer func() { p.done <- ids }()
		base := l.n.Load()
		for i := 0; ; {
			select {
			case <-p.stop:
				return
			default:
			}
			if int64(len(ids))-(l.n.Load()-base) > max {
				select {
				case <-l.progress:
				case <-p.stop:
					return
				case <-time.After(10 * time.Millisecond):
					// The ledger may be shared with another producer's
					// queue; look again rather than wait for ours alone.
				}
				continue
			}
			msgs := make([]engines.Message, 10)
			for j := range msgs {
				msgs[j].Body = fmt.Appendf(nil, "%s-%d", prefix, i)
				i++
			}
			if err := srv.Enqueue(context.Background(), queue, msgs); err != nil {
				t.Errorf("enqueue: %v", err)
				return
			}
			for j := range msgs {
				ids = append(ids, msgs[j].ID)
			}
		}
	}()
	return p
}

func (p *producer) finish() []string {
	close(p.stop)
	return <-p.done
}

// drain receives and acks everything in a queue, returning the bodies.
func drain(t *testing.T, srv *server.Server, name string) []string {
	t.Helper()
	q, err := srv.Queue(name)
	if err != nil {
		t.Fatal(err)
	}
	st, err := q.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	buf := make([]engines.Delivery, 256)
	for int64(len(out)) < st.Depth() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := q.Receive(ctx, buf)
		cancel()
		if err != nil {
			t.Fatalf("draining %s after %d of %d: %v", name, len(out), st.Depth(), err)
		}
		for i := range buf[:n] {
			out = append(out, string(buf[i].Body))
			if err := buf[i].Ack(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

// waitLive waits, on the plugin's change notifications, until cond holds.
func waitLive(t *testing.T, l *plugin.Live, what string, cond func(plugin.Status) bool) plugin.Status {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		ch := l.Changed()
		if st := l.Status(); cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; status %+v", what, l.Status())
		}
	}
}

// replaceFile puts b at path the way deployments do: even steps rename a
// new file over it, odd steps rewrite it in place.
func replaceFile(t *testing.T, path string, b []byte, step int) {
	t.Helper()
	if step%2 == 1 {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestPluginHotSwapUnderLoad replaces a consumer's plugin file 20 times
// while producers keep sending, alternating two versions that tag what they
// handle (publishing each body to seen_a or seen_b), with three bad files in
// between: garbage, a module without the ABI marker and one whose qrun_init
// fails (both of which would tag seen_bad if they ever ran). Every message
// must be handled exactly once, by a good version, with no failure.
func TestPluginHotSwapUnderLoad(t *testing.T) {
	// Not parallel: the load it generates would starve the timing-bound
	// containment test running beside it.
	for _, et := range engineTypes {
		t.Run(et.typ, func(t *testing.T) {
			requireEngine(t, et.typ)
			dir := t.TempDir()
			pluginPath := filepath.Join(dir, "handler.wasm")
			if err := os.WriteFile(pluginPath, reloadWasm(t, "tag_a"), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := parse(t, fmt.Sprintf(`
runtime {
  admin_listen = "off"
  data_dir     = %q
}
%s
# What the handler publishes goes to memory, whatever engine is tested.
engine "tags" { type = "memory" }
queue "in"       { engine = "e" }
queue "seen_a"   { engine = "tags" }
queue "seen_b"   { engine = "tags" }
queue "seen_bad" { engine = "tags" }
consumer "tagger" {
  queue       = "in"
  plugin      = %q
  concurrency = 2
  publish     = ["seen_a", "seen_b", "seen_bad"]
}`, filepath.Join(dir, "data"), engineBlock(t, et.typ, et.settings), pluginPath))
			led := newLedger()
			srv := start(t, cfg, server.Options{Observer: led})
			live, ok := srv.Live("tagger")
			if !ok {
				t.Fatal("no consumer tagger")
			}
			prod := produce(t, srv, "in", "m", led, 200)

			good := [][]byte{reloadWasm(t, "tag_a"), reloadWasm(t, "tag_b")}
			bad := map[int][]byte{
				4:  []byte("\x00asm\x01\x00\x00\x00 truncated garbage"),
				9:  reloadWasm(t, "tag_no_marker"),
				15: reloadWasm(t, "tag_init_fail"),
			}
			swaps, failed := 0, 0
			for step := 0; swaps < 20; step++ {
				if b, ok := bad[step]; ok {
					before := live.Status()
					replaceFile(t, pluginPath, b, step)
					failed++
					st := waitLive(t, live, fmt.Sprintf("bad file %d refused", failed),
						func(st plugin.Status) bool { return st.FailedReloads == int64(failed) })
					if st.Digest != before.Digest {
						t.Fatalf("a refused file changed the version to %s", st.Digest)
					}
					continue
				}
				swaps++
				b := good[swaps%2]
				replaceFile(t, pluginPath, b, step)
				// Each version must serve before the next replaces it, so all
				// 20 swaps happen under load.
				waitLive(t, live, fmt.Sprintf("swap %d serving", swaps), func(st plugin.Status) bool {
					return st.Digest == digest(b) && !st.FirstDeliveryAt.IsZero()
				})
			}
			ids := prod.finish()
			led.waitSettled(t, int64(len(ids)))

			led.mu.Lock()
			for _, id := range ids {
				v := led.byID[id]
				if et.exactlyOnce && (len(v) != 1 || v[0] != engines.Ack) {
					t.Errorf("message %s settled %v, want exactly one ack", id, v)
				}
				if !et.exactlyOnce && (len(v) == 0 || v[len(v)-1] != engines.Ack) {
					t.Errorf("message %s settled %v, want at least one, ending in an ack", id, v)
				}
			}
			if len(led.byID) != len(ids) {
				t.Errorf("%d messages settled, %d sent", len(led.byID), len(ids))
			}
			led.mu.Unlock()

			a, b := drain(t, srv, "seen_a"), drain(t, srv, "seen_b")
			if bad := drain(t, srv, "seen_bad"); len(bad) > 0 {
				t.Fatalf("a refused version handled %d messages", len(bad))
			}
			if len(a) == 0 || len(b) == 0 {
				t.Fatalf("seen_a %d, seen_b %d: both versions must have served", len(a), len(b))
			}
			seen := map[string]int{}
			for _, body := range append(a, b...) {
				seen[body]++
			}
			for body, n := range seen {
				if n != 1 && et.exactlyOnce {
					t.Errorf("%s handled %d times", body, n)
				}
			}
			if len(seen) != len(ids) {
				t.Errorf("%d distinct bodies handled, %d sent", len(seen), len(ids))
			}
			st := srv.Consumers()[0].Stats()
			if st.Nacked != 0 || st.Traps != 0 || st.Timeouts != 0 || st.InstanceErrors != 0 || st.LeaseLost != 0 {
				t.Fatalf("failures during swaps: %+v", st)
			}
			final := waitLive(t, live, "replaced versions released", func(st plugin.Status) bool { return st.Versions == 1 })
			if final.Reloads != 20 || final.FailedReloads != 3 {
				t.Fatalf("status %+v, want 20 reloads and 3 failed", final)
			}
			if final.LastError == "" || !strings.Contains(final.LastError, "qrun_init") {
				t.Fatalf("last error %q should say qrun_init failed", final.LastError)
			}
			t.Logf("%d messages through 20 swaps; version A handled %d, B %d", len(ids), len(a), len(b))
		})
	}
}

const reloadConfig = `
runtime {
  admin_listen  = "off"
  data_dir      = %q
  drain_timeout = %q
}
%s
engine "tags" { type = "memory" }
queue "in_a"   { engine = "e" }
queue "in_b"   { engine = "e" }
queue "seen_a" { engine = "tags" }
queue "seen_b" { engine = "tags" }
%s
`

// TestConfigReloadUnderLoad adds one consumer and removes another while
// producers feed both queues, then tries invalid files, which must change
// nothing: the diagnostics come back with file:line:col, and the consumer
// keeps running.
func TestConfigReloadUnderLoad(t *testing.T) {
	// Not parallel: the load it generates would starve the timing-bound
	// containment test running beside it.
	for _, et := range engineTypes {
		t.Run(et.typ, func(t *testing.T) {
			requireEngine(t, et.typ)
			dir := t.TempDir()
			tagA, tagB := filepath.Join(dir, "a.wasm"), filepath.Join(dir, "b.wasm")
			initFail := filepath.Join(dir, "init_fail.wasm")
			for path, name := range map[string]string{tagA: "tag_a", tagB: "tag_b", initFail: "tag_init_fail"} {
				if err := os.WriteFile(path, reloadWasm(t, name), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data := filepath.Join(dir, "data")
			consumerA := fmt.Sprintf(`consumer "ca" {
  queue   = "in_a"
  plugin  = %q
  publish = ["seen_a"]
}`, tagA)
			consumerB := fmt.Sprintf(`consumer "cb" {
  queue       = "in_b"
  plugin      = %q
  publish     = ["seen_b"]
  concurrency = %%d
}`, tagB)
			eb := engineBlock(t, et.typ, et.settings)
			cfg := parse(t, fmt.Sprintf(reloadConfig, data, "30s", eb, consumerA))
			write := func(src string) {
				t.Helper()
				if err := os.WriteFile(cfg.Path, []byte(src), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			led := newLedger()
			srv := start(t, cfg, server.Options{Observer: led, Listener: ln})
			c := &admin.Client{BaseURL: "http://" + ln.Addr().String()}
			ctx := context.Background()

			pa := produce(t, srv, "in_a", "a", led, 100)
			pb := produce(t, srv, "in_b", "b", led, 100)
			// Let ca handle some under load, while in_b piles up unhandled.
			led.waitSettled(t, 500)

			write(fmt.Sprintf(reloadConfig, data, "5s", eb, fmt.Sprintf(consumerB, 2)))
			res, err := c.Reload(ctx)
			if err != nil {
				t.Fatalf("reload: %v", err)
			}
			// Nothing consumes in_a any more: stop feeding it before a
			// bounded engine (an shm ring) fills up.
			idsA := pa.finish()
			// These must stay in in_a: nothing consumes it now.
			const afterRemoval = 50
			late := make([]engines.Message, afterRemoval)
			for i := range late {
				late[i].Body = fmt.Appendf(nil, "late-%d", i)
			}
			if err := srv.Enqueue(ctx, "in_a", late); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{`consumer "ca" removed`, `consumer "cb" added`, "runtime.drain_timeout: 30s -> 5s"} {
				if !slices.Contains(res.Changes, want) {
					t.Errorf("changes %q lack %q", res.Changes, want)
				}
			}
			infos, err := c.Consumers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != 1 || infos[0].Name != "cb" || infos[0].Plugin.Version != digest(reloadWasm(t, "tag_b")) {
				t.Fatalf("consumers after reload: %+v", infos)
			}
			// cb works through in_b's backlog and what keeps coming.
			n := led.n.Load()
			led.waitSettled(t, n+500)

			// Invalid files change nothing, and say where the problem is.
			for _, bad := range []struct {
				name, src, want string
			}{
				{"unknown engine", strings.Replace(fmt.Sprintf(reloadConfig, data, "5s", eb, fmt.Sprintf(consumerB, 2)),
					`queue "in_a"   { engine = "e" }`, `queue "in_a"   { engine = "nope" }`, 1),
					fmt.Sprintf("qrun.hcl:%d:27: ", lineOf(fmt.Sprintf(reloadConfig, data, "5s", eb, ""), `queue "in_a"`))},
				{"syntax error", "engine \"e\" {\n  type = \n}\n", "qrun.hcl:2:"},
				{"plugin whose qrun_init fails", fmt.Sprintf(reloadConfig, data, "5s", eb,
					strings.Replace(fmt.Sprintf(consumerB, 3), tagB, initFail, 1)), "qrun_init returned 1"},
			} {
				write(bad.src)
				_, err := c.Reload(ctx)
				var ice *admin.InvalidConfigError
				if !errors.As(err, &ice) || !strings.Contains(ice.Diagnostics, bad.want) {
					t.Fatalf("%s: reload returned %v, want diagnostics containing %q", bad.name, err, bad.want)
				}
				infos, err := c.Consumers(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(infos) != 1 || infos[0].Name != "cb" || infos[0].Concurrency != 2 {
					t.Fatalf("%s: consumers after a refused reload: %+v", bad.name, infos)
				}
			}
			// Still consuming.
			n = led.n.Load()
			led.waitSettled(t, n+200)

			// A changed consumer is replaced without losing anything.
			write(fmt.Sprintf(reloadConfig, data, "5s", eb, fmt.Sprintf(consumerB, 3)))
			if res, err = c.Reload(ctx); err != nil || !slices.Contains(res.Changes, `consumer "cb" changed`) {
				t.Fatalf("changing cb: %+v, %v", res, err)
			}
			n = led.n.Load()
			led.waitSettled(t, n+200)

			idsB := pb.finish()
			// Everything sent to in_b is handled (exactly once where the
			// engine promises it); what went to in_a after ca left is still
			// there, none of it lost.
			want := map[string]int64{"in_b": 0}
			if et.exactlyOnce {
				want["seen_b"] = int64(len(idsB))
			}
			waitDepths(t, srv, 60*time.Second, want)
			d := depths(t, srv)
			sentA := int64(len(idsA) + afterRemoval)
			if et.exactlyOnce && d["in_a"]+d["seen_a"] != sentA || d["in_a"]+d["seen_a"] < sentA {
				t.Fatalf("in_a %d + seen_a %d, %d sent: messages lost or handled twice", d["in_a"], d["seen_a"], sentA)
			}
			if d["in_a"] < afterRemoval {
				t.Fatalf("in_a holds %d, want at least the %d sent after ca was removed: ca kept consuming", d["in_a"], afterRemoval)
			}
			seen := map[string]bool{}
			for _, body := range drain(t, srv, "seen_b") {
				if seen[body] && et.exactlyOnce {
					t.Fatalf("%s handled twice", body)
				}
				seen[body] = true
			}
			if len(seen) != len(idsB) {
				t.Fatalf("%d distinct messages of in_b handled, %d sent", len(seen), len(idsB))
			}
			for _, c := range srv.Consumers() {
				if st := c.Stats(); st.Nacked != 0 || st.Traps != 0 || st.InstanceErrors != 0 {
					t.Fatalf("consumer %s failures: %+v", c.Name(), st)
				}
			}
		})
	}
}

// A reload can add an engine with queues and a consumer on it, and remove
// them again.
func TestConfigReloadAddsEngine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tagA := filepath.Join(dir, "a.wasm")
	if err := os.WriteFile(tagA, reloadWasm(t, "tag_a"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := "runtime {\n  admin_listen = \"off\"\n}\nengine \"m\" { type = \"memory\" }\nqueue \"q\" { engine = \"m\" }\n"
	extra := fmt.Sprintf(`
engine "m2" { type = "memory" }
queue "in2"    { engine = "m2" }
queue "seen_a" { engine = "m2" }
consumer "c2" {
  queue   = "in2"
  plugin  = %q
  publish = ["seen_a"]
}
`, tagA)
	cfg := parse(t, base)
	led := newLedger()
	srv := start(t, cfg, server.Options{Observer: led})
	if err := os.WriteFile(cfg.Path, []byte(base+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := srv.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`engine "m2" added`, `queue "in2" added`, `consumer "c2" added`} {
		if !slices.Contains(res.Changes, want) {
			t.Fatalf("changes %q lack %q", res.Changes, want)
		}
	}
	if err := srv.Enqueue(context.Background(), "in2", []engines.Message{{Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	led.waitSettled(t, 1)
	waitDepths(t, srv, 10*time.Second, map[string]int64{"seen_a": 1})

	if err := os.WriteFile(cfg.Path, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err = srv.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`engine "m2" removed`, `consumer "c2" removed`} {
		if !slices.Contains(res.Changes, want) {
			t.Fatalf("changes %q lack %q", res.Changes, want)
		}
	}
	if _, err := srv.Queue("in2"); err == nil {
		t.Fatal("queue in2 still served after its removal")
	}
	if len(srv.Consumers()) != 0 {
		t.Fatalf("%d consumers left, want 0", len(srv.Consumers()))
	}
}

// lineOf is the 1-based line of src on which sub first appears.
func lineOf(src, sub string) int {
	return strings.Count(src[:strings.Index(src, sub)], "\n") + 1
}
