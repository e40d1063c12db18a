package plugin

import (
	"context"
	"runtime"
	"testing"
)

// A program embedding qrun owns GOMAXPROCS: a hot swap on a host without
// ExtraProc must leave the value it set, including one it sets while the
// new version compiles. (Before ExtraProc, every swap ended by resetting
// GOMAXPROCS to the runtime's default.) Not parallel: GOMAXPROCS is
// process-wide.
func TestSwapLeavesGOMAXPROCSAlone(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	set := runtime.NumCPU() + 3 // not what the runtime would choose
	runtime.GOMAXPROCS(set)

	h := newTestHost(t, nil)
	l, _ := loadLive(t, h, "ok", LiveOptions{})
	if err := l.Swap(context.Background(), readWasm(t, "ack")); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	if got := runtime.GOMAXPROCS(0); got != set {
		t.Fatalf("GOMAXPROCS after a swap = %d, want %d as the program set it", got, set)
	}

	// Changed during a compile: the swap reads nothing to restore.
	set++
	in := make(chan struct{})
	go func() { runtime.GOMAXPROCS(set); close(in) }()
	if err := l.Swap(context.Background(), readWasm(t, "ok")); err != nil {
		t.Fatalf("Swap back: %v", err)
	}
	<-in
	if got := runtime.GOMAXPROCS(0); got != set {
		t.Fatalf("GOMAXPROCS after a swap during a change = %d, want %d", got, set)
	}
}

// With ExtraProc (cmd/qrun), the host raises GOMAXPROCS during a compile
// and restores the value it found once no compile is in progress.
func TestExtraProcRestores(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	h, err := NewHost(context.Background(), HostOptions{ExtraProc: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	l, _ := loadLive(t, h, "ok", LiveOptions{})
	var during int
	raised := func() { during = runtime.GOMAXPROCS(0) }
	withOwnProc(raised)
	if during != before+1 {
		t.Fatalf("GOMAXPROCS during withOwnProc = %d, want %d", during, before+1)
	}
	if err := l.Swap(context.Background(), readWasm(t, "ack")); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS after a swap = %d, want %d", got, before)
	}
}
