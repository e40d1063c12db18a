package plugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

func loadLive(t *testing.T, h *Host, name string, o LiveOptions) (*Live, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugin.wasm")
	if err := os.WriteFile(path, readWasm(t, name), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := h.LoadLive(context.Background(), Spec{Consumer: "live-" + name, Path: path}, &fakePublisher{}, o)
	if err != nil {
		t.Fatalf("LoadLive(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l, path
}

// waitStatus waits, on Changed, until cond holds for the status.
func waitStatus(t *testing.T, l *Live, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.After(10 * time.Second)
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

func liveInstance(t *testing.T, l *Live) *LiveInstance {
	t.Helper()
	li, err := l.NewInstance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = li.Close(context.Background()) })
	return li
}

// A delivery that started on the old version finishes on it, while the
// swap completes; the old version's runtime is released only after that
// delivery returns, and the instance then asks to be replaced.
func TestLiveSwapLetsInFlightFinishOnOldVersion(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, nil)
	l, _ := loadLive(t, h, "ok", LiveOptions{})
	oldDigest := l.Digest()
	li := liveInstance(t, l)
	if !li.Acquire() {
		t.Fatal("fresh instance refused Acquire")
	}
	inHandle, release := make(chan struct{}), make(chan struct{})
	li.in.afterHandle = func() { close(inHandle); <-release }
	res := make(chan Result, 1)
	go func() { res <- li.Handle(context.Background(), delivery("0", nil), time.Now()) }()
	<-inHandle

	if err := l.Swap(context.Background(), readWasm(t, "ack")); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	if l.Digest() == oldDigest {
		t.Fatal("digest unchanged after swap")
	}
	if st := l.Status(); st.Versions != 2 || st.Reloads != 1 {
		t.Fatalf("during the delivery: %+v, want 2 versions loaded, 1 reload", st)
	}
	if li.v.p.isClosed() {
		t.Fatal("old version closed while a delivery ran on it")
	}
	close(release)
	if r := <-res; r.Err != nil || r.Verdict != engines.Ack {
		t.Fatalf("in-flight delivery: %+v, want a clean ack from the old version", r)
	}
	waitStatus(t, l, "the old version released", func(st Status) bool { return st.Versions == 1 })
	if !li.v.p.isClosed() {
		t.Fatal("old version's plugin not closed after its last delivery")
	}
	if li.Acquire() {
		t.Fatal("instance of the replaced version accepted another delivery")
	}
	nl := liveInstance(t, l)
	if nl.Digest() != l.Digest() || !nl.Acquire() {
		t.Fatalf("new instance runs %s, want %s", nl.Digest(), l.Digest())
	}
	if r := nl.Handle(context.Background(), delivery("x", nil), time.Now()); r.Err != nil {
		t.Fatalf("new version: %v", r.Err)
	}
}

// Idle instances of a replaced version are closed by the swap itself, so
// an idle consumer does not keep old code alive.
func TestLiveSwapReleasesIdleVersion(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, nil)
	l, _ := loadLive(t, h, "ack", LiveOptions{Warm: 2})
	a, b := liveInstance(t, l), liveInstance(t, l)
	for _, li := range []*LiveInstance{a, b} {
		if r := li.Handle(context.Background(), delivery("x", nil), time.Now()); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if err := l.Swap(context.Background(), readWasm(t, "ok")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, l, "the idle old version released", func(st Status) bool { return st.Versions == 1 })
	if got := h.Plugins(); got != 1 {
		t.Fatalf("host holds %d plugins, want 1", got)
	}
	if a.Acquire() || b.Acquire() {
		t.Fatal("swept instance accepted a delivery")
	}
}

// Once the status shows the new version, an idle instance of the old one
// takes no delivery: a message sent after GET /v1/consumers reported the
// swap runs the new version.
func TestLiveStatusShowsSwapOnlyOnceOldVersionRetired(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, nil)
	l, _ := loadLive(t, h, "ok", LiveOptions{})
	old := liveInstance(t, l)
	if r := old.Handle(context.Background(), delivery("0", nil), time.Now()); r.Err != nil {
		t.Fatal(r.Err)
	}
	took := false
	l.mu.Lock()
	l.updated = func(st Status) {
		if st.Reloads == 1 && !took { // the new version is shown now
			took = old.Acquire()
		}
	}
	l.mu.Unlock()
	if err := l.Swap(context.Background(), readWasm(t, "ack")); err != nil {
		t.Fatal(err)
	}
	if took {
		t.Fatal("an instance of the replaced version took a delivery once the status showed the new one")
	}
}

