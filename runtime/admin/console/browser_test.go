package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/internal/testenv"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// The console in a real browser: Debian's chromium, driven by chromedp,
// against an in-process qrun. Every wait is on a DOM condition.

const token = "console-s3cret"

// chromium finds the browser (QRUN_CHROMIUM, or chromium on PATH), or
// skips loudly (fails under QRUN_REQUIRE_TOOLS=1, as CI runs).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("QRUN_CHROMIUM"); p != "" {
		return p
	}
	return testenv.Tool(t, "chromium", "the web console's browser test needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
}

// rig is a running qrun with the console's scenario: "inbox" has no
// consumer (its depth only grows), "work" acks everything, "hooks" calls
// a downstream that the test breaks and fixes, dead-lettering into
// "hooks_dead" on the first failure; the schedule "heartbeat" sends to
// "ticks" every second; "notes" runs the kv script plugin
// (runtime/plugin/testdata/kv.wat) on store "memo".
type rig struct {
	base, cfgPath string
	client        *admin.Client
	logs          *observer.ObservedLogs
	downstreamOK  atomic.Bool
	downstreamHit chan int
	downstream    string
}

func (r *rig) send(t *testing.T, queue string, bodies ...string) {
	t.Helper()
	req := admin.SendRequest{}
	for _, b := range bodies {
		req.Messages = append(req.Messages, admin.SendMessage{Body: b, Attributes: map[string]string{"source": "browser-test"}})
	}
	if _, err := r.client.Send(context.Background(), queue, req); err != nil {
		t.Fatal(err)
	}
}

// hit returns the status of the downstream's next answer.
func (r *rig) hit(t *testing.T) int {
	t.Helper()
	select {
	case s := <-r.downstreamHit:
		return s
	case <-time.After(time.Minute): // a bound on a hang, not a wait
		t.Fatal("the hook never called the downstream")
		return 0
	}
}

func (r *rig) consumer(t *testing.T, name string) admin.ConsumerInfo {
	t.Helper()
	cs, err := r.client.Consumers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no consumer %q", name)
	return admin.ConsumerInfo{}
}

func configText(dir, ack, conformance, kvScript string) string {
	return fmt.Sprintf(`
runtime {
  data_dir    = %q
  admin_token = %q
}
engine "m" { type = "memory" }
queue "inbox" { engine = "m" }
queue "work" { engine = "m" }
queue "hooks" {
  engine       = "m"
  max_attempts = 1
  dead_letter  = "hooks_dead"
}
queue "hooks_dead" { engine = "m" }
queue "ticks" { engine = "m" }
queue "notes" { engine = "m" }
kv "memo" { engine = "m" }
kv "cache" {
  engine         = "m"
  max_value_size = "1KiB"
}
schedule "heartbeat" {
  every = "1s"
  queue = "ticks"
  body  = "beat"
}
schedule "nightly-report" {
  cron      = "0 3 * * *"
  time_zone = "Europe/Paris"
  queue     = "ticks"
}
consumer "work" {
  queue  = "work"
  plugin = %q
}
consumer "hooks" {
  queue  = "hooks"
  plugin = %q
  http {
    allow = ["http://127.0.0.1:*"]
  }
}
consumer "notes" {
  queue  = "notes"
  plugin = %q
  kv     = ["memo"]
}
`, filepath.Join(dir, "data"), token, ack, conformance, kvScript)
}

func startRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{downstreamHit: make(chan int, 100)}
	ds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		status := http.StatusInternalServerError
		if r.downstreamOK.Load() {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		r.downstreamHit <- status
	}))
	t.Cleanup(ds.Close)
	r.downstream = ds.URL
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	dir := t.TempDir()
	r.cfgPath = filepath.Join(dir, "qrun.hcl")
	src := configText(dir, abs("../../plugin/testdata/ack.wasm"), abs("../../../plugins/conformance/wat/conformance.wasm"), abs("../../plugin/testdata/kv.wasm"))
	if err := os.WriteFile(r.cfgPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, diags := config.Load(r.cfgPath, config.Options{Engines: server.Builtin()})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	core, logs := observer.New(zap.InfoLevel)
	r.logs = logs
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, server.Options{Listener: ln, Logger: zap.New(core)})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx) }()
	select {
	case <-srv.Started():
	case <-srv.Done():
	}
	t.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	r.base = "http://" + ln.Addr().String()
	r.client = &admin.Client{BaseURL: r.base, Token: token}
	return r
}

// browser starts a headless chromium with the flags this closed network
// needs, and fails the test on any script exception or CSP violation.
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	// A generous bound for the whole scenario on a loaded 2-core machine;
	// the waits inside are on DOM conditions, not on time.
	ctx, cancelC := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	// Script exceptions and CSP refusals fail the test. (A 401 answer is
	// logged as a failed resource load; the login test causes those.)
	var problems []string
	done := make(chan struct{})
	msgs := chromedp.Console(ctx)
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Refused to") {
				problems = append(problems, fmt.Sprintf("%s: %s", m.Type, m.Text))
			}
		}
	}()
	t.Cleanup(func() {
		cancelC()
		<-done
		for _, p := range problems {
			t.Errorf("browser: %s", p)
		}
	})
	return ctx
}

// setPrefix filters the key-value page's keys as typing p and leaving
// the field would.
func setPrefix(p string) step {
	return until(fmt.Sprintf(`(() => { const e = document.getElementById("kv-prefix"); e.value = %s; e.dispatchEvent(new Event("change")); return true; })()`, js(p)))
}

// kvSet is a command of the kv script plugin: set store's key to val.
func kvSet(store, key, val string) string {
	return "s" + string([]byte{byte(len(store)), byte(len(key)), byte(len(val))}) + store + key + val
}

func js(v string) string {
	b, _ := json.Marshal(v)
	return string(b)
}

type step = chromedp.Action[chromedp.Void]

// until waits until the expression is true in the page.
func until(expr string) step {
	poll := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := poll(ctx, t)
		return chromedp.Void{}, err
	}
}

// textIs waits until the element's trimmed text is want.
func textIs(sel, want string) step {
	return until(fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.textContent.trim() === %s; })()`, js(sel), js(want)))
}

// textHas waits until the element's text contains want.
func textHas(sel, want string) step {
	return until(fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.textContent.includes(%s); })()`, js(sel), js(want)))
}

// polled waits until the open page has refreshed n more times.
func polled(n int) step {
	const count = `Number(document.getElementById("live").dataset.polls || 0)`
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		at, err := chromedp.Evaluate[int](count)(ctx, t)
		if err != nil {
			return chromedp.Void{}, err
		}
		return until(fmt.Sprintf(`%s >= %d`, count, at+n))(ctx, t)
	}
}

func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

func click(sel string) step { return chromedp.Click(css(sel)) }

func visible(sel string) step { return chromedp.WaitVisible(css(sel)) }

func typeIn(sel, text string) step { return chromedp.SendKeys(css(sel), text) }

// confirm accepts the confirmation dialog a mutating action opens.
func confirm() step {
	return chromedp.Steps(visible("#confirm-ok"), click("#confirm-ok"), chromedp.WaitNotVisible(css("#confirm")))
}

