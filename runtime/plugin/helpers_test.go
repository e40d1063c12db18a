package plugin

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Offsets in ok.wasm's memory where it leaves what it observed (see ok.wat).
const (
	offRes         = 0x100
	offInitAttempt = 0x118
	offInitCfg     = 0x11c
	offAllocCalls  = 0x124
	offInitPublish = 0x128
	offOut         = 0x200
	offInitOut     = 0x400
)

func readWasm(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestHost(t testing.TB, log *zap.Logger) *Host {
	t.Helper()
	h, err := NewHost(context.Background(), HostOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

func observedLogger(lvl zapcore.Level) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(lvl)
	return zap.New(core), logs
}

func load(t testing.TB, h *Host, name string, s Spec, pub Publisher) *Plugin {
	t.Helper()
	s.Wasm = readWasm(t, name)
	if s.Consumer == "" {
		s.Consumer = "test-" + name
	}
	p, err := h.Load(context.Background(), s, pub)
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func newInstance(t testing.TB, p *Plugin) *Instance {
	t.Helper()
	in, err := p.NewInstance(context.Background())
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	return in
}

// fakeSettler records lease extensions.
type fakeSettler struct {
	mu       sync.Mutex
	extended []time.Duration
	err      error
}

func (s *fakeSettler) Settle(context.Context, engines.Ticket, engines.Settlement) error { return nil }

func (s *fakeSettler) Extend(_ context.Context, _ engines.Ticket, d time.Duration) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return time.Time{}, s.err
	}
	s.extended = append(s.extended, d)
	return time.Now().Add(d), nil
}

func delivery(body string, s engines.Settler) *engines.Delivery {
	d := engines.Delivery{
		Message: engines.Message{ID: "m-1", Body: []byte(body)},
		Queue:   "orders",
		Attempt: 1,
	}
	if s == nil {
		s = &fakeSettler{}
	}
	d = engines.NewDelivery(d, s, engines.Ticket{})
	return &d
}

type published struct {
	queue string
	msg   engines.Message
}

// fakePublisher records what guests publish.
type fakePublisher struct {
	mu   sync.Mutex
	msgs []published
	err  error
}

func (p *fakePublisher) Publish(_ context.Context, queue string, msg engines.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	p.msgs = append(p.msgs, published{queue, msg})
	return nil
}

func (p *fakePublisher) all() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]published(nil), p.msgs...)
}

func memI32(t testing.TB, in *Instance, off uint32) int32 {
	t.Helper()
	b, ok := in.mem.Read(off, 4)
	if !ok {
		t.Fatalf("read %#x", off)
	}
	return int32(binary.LittleEndian.Uint32(b))
}

func memI64(t testing.TB, in *Instance, off uint32) int64 {
	t.Helper()
	b, ok := in.mem.Read(off, 8)
	if !ok {
		t.Fatalf("read %#x", off)
	}
	return int64(binary.LittleEndian.Uint64(b))
}

func memStr(t testing.TB, in *Instance, off, n uint32) string {
	t.Helper()
	b, ok := in.mem.Read(off, n)
	if !ok {
		t.Fatalf("read %#x+%d", off, n)
	}
	return string(b)
}

// mustHandle handles body and fails the test unless the guest returned a
// verdict normally.
func mustHandle(t testing.TB, in *Instance, d *engines.Delivery) Result {
	t.Helper()
	r := in.Handle(context.Background(), d, time.Now())
	if r.Err != nil {
		t.Fatalf("Handle(%q): %v", d.Body, r.Err)
	}
	return r
}