func TestLiveRefusesBadVersions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		wasm func(t *testing.T) []byte
		want string
	}{
		{"garbage", func(*testing.T) []byte { return []byte("\x00asm but not really") }, "not a valid WebAssembly module"},
		{"empty", func(*testing.T) []byte { return []byte{} }, "the file is empty (0 bytes)"},
		{"missing export", func(t *testing.T) []byte { return readWasm(t, "missing_handle") }, "qrun_handle"},
		{"init fails", func(t *testing.T) []byte { return readWasm(t, "init_fail") }, "qrun_init returned 1"},
		{"no version marker", func(t *testing.T) []byte { return readWasm(t, "no_version") }, "qrun_abi_v"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newTestHost(t, nil)
			l, _ := loadLive(t, h, "ack", LiveOptions{})
			before := l.Digest()
			err := l.Swap(context.Background(), tt.wasm(t))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Swap: %v, want an error mentioning %q", err, tt.want)
			}
			st := l.Status()
			if st.Digest != before || st.FailedReloads != 1 || st.Reloads != 0 || !strings.Contains(st.LastError, tt.want) {
				t.Fatalf("status after refusal: %+v", st)
			}
			if st.Versions != 1 || h.Plugins() != 1 {
				t.Fatalf("refused version still loaded: %d versions, %d plugins", st.Versions, h.Plugins())
			}
			li := liveInstance(t, l)
			if li.Digest() != before {
				t.Fatal("refused version serves")
			}
			if r := li.Handle(context.Background(), delivery("x", nil), time.Now()); r.Err != nil || r.Verdict != engines.Ack {
				t.Fatalf("running version after refusal: %+v", r)
			}
		})
	}
}

// Reload reads the file: unchanged bytes and bytes refused before are
// no-ops, a missing file keeps the running version, new bytes swap.
func TestLiveReloadFromFile(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, nil)
	l, path := loadLive(t, h, "ack", LiveOptions{})
	ctx := context.Background()
	if err := l.Reload(ctx); !errors.Is(err, ErrUnchanged) {
		t.Fatalf("unchanged file: %v, want ErrUnchanged", err)
	}
	if err := os.WriteFile(path, readWasm(t, "init_fail"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(ctx); !errors.Is(err, ErrInit) {
		t.Fatalf("init_fail: %v, want ErrInit", err)
	}
	if err := l.Reload(ctx); !errors.Is(err, ErrUnchanged) {
		t.Fatalf("the same refused file again: %v, want ErrUnchanged (not counted twice)", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(ctx); !errors.Is(err, ErrUnchanged) {
		t.Fatalf("missing file: %v, want ErrUnchanged", err)
	}
	if err := os.WriteFile(path, readWasm(t, "ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(ctx); err != nil {
		t.Fatalf("good file: %v", err)
	}
	st := l.Status()
	if st.Reloads != 1 || st.FailedReloads != 1 || st.Digest != digestOf(readWasm(t, "ok")) {
		t.Fatalf("status %+v", st)
	}
}

// With Refill the pool is topped up in the background, so instances taken
// one per delivery come ready-made.
func TestLiveRefillKeepsInstancesReady(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, nil)
	l, _ := loadLive(t, h, "ok", LiveOptions{Warm: 2, Refill: true})
	v := l.cur.Load()
	for i := range 5 {
		// Wait for the background to refill before each take.
		deadline := time.Now().Add(10 * time.Second)
		for len(v.pool) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("take %d: pool has %d, want 2", i, len(v.pool))
			}
			time.Sleep(time.Millisecond) // no event exists for "pool refilled"
		}
		li := liveInstance(t, l)
		if r := li.Handle(context.Background(), delivery("0", nil), time.Now()); r.Err != nil {
			t.Fatal(r.Err)
		}
		// ok.wasm records that _initialize ran; a pooled instance must be
		// fully initialised like a fresh one.
		if memI32(t, li.in, 0x120) != 1 {
			t.Fatal("pooled instance was not initialised")
		}
		_ = li.Close(context.Background())
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, l, "everything released", func(st Status) bool { return st.Versions == 0 })
	if h.Plugins() != 0 {
		t.Fatalf("host still holds %d plugins after Close", h.Plugins())
	}
}

func TestLiveInstanceCloseDuringHandleAborts(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, nil)
	l, _ := loadLive(t, h, "ok", LiveOptions{})
	li := liveInstance(t, l)
	res := make(chan Result, 1)
	go func() { res <- li.Handle(context.Background(), delivery("l", nil), time.Now()) }() // loops
	// Wait until the guest call runs: seq is odd while it does.
	for li.in.seq.Load()&1 == 0 {
		time.Sleep(time.Millisecond) // no event for "guest call entered"
	}
	if err := li.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := <-res; !errors.Is(r.Err, ErrTrap) {
		t.Fatalf("aborted call: %v, want ErrTrap", r.Err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, l, "everything released", func(st Status) bool { return st.Versions == 0 })
}

// A swap under per-message isolation stops the old version's refill and
// closes its pooled instances; from then on every instance is new.
func TestLiveRefillAcrossSwap(t *testing.T) {
	t.Parallel()
	h := newTestHost(t, nil)
	l, _ := loadLive(t, h, "ack", LiveOptions{Warm: 2, Refill: true})
	old := l.Digest()
	if err := l.Swap(context.Background(), readWasm(t, "ok")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, l, "the old version released", func(st Status) bool { return st.Versions == 1 })
	for range 4 {
		li := liveInstance(t, l)
		if li.Digest() == old {
			t.Fatal("an instance of the replaced version was handed out")
		}
		if r := li.Handle(context.Background(), delivery("0", nil), time.Now()); r.Err != nil {
			t.Fatal(r.Err)
		}
		_ = li.Close(context.Background())
	}
	if h.Plugins() != 1 {
		t.Fatalf("host holds %d plugins, want 1", h.Plugins())
	}
}