func run(t *testing.T, ctx context.Context, what string, steps ...step) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML(css("main")))
		if len(html) > 4000 {
			html = html[:4000]
		}
		t.Fatalf("%s: %v\nmain: %s", what, err, html)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	r := startRig(t)
	ctx := browser(t, exe)
	ui := r.base + "/ui/"

	// A wrong token is refused and shows nothing.
	run(t, ctx, "wrong token",
		chromedp.Navigate(ui),
		visible("#login-token"),
		typeIn("#login-token", "not-the-token"),
		click("#login-submit"),
		textHas("#login-error", "refused"),
		chromedp.WaitNotPresent(css("#queues-body")),
	)
	if stored := eval[string](t, ctx, `sessionStorage.getItem("qrun.token") || ""`); stored != "" {
		t.Fatalf("a refused token stayed in sessionStorage: %q", stored)
	}

	// The right one opens the overview; the token never shows in the URL.
	run(t, ctx, "sign in",
		typeIn("#login-token", token),
		click("#login-submit"),
		visible(`tr[data-queue="inbox"]`),
		textIs(`tr[data-queue="inbox"] [data-col="depth"]`, "0"),
	)
	if loc := eval[string](t, ctx, `location.href`); strings.Contains(loc, token) {
		t.Fatalf("token in the URL %s", loc)
	}

	// A queue's depth follows the messages sent.
	r.send(t, "inbox", `{"order":7,"item":"book"}`, "plain text", "third")
	run(t, ctx, "depth 3", textIs(`tr[data-queue="inbox"] [data-col="depth"]`, "3"))
	r.send(t, "inbox", "fourth", "fifth")
	run(t, ctx, "depth 5", textIs(`tr[data-queue="inbox"] [data-col="depth"]`, "5"))

	// Live updates make one request at a time, each starting at least a
	// second after the previous one ended (a lower bound: load only makes
	// the gaps longer).
	eval[bool](t, ctx, `performance.clearResourceTimings(), true`)
	run(t, ctx, "polls", polled(3))
	gaps := eval[[]float64](t, ctx, `(() => {
		const e = performance.getEntriesByType("resource").filter((r) => r.name.includes("/v1/"));
		return e.slice(1).map((r, i) => r.startTime - e[i].responseEnd);
	})()`)
	if len(gaps) < 2 {
		t.Fatalf("%d requests over 3 polls", len(gaps)+1)
	}
	for _, g := range gaps {
		if g < 990 {
			t.Fatalf("requests %v ms apart, want at least a second", gaps)
		}
	}

	// The queue page pages through its messages and shows a body as JSON.
	run(t, ctx, "queue page",
		click(`tr[data-queue="inbox"] a`),
		visible(`#messages-body tr[data-id]`),
		textHas("#messages-status", "5 messages"),
		click(`#messages-body tr[data-id] button`),
		visible("#message-detail"),
		click(`#message-detail [data-view="json"]`),
		textHas("#message-body", `"order": 7`),
		click(`#message-detail [data-view="hex"]`),
		textHas("#message-body", "7b 22 6f 72"),
		textHas("#message-detail", "browser-test"),
	)
	// Pages of 20, forward and back; then purge.
	bodies := make([]string, 20)
	for i := range bodies {
		bodies[i] = fmt.Sprintf("bulk %d", i)
	}
	r.send(t, "inbox", bodies...)
	run(t, ctx, "paging and purge",
		textIs(`[data-stat="depth"]`, "25"),
		until(`(() => { const s = document.getElementById("page-size"); s.value = "20"; s.dispatchEvent(new Event("change")); return true; })()`),
		textHas("#messages-status", "Page 1: 20 messages."),
		click("#page-next"),
		textHas("#messages-status", "Page 2: 5 messages (end of the queue)"),
		textHas("#messages-body", "bulk 19"),
		click("#page-prev"),
		textHas("#messages-status", "Page 1: 20 messages."),
		click("#queue-purge"),
		confirm(),
		textHas("#messages-body", "No messages waiting."),
		textIs(`[data-stat="depth"]`, "0"),
	)

	// Two dead letters: the downstream fails one hook, the handler refuses
	// the other.
	r.send(t, "hooks", "retry:"+r.downstream, "deadreason:bad input")
	if got := r.hit(t); got != 500 {
		t.Fatalf("downstream answered %d", got)
	}
	run(t, ctx, "dead letters",
		chromedp.Navigate(ui+"#/dead-letters/hooks_dead"),
		textIs(`#dlq-list [data-dlq="hooks_dead"] b`, "2"),
		click("#dl-refresh"),
		until(`document.querySelectorAll("#dl-body tr[data-id]").length === 2`),
		textHas("#dl-body", "bad input"),
	)
	// Fixed downstream: filter on the failed calls' reason, select what the
	// filter shows, redrive it, and see it handled.
	r.downstreamOK.Store(true)
	run(t, ctx, "filter and redrive",
		until(`(() => {
			const s = document.getElementById("dl-reason");
			const o = [...s.options].find((o) => o.text.startsWith("max attempts"));
			if (!o) return false;
			s.value = o.value;
			s.dispatchEvent(new Event("change"));
			return true;
		})()`),
		until(`document.querySelectorAll("#dl-body tr[data-id]").length === 1`),
		textHas("#dl-body tr[data-id]", "retry:"),
		click("#dl-select-all"),
		textHas("#dl-redrive-selected", "1 selected"),
		click("#dl-redrive-selected"),
		confirm(),
		textIs(`#dlq-list [data-dlq="hooks_dead"] b`, "1"),
		until(`document.querySelectorAll("#dl-body tr[data-id]").length === 1`),
		textHas("#dl-body tr[data-id]", "bad input"),
	)
	if got := r.hit(t); got != 200 {
		t.Fatalf("redriven hook: downstream answered %d", got)
	}
	run(t, ctx, "redriven hook handled, purge the other",
		click("#dl-purge"),
		confirm(),
		visible("#dl-empty"),
		textIs(`#dlq-list [data-dlq="hooks_dead"] b`, "0"),
		chromedp.Navigate(ui+"#/consumers"),
		textIs(`[data-consumer="hooks"] [data-field="acked"]`, "1"),
	)

	// Pause a consumer: deliveries stop, the queue fills; resume drains it.
	r.send(t, "work", "before")
	run(t, ctx, "work acks",
		textIs(`[data-consumer="work"] [data-field="acked"]`, "1"),
		click(`[data-consumer="work"] button[data-action="pause"]`),
		confirm(),
		textIs(`[data-consumer="work"] [data-field="state"]`, "paused"),
		visible(`[data-consumer="work"] button[data-action="resume"]`),
	)
	r.send(t, "work", "p1", "p2", "p3")
	run(t, ctx, "paused queue fills",
		chromedp.Navigate(ui+"#/overview"),
		textIs(`tr[data-queue="work"] [data-col="depth"]`, "3"),
	)
	if c := r.consumer(t, "work"); c.State != admin.StatePaused || c.Counts.Acked != 1 {
		t.Fatalf("paused consumer: %+v", c)
	}
	run(t, ctx, "resume",
		chromedp.Navigate(ui+"#/consumers"),
		click(`[data-consumer="work"] button[data-action="resume"]`),
		confirm(),
		textIs(`[data-consumer="work"] [data-field="acked"]`, "4"),
		textIs(`[data-consumer="work"] [data-field="state"]`, "running"),
	)
	// The console's actions went through the API's audit log.
	for what, n := range map[string]int{"admin: dead letters redriven": 1, "admin: queue purged": 2, "admin: consumer paused": 1, "admin: consumer resumed": 1} {
		found := r.logs.FilterMessage(what).FilterField(zap.Bool("token", true))
		if found.Len() != n {
			t.Errorf("audit log has %d %q entries, want %d", found.Len(), what, n)
		}
	}

	// Schedules: the heartbeat is listed with its facts, and its fired
	// count grows while the page is open.
	run(t, ctx, "schedules",
		chromedp.Navigate(ui+"#/schedules"),
		visible(`tr[data-schedule="heartbeat"]`),
		textIs(`tr[data-schedule="heartbeat"] [data-col="expr"]`, "every 1s"),
		textIs(`tr[data-schedule="heartbeat"] [data-col="queue"]`, "ticks"),
		textIs(`tr[data-schedule="heartbeat"] [data-col="time_zone"]`, "UTC"),
		until(`document.querySelector('tr[data-schedule="heartbeat"] [data-col="next"]').textContent !== "–"`),
	)
	const fired = `Number(document.querySelector('tr[data-schedule="heartbeat"] [data-col="fired"]').textContent.replace(/\D/g, "") || 0)`
	before := eval[int](t, ctx, fired)
	run(t, ctx, "schedule fires",
		until(fmt.Sprintf(`%s >= %d`, fired, before+2)),
		until(`document.querySelector('tr[data-schedule="heartbeat"] [data-col="last_tick"]').textContent !== "never"`),
		textIs(`tr[data-schedule="heartbeat"] [data-col="last_error"]`, "–"),
	)

	// Key-value: a key the handler wrote is shown with its value as JSON
	// and its version; a key set from the page, then one deleted.
	r.send(t, "notes", kvSet("memo", "greeting", `{"hello":"world"}`)+kvSet("memo", "zz-old", "bye"))
	run(t, ctx, "kv: an empty store",
		chromedp.Navigate(ui+"#/kv"),
		until(`location.hash === "#/kv/cache"`),
		visible(`#kv-stores a[data-store="memo"]`),
		textHas("#kv-body", "The store is empty."),
	)
	// Pages of 50 keys, forward and back.
	for i := range 55 {
		if _, err := r.client.KVPut(context.Background(), "cache", fmt.Sprintf("k%02d", i), admin.KVPutRequest{Value: "v"}); err != nil {
			t.Fatal(err)
		}
	}
	run(t, ctx, "kv: paging",
		click("#kv-refresh"),
		textHas("#kv-status", "Page 1: 50 keys."),
		click("#kv-next"),
		textHas("#kv-status", "Page 2: 5 keys (the last)"),
		visible(`#kv-body tr[data-key="k54"]`),
		click("#kv-prev"),
		textHas("#kv-status", "Page 1: 50 keys."),
		visible(`#kv-body tr[data-key="k00"]`),
	)
	run(t, ctx, "kv: the handler's key",
		click(`#kv-stores a[data-store="memo"]`),
		visible(`#kv-body tr[data-key="greeting"]`),
		click(`#kv-body tr[data-key="greeting"] button`),
		visible("#kv-detail"),
		textHas("#kv-value", `"hello": "world"`),
		textIs(`#kv-detail [data-field="version"]`, "1"),
		textIs(`#kv-detail [data-field="expires"]`, "never"),
		click(`#kv-detail [data-view="hex"]`),
		textHas("#kv-value", "7b 22 68 65"),
	)
	run(t, ctx, "kv: set a key",
		typeIn("#kv-set-key", "from-console"),
		typeIn("#kv-set-value", "set in the browser"),
		typeIn("#kv-set-ttl", "1h"),
		click("#kv-set-submit"),
		confirm(),
		visible(`#kv-body tr[data-key="from-console"]`),
		textIs(`#kv-detail [data-field="key"]`, "from-console"),
		until(`document.querySelector('#kv-detail [data-field="expires"]').textContent !== "never"`),
		// Edit fills the form with the key and its text value.
		until(`(document.getElementById("kv-set-key").value = "", document.getElementById("kv-set-value").value = "", true)`),
		click("#kv-edit"),
		until(`document.getElementById("kv-set-key").value === "from-console" && document.getElementById("kv-set-value").value === "set in the browser"`),
		// The prefix filter keeps the keys that begin with it.
		setPrefix("from-"),
		until(`[...document.querySelectorAll("#kv-body tr[data-key]")].map((tr) => tr.dataset.key).join() === "from-console"`),
	)
	if e, err := r.client.KVGet(context.Background(), "memo", "from-console"); err != nil || e.Value != "set in the browser" || e.ExpiresAt == nil {
		t.Fatalf("the key set in the browser: %+v, %v", e, err)
	}
	run(t, ctx, "kv: delete a key",
		setPrefix(""),
		until(`[...document.querySelectorAll("#kv-body tr[data-key]")].map((tr) => tr.dataset.key).join() === "from-console,greeting,zz-old"`),
		click(`#kv-body tr[data-key="zz-old"] button`),
		textIs(`#kv-detail [data-field="key"]`, "zz-old"),
		click("#kv-delete"),
		confirm(),
		chromedp.WaitNotPresent(css(`#kv-body tr[data-key="zz-old"]`)),
		until(`[...document.querySelectorAll("#kv-body tr[data-key]")].map((tr) => tr.dataset.key).join() === "from-console,greeting"`),
	)
	if _, err := r.client.KVGet(context.Background(), "memo", "zz-old"); err == nil {
		t.Fatal("the key deleted in the browser is still there")
	}
	// The browser's writes are in the audit log (the paging test's keys
	// came from the Go client).
	fromBrowser := func(e observer.LoggedEntry) bool {
		return strings.Contains(fmt.Sprint(e.ContextMap()["user_agent"]), "Chrome")
	}
	for _, what := range []string{"admin: kv key set", "admin: kv key deleted"} {
		if n := r.logs.FilterMessage(what).FilterField(zap.Bool("token", true)).Filter(fromBrowser).Len(); n != 1 {
			t.Errorf("audit log has %d %q entries from the browser, want 1", n, what)
		}
	}

	// The running config, secrets redacted; a broken file's reload is
	// refused with its diagnostics.
	run(t, ctx, "config",
		chromedp.Navigate(ui+"#/config"),
		textHas("#config-source", `queue "hooks_dead"`),
		textHas("#config-path", "qrun.hcl"),
	)
	src := eval[string](t, ctx, `document.getElementById("config-source").textContent`)
	if strings.Contains(src, token) || !strings.Contains(src, "<redacted>") {
		t.Fatalf("config source shows the token or redacts nothing:\n%s", src)
	}
	good, err := os.ReadFile(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.cfgPath, append(good, []byte("\nqueue \"broken\" { engine = \"nope\" }\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, "reload refused",
		click("#config-reload"),
		confirm(),
		visible("#reload-diagnostics"),
		textHas("#reload-diagnostics", "qrun.hcl:"),
	)
	if err := os.WriteFile(r.cfgPath, good, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, "reload",
		click("#config-reload"),
		confirm(),
		visible("#reload-ok"),
	)

	if n := r.logs.FilterMessage("admin: config reload failed").FilterFieldKey("diagnostics").Len(); n != 1 {
		t.Errorf("%d audit entries for the refused reload, want 1", n)
	}
	if n := r.logs.FilterMessage("admin: config reload").FilterFieldKey("changes").Len(); n != 1 {
		t.Errorf("%d audit entries for the reload, want 1", n)
	}

	// The theme toggle flips the scheme the system asks for and remembers it.
	dark := eval[bool](t, ctx, `matchMedia("(prefers-color-scheme: dark)").matches`)
	want := map[bool]string{true: "light", false: "dark"}[dark]
	run(t, ctx, "theme", click("#theme-toggle"),
		until(fmt.Sprintf(`document.documentElement.dataset.theme === %q && localStorage.getItem("qrun.theme") === %q`, want, want)))
	// Back to following the system, for the screenshots.
	eval[bool](t, ctx, `localStorage.removeItem("qrun.theme"), delete document.documentElement.dataset.theme, true`)

	// Signing out forgets the token.
	run(t, ctx, "sign out",
		click("#logout"),
		visible("#login-token"),
	)
	if stored := eval[string](t, ctx, `sessionStorage.getItem("qrun.token") || ""`); stored != "" {
		t.Fatalf("token kept after signing out: %q", stored)
	}

	if dir := os.Getenv("QRUN_SCREENSHOTS"); dir != "" {
		screenshots(t, ctx, r, dir)
	}
}

// screenshots saves the main pages for docs/console (make screenshots):
// laptop width in dark and light, and a phone.
func screenshots(t *testing.T, ctx context.Context, r *rig, dir string) {
	ui := r.base + "/ui/"
	// Some traffic for the charts: the workers ack it as it comes; the
	// feeder stops when the screenshots are done.
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			req := admin.SendRequest{}
			for j := range 1 + i%7 {
				req.Messages = append(req.Messages, admin.SendMessage{Body: fmt.Sprintf(`{"order":%d}`, i*10+j)})
			}
			_, _ = r.client.Send(context.Background(), "work", req)
			if i%9 == 0 {
				_, _ = r.client.Send(context.Background(), "inbox", admin.SendRequest{SendMessage: admin.SendMessage{
					Body: fmt.Sprintf(`{"order":%d,"customer":"c-%d","items":[{"sku":"b-1","qty":2}]}`, i, i%13), ContentType: "application/json"}})
			}
		}
	}()
	defer func() { close(stop); <-fed }()
	r.downstreamOK.Store(false)
	r.send(t, "hooks", "retry:"+r.downstream, "retry:"+r.downstream+"/v2", "deadreason:customer c-7 unknown")
	r.send(t, "notes", kvSet("memo", "order:1", `{"customer":"c-7","total":"42.50","status":"paid"}`)+
		kvSet("memo", "order:2", `{"customer":"c-3","total":"9.90","status":"shipped"}`)+kvSet("memo", "counter", "1234"))

	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := func(name string) step {
		return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
			png, err := chromedp.CaptureScreenshot()(ctx, t)
			if err != nil {
				return chromedp.Void{}, err
			}
			return chromedp.Void{}, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
		}
	}
	scheme := func(s string) step {
		return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: s}}})
			return err
		})
	}
	laptop := chromedp.EmulateViewport(1280, 800)
	run(t, ctx, "screenshots: sign in",
		laptop, scheme("dark"),
		chromedp.Navigate(ui+"#/overview"),
		visible("#login-token"),
		typeIn("#login-token", token),
		click("#login-submit"),
		visible(`tr[data-queue="work"]`),
		polled(25),
		shot("overview-dark"),
		chromedp.Navigate(ui+"#/queue/inbox"),
		visible(`#messages-body tr[data-id]`),
		click(`#messages-body tr[data-id] button`),
		visible("#message-detail"),
		polled(3),
		shot("queue-dark"),
		chromedp.Navigate(ui+"#/dead-letters/hooks_dead"),
		textIs(`#dlq-list [data-dlq="hooks_dead"] b`, "3"),
		click("#dl-refresh"),
		visible(`#dl-body tr[data-id]`),
		click(`#dl-body tr[data-id] input[type="checkbox"]`),
		shot("dead-letters-dark"),
		scheme("light"),
		chromedp.Navigate(ui+"#/consumers"),
		visible(`[data-consumer="hooks"]`),
		polled(2),
		shot("consumers-light"),
		chromedp.Navigate(ui+"#/kv/memo"),
		visible(`#kv-body tr[data-key="order:1"]`),
		click(`#kv-body tr[data-key="order:1"] button`),
		textHas("#kv-value", "customer"),
		shot("kv-light"),
		scheme("dark"),
		chromedp.Navigate(ui+"#/schedules"),
		visible(`tr[data-schedule="nightly-report"]`),
		polled(2),
		shot("schedules-dark"),
		chromedp.Navigate(ui+"#/config"),
		textHas("#config-source", "hooks_dead"),
		shot("config-dark"),
		chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Navigate(ui+"#/overview"),
		visible(`tr[data-queue="work"]`),
		polled(5),
		shot("phone-overview-dark"),
	)
}
