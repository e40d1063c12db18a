package conformance_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// cacheDir is a compilation cache shared by every host in the package's
// tests, so each module is compiled once (the Go one takes seconds under
// the race detector) however many tests load it.
var cacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qrun-conformance-cache")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cacheDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newHost returns a host on the shared cache, logging to log (nil: nowhere).
func newHost(t testing.TB, log *zap.Logger) *plugin.Host {
	t.Helper()
	h, err := plugin.NewHost(context.Background(), plugin.HostOptions{CacheDir: cacheDir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

// Languages lists the conformance modules: plugins/conformance/<lang>/conformance.wasm.
var languages = []string{"go", "rust", "c", "assemblyscript", "zig", "wat"}

// published is one message a guest published.
type published struct {
	Queue string
	Body  string
	Attrs map[string]string
}

func (p published) String() string {
	return fmt.Sprintf("%s <- %q %v", p.Queue, p.Body, p.Attrs)
}

// sink is the Publisher the guests publish through. Queue "broken" fails
// like an engine that is down.
type sink struct {
	mu   sync.Mutex
	msgs []published
}

func (s *sink) Publish(_ context.Context, queue string, m engines.Message) error {
	if queue == "broken" {
		return errors.New("engine down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var attrs map[string]string
	if len(m.Attributes) > 0 {
		attrs = maps.Clone(m.Attributes)
	}
	s.msgs = append(s.msgs, published{queue, string(m.Body), attrs})
	return nil
}

// take returns and forgets what was published.
func (s *sink) take() []published {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.msgs
	s.msgs = nil
	return out
}

// settler records lease extensions, or refuses them as an engine does once
// the lease is lost; settling is the dispatcher's job and not exercised here.
type settler struct {
	lost     bool
	extended []time.Duration
}

func (*settler) Settle(context.Context, engines.Ticket, engines.Settlement) error { return nil }
func (s *settler) Extend(_ context.Context, _ engines.Ticket, d time.Duration) (time.Time, error) {
	if s.lost {
		return time.Time{}, engines.ErrLeaseLost
	}
	s.extended = append(s.extended, d)
	return time.Now().Add(d), nil
}

// step is one delivery and everything observable about its handling.
type step struct {
	body    string
	attrs   map[string]string
	attempt int // 0 means 1

	verdict engines.Verdict
	err     error // the plugin.Err* the result must wrap; nil for a normal verdict
	delay   time.Duration
	reason  string // the set_reason text the result carries
	pub     []published
	log     string // a guest log line at info level that must appear

	lostLease bool          // the engine refuses lease extensions
	extended  time.Duration // the one lease extension that must reach the engine
}

func out(body string) []published { return []published{{Queue: "out", Body: body}} }

var (
	long300  = strings.Repeat("v", 300)    // past every SDK's first read buffer
	long1000 = strings.Repeat("c", 1000)   // ditto, for config
	big      = strings.Repeat("b", 100000) // makes the guest grow its memory
)

// many is more attributes than any fixed-size table in a guest would hold.
var many = func() map[string]string {
	m := make(map[string]string, 100)
	for i := range 100 {
		m[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", i)
	}
	return m
}()

// script is the behaviour every conformance module implements; see
// README.md beside this file. Each case runs on a fresh instance, its steps
// in order on that one instance.
var script = []struct {
	name  string
	steps []step
}{
	{"verdict ack", []step{{body: "verdict:0", verdict: engines.Ack}}},
	{"verdict nack", []step{{body: "verdict:1", verdict: engines.Nack}}},
	{"verdict requeue", []step{{body: "verdict:2", verdict: engines.Requeue}}},
	{"verdict dead-letter", []step{{body: "verdict:3", verdict: engines.DeadLetter}}},
	{"bad verdict", []step{{body: "verdict:7", verdict: engines.Nack, err: plugin.ErrBadVerdict}}},
	{"negative verdict", []step{{body: "verdict:-1", verdict: engines.Nack, err: plugin.ErrBadVerdict}}},
	{"trap", []step{{body: "trap", verdict: engines.Nack, err: plugin.ErrTrap}}},
	{"unknown command", []step{{body: "bogus", verdict: engines.DeadLetter}}},
	{"empty body", []step{{body: "", verdict: engines.DeadLetter}}},
	{"echo with attributes", []step{{
		body: "echo:hello", attrs: map[string]string{"b": "2", "a": "1", "empty": ""},
		verdict: engines.Ack,
		pub:     []published{{"out", "hello", map[string]string{"a": "1", "b": "2", "empty": ""}}},
	}}},
	{"echo unicode", []step{{
		body: "echo:grüße 🚀", attrs: map[string]string{"ключ": "значение"},
		verdict: engines.Ack,
		pub:     []published{{"out", "grüße 🚀", map[string]string{"ключ": "значение"}}},
	}}},
	{"echo 100 attributes", []step{{body: "echo:many", attrs: many, verdict: engines.Ack,
		pub: []published{{"out", "many", many}}}}},
	{"echo empty", []step{{body: "echo:", verdict: engines.Ack, pub: out("")}}},
	{"echo 100 KB", []step{{body: "echo:" + big, verdict: engines.Ack, pub: out(big)}}},
	{"echo long attribute", []step{{
		body: "echo:x", attrs: map[string]string{"k": long300},
		verdict: engines.Ack, pub: []published{{"out", "x", map[string]string{"k": long300}}},
	}}},
	{"attr", []step{{body: "attr:color", attrs: map[string]string{"color": "blue"}, verdict: engines.Ack, pub: out("blue")}}},
	{"attr absent", []step{{body: "attr:color", verdict: engines.Ack, pub: out("<absent>")}}},
	{"attr long", []step{{body: "attr:k", attrs: map[string]string{"k": long300}, verdict: engines.Ack, pub: out(long300)}}},
	{"config", []step{{body: "config:greeting", verdict: engines.Ack, pub: out("hello")}}},
	{"config absent", []step{{body: "config:nope", verdict: engines.Ack, pub: out("<absent>")}}},
	{"config long", []step{{body: "config:long", verdict: engines.Ack, pub: out(long1000)}}},
	{"id", []step{{body: "id", verdict: engines.Ack, pub: out("m-42")}}},
	{"attempt", []step{{body: "attempt", attempt: 3, verdict: engines.Ack, pub: out("3")}}},
	{"delay", []step{{body: "delay:1500", verdict: engines.Nack, delay: 1500 * time.Millisecond}}},
	{"dead-letter with reason", []step{{body: "deadreason:webhook: 404 Not Found", verdict: engines.DeadLetter, reason: "webhook: 404 Not Found"}}},
	{"nack with reason", []step{{body: "nackreason:grüße 🚀 later", verdict: engines.Nack, reason: "grüße 🚀 later"}}},
	{"a reason belongs to one delivery", []step{
		{body: "deadreason:gone", verdict: engines.DeadLetter, reason: "gone"},
		{body: "verdict:3", verdict: engines.DeadLetter},
	}},
	{"publish allowed", []step{{body: "pub:audit", verdict: engines.Ack,
		pub: []published{{Queue: "audit", Body: "x"}, {Queue: "out", Body: "ok"}}}}},
	{"publish denied", []step{{body: "pub:secret", verdict: engines.Ack, pub: out("denied")}}},
	{"publish engine down", []step{{body: "pub:broken", verdict: engines.Ack, pub: out("error")}}},
	{"log", []step{{body: "log:hello from the guest", verdict: engines.Ack, log: "hello from the guest"}}},
	{"extend lease", []step{{body: "extend:90000", verdict: engines.Ack, pub: out("ok"), extended: 90 * time.Second}}},
	{"extend lost lease", []step{{body: "extend:1000", lostLease: true, verdict: engines.Ack, pub: out("error")}}},
	{"state persists in an instance", []step{
		{body: "count", verdict: engines.Ack, pub: out("1")},
		{body: "verdict:0", verdict: engines.Ack},
		{body: "count", verdict: engines.Ack, pub: out("2")},
		{body: "echo:" + big, verdict: engines.Ack, pub: out(big)},
		{body: "count", verdict: engines.Ack, pub: out("3")},
	}},
	// This consumer is granted no store, and its deliveries' settler keeps
	// no per-message state (as on an engine other than memory, disk and
	// postgres); kv_test.go has the stores and state that work.
	{"no store granted", []step{{body: "kvget:k", verdict: engines.Ack, pub: out("denied")}}},
	{"state unsupported", []step{{body: "state:x", verdict: engines.Nack,
		pub: []published{{Queue: "out", Body: "unsupported"}, {Queue: "out", Body: "unsupported"}}}}},
	{"bodies shrink and grow", []step{
		{body: "echo:" + big, verdict: engines.Ack, pub: out(big)},
		{body: "echo:a", verdict: engines.Ack, pub: out("a")},
		{body: "echo:" + big + big, verdict: engines.Ack, pub: out(big + big)},
	}},
}

// spec is the consumer every module runs as.
func spec(lang string, wasm []byte, config map[string]string) plugin.Spec {
	return plugin.Spec{
		Consumer:    "conformance-" + lang,
		Wasm:        wasm,
		MemoryLimit: 64 << 20,
		Timeout:     10 * time.Second, // generous: the race detector slows the host
		Config:      config,
		Publish:     []string{"out", "audit", "broken"},
		LogRate:     1000,
	}
}

var baseConfig = map[string]string{"greeting": "hello", "long": long1000}

func readModule(t testing.TB, lang string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(lang, "conformance.wasm"))
	if err != nil {
		t.Fatalf("%s: %v (build it with plugins/build.sh %s)", lang, err, lang)
	}
	return b
}

// TestConformance runs the script against the committed module of every
// language and asserts identical observable behaviour: verdict, failure
// kind, retry delay, published messages and log lines.
func TestConformance(t *testing.T) {
	for _, lang := range languages {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			wasm := readModule(t, lang)
			core, logs := observer.New(zapcore.DebugLevel)
			h := newHost(t, zap.New(core))
			pub := &sink{}
			p, err := h.Load(context.Background(), spec(lang, wasm, baseConfig), pub)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			for _, c := range script {
				t.Run(c.name, func(t *testing.T) {
					in, err := p.NewInstance(context.Background())
					if err != nil {
						t.Fatalf("NewInstance: %v", err)
					}
					defer in.Close(context.Background())
					for i, s := range c.steps {
						runStep(t, lang, i, in, pub, logs, s)
					}
				})
			}
		})
	}
}

func runStep(t *testing.T, lang string, i int, in *plugin.Instance, pub *sink, logs *observer.ObservedLogs, s step) {
	t.Helper()
	name := fmt.Sprintf("step %d (%.40q)", i, s.body)
	set := &settler{lost: s.lostLease}
	attempt := s.attempt
	if attempt == 0 {
		attempt = 1
	}
	d := engines.NewDelivery(engines.Delivery{
		Message: engines.Message{ID: "m-42", Body: []byte(s.body), Attributes: s.attrs},
		Queue:   "in",
		Attempt: attempt,
	}, set, engines.Ticket{})
	logs.TakeAll()
	r := in.Handle(context.Background(), &d, time.Now())
	got := pub.take()

	if r.Verdict != s.verdict {
		t.Errorf("%s: verdict %v, want %v (err %v)", name, r.Verdict, s.verdict, r.Err)
	}
	switch {
	case s.err == nil && r.Err != nil:
		t.Errorf("%s: unexpected failure: %v", name, r.Err)
	case s.err != nil && !errors.Is(r.Err, s.err):
		t.Errorf("%s: failure %v, want %v", name, r.Err, s.err)
	}
	if s.err != nil != in.Broken() {
		t.Errorf("%s: instance broken = %v, want %v", name, in.Broken(), s.err != nil)
	}
	if s.delay != 0 && (!r.DelaySet || r.Delay != s.delay) {
		t.Errorf("%s: delay %v (set %v), want %v", name, r.Delay, r.DelaySet, s.delay)
	}
	if s.delay == 0 && r.DelaySet {
		t.Errorf("%s: delay set to %v, want none", name, r.Delay)
	}
	if r.Reason != s.reason {
		t.Errorf("%s: reason %q, want %q", name, r.Reason, s.reason)
	}
	if !samePublished(got, s.pub) {
		t.Errorf("%s: published\n  %s\nwant\n  %s", name, shorten(got), shorten(s.pub))
	}
	if s.extended != 0 && (len(set.extended) != 1 || set.extended[0] != s.extended) {
		t.Errorf("%s: lease extensions %v, want [%v]", name, set.extended, s.extended)
	}
	if s.extended == 0 && len(set.extended) != 0 {
		t.Errorf("%s: lease extended %v, want no extension", name, set.extended)
	}
	if s.log != "" {
		found := logs.FilterMessage(s.log).FilterField(zap.String("source", "guest"))
		if found.Len() != 1 || found.All()[0].Level != zapcore.InfoLevel {
			t.Errorf("%s: want one info line %q from the guest, got %v", name, s.log, logs.All())
		}
	}
}

func samePublished(got, want []published) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Queue != want[i].Queue || got[i].Body != want[i].Body || !maps.Equal(got[i].Attrs, want[i].Attrs) {
			return false
		}
	}
	return true
}

// shorten keeps failure output readable when bodies are 100 KB.
func shorten(ps []published) string {
	var b bytes.Buffer
	for _, p := range ps {
		if len(p.Body) > 60 {
			p.Body = fmt.Sprintf("%s...(%d bytes)", p.Body[:20], len(p.Body))
		}
		fmt.Fprintf(&b, "%s; ", p)
	}
	return b.String()
}

// TestConformanceInitRefuses checks qrun_init in every language: with
// config "refuse" set the module logs why and refuses the instance.
func TestConformanceInitRefuses(t *testing.T) {
	for _, lang := range languages {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zapcore.DebugLevel)
			h := newHost(t, zap.New(core))
			p, err := h.Load(context.Background(), spec(lang, readModule(t, lang), map[string]string{"refuse": "yes"}), &sink{})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			in, err := p.NewInstance(context.Background())
			if err == nil {
				in.Close(context.Background())
				t.Fatal("NewInstance succeeded; want qrun_init to refuse it")
			}
			if !errors.Is(err, plugin.ErrInit) {
				t.Fatalf("NewInstance: %v, want ErrInit", err)
			}
			const want = "init failed: refused by config: yes"
			if n := logs.FilterMessage(want).FilterLevelExact(zapcore.ErrorLevel).Len(); n != 1 {
				t.Errorf("want one error line %q, got %v", want, logs.All())
			}
		})
	}
}

// TestConformanceModulesCheck runs the static check (`qrun plugin check`)
// on every module: each must be accepted, speak ABI v1, and import only
// what its language needs.
func TestConformanceModulesCheck(t *testing.T) {
	wantWASI := map[string]bool{"go": true, "rust": true, "c": true}
	for _, lang := range languages {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			rep, err := plugin.Check(context.Background(), readModule(t, lang))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if rep.ABIVersion != 1 {
				t.Errorf("ABI version %d, want 1", rep.ABIVersion)
			}
			if rep.WASI != wantWASI[lang] {
				t.Errorf("WASI = %v, want %v (imports %v)", rep.WASI, wantWASI[lang], rep.Imports)
			}
		})
	}
}
