package postgres_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// slotChildEnv, set to "schema|dsn", makes the test binary a child that
// takes slot 0 of key "k" in group "g", says "held" and waits to be killed.
const slotChildEnv = "QRUN_PG_SLOT_CHILD"

// slotChild runs the child side of TestSlotOfKilledHolderComesBack when
// the environment asks for it; it never returns then.
func slotChild() {
	v := os.Getenv(slotChildEnv)
	if v == "" {
		return
	}
	schema, dsn, _ := strings.Cut(v, "|")
	ctx := context.Background()
	e, err := postgres.New(ctx, postgres.Options{DSN: dsn, Schema: schema, MaxConns: 2, Logger: zap.NewNop()})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	if _, ok, err := e.TakeSlot(ctx, "g", "k", 1); err != nil || !ok {
		fmt.Println("error: take slot:", ok, err)
		os.Exit(2)
	}
	fmt.Println("held")
	select {} // until SIGKILL
}

func mustTake(t *testing.T, e *postgres.Engine, group, key string, n int, want bool) func() {
	t.Helper()
	release, ok, err := e.TakeSlot(context.Background(), group, key, n)
	if err != nil {
		t.Fatalf("TakeSlot(%q, %q, %d): %v", group, key, n, err)
	}
	if ok != want {
		t.Fatalf("TakeSlot(%q, %q, %d) = %v, want %v", group, key, n, ok, want)
	}
	return release
}

// Two engines on one schema (two nodes) share a key's n slots; one
// engine's own deliveries never share a slot (session locks are
// re-entrant, so the engine must not ask again for what it holds).
func TestSlotsSharedByTwoEngines(t *testing.T) {
	schema := pgtest.Need(t, srv).Schema(t)
	a, b := newEngine(t, schema, postgres.Options{}), newEngine(t, schema, postgres.Options{})

	a1 := mustTake(t, a, "g", "k", 2, true)
	a2 := mustTake(t, a, "g", "k", 2, true)
	mustTake(t, a, "g", "k", 2, false)
	mustTake(t, b, "g", "k", 2, false)
	mustTake(t, b, "g", "other", 2, true) // another key
	mustTake(t, b, "g2", "k", 2, true)    // another group (consumer)
	a1()
	a1() // a second call does nothing
	b1 := mustTake(t, b, "g", "k", 2, true)
	mustTake(t, a, "g", "k", 2, false)
	a2()
	b1()
	mustTake(t, a, "g", "k", 1, true)

	// A schema of its own is a lock space of its own.
	c := newEngine(t, "", postgres.Options{})
	mustTake(t, c, "g", "k", 1, true)
}

// Workers on two engines hammer a few keys; a counter per key in the
// "handler" never exceeds the cap.
func TestSlotsCapAcrossEngines(t *testing.T) {
	schema := pgtest.Need(t, srv).Schema(t)
	engs := []*postgres.Engine{newEngine(t, schema, postgres.Options{}), newEngine(t, schema, postgres.Options{})}
	const capN, keys, workers, rounds = 2, 3, 5, 20
	var inflight, peak [keys]atomic.Int32
	// freed is closed and replaced on each release: a worker whose take
	// failed waits for it rather than retrying blindly.
	var mu sync.Mutex
	freed := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for ei, e := range engs {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range rounds {
					k := (w + r + ei) % keys
					var release func()
					for release == nil {
						mu.Lock()
						wake := freed
						mu.Unlock()
						rel, ok, err := e.TakeSlot(ctx, "g", fmt.Sprint(k), capN)
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							release = rel
							break
						}
						select {
						case <-wake:
						case <-ctx.Done():
							t.Error("a slot never came back")
							return
						}
					}
					n := inflight[k].Add(1)
					for p := peak[k].Load(); n > p && !peak[k].CompareAndSwap(p, n); p = peak[k].Load() {
					}
					inflight[k].Add(-1)
					release()
					mu.Lock()
					close(freed)
					freed = make(chan struct{})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	for k := range keys {
		if p := peak[k].Load(); p > capN || p < 1 {
			t.Errorf("key %d: peak in flight %d, want 1..%d", k, p, capN)
		}
	}
	for _, e := range engs {
		if n := postgres.HeldSlots(e); n != 0 {
			t.Errorf("%d slots still held", n)
		}
	}
}

// Many keys: each is its own slot, and released slots leave nothing held.
func TestSlotsManyKeys(t *testing.T) {
	schema := pgtest.Need(t, srv).Schema(t)
	a, b := newEngine(t, schema, postgres.Options{}), newEngine(t, schema, postgres.Options{})
	const keys = 1000
	var rel []func()
	for k := range keys {
		rel = append(rel, mustTake(t, a, "g", fmt.Sprint("tenant-", k), 1, true))
	}
	for k := range keys {
		mustTake(t, b, "g", fmt.Sprint("tenant-", k), 1, false)
	}
	for _, r := range rel {
		r()
	}
	if n := postgres.HeldSlots(a); n != 0 {
		t.Fatalf("%d slots held after every release", n)
	}
	for k := range keys {
		mustTake(t, b, "g", fmt.Sprint("tenant-", k), 1, true)
	}
}

// A holder killed with SIGKILL never releases its slot; the server does,
// when the holder's connection ends, and the slot comes back.
func TestSlotOfKilledHolderComesBack(t *testing.T) {
	s := pgtest.Need(t, srv)
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), slotChildEnv+"="+schema+"|"+s.DSN)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "held\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	mustTake(t, e, "g", "k", 1, false)

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// Wait for the server to drop the dead session's lock: block on it
	// from a connection of our own, no polling.
	waitSlotFree(ctx, t, e, schema, "g", "k", 0)
	release := mustTake(t, e, "g", "k", 1, true)
	release()
}

// waitSlotFree blocks until no session holds slot i of key (taking and
// dropping the lock on a connection of the test's own): no polling.
func waitSlotFree(ctx context.Context, t *testing.T, e *postgres.Engine, schema, group, key string, i int) {
	t.Helper()
	conn, err := e.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	id := postgres.SlotID(schema, group, key, i)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", id); err != nil {
		t.Fatalf("waiting for slot %d of %q: %v", i, key, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", id); err != nil {
		t.Fatal(err)
	}
}

// A slot connection that breaks loses its locks (docs/schedules.md: the
// one case where the cap is not exact); the engine forgets them, its old
// releases do nothing, and its next take opens a new connection at once.
func TestSlotsAfterConnectionLoss(t *testing.T) {
	schema := pgtest.Need(t, srv).Schema(t)
	a, b := newEngine(t, schema, postgres.Options{}), newEngine(t, schema, postgres.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oldRelease := mustTake(t, a, "g", "k", 1, true)
	pid := postgres.SlotConnPID(a)
	if _, err := a.Pool().Exec(ctx, "SELECT pg_terminate_backend($1)", int32(pid)); err != nil {
		t.Fatal(err)
	}
	waitSlotFree(ctx, t, a, schema, "g", "k", 0)
	relB := mustTake(t, b, "g", "k", 1, true) // the lost slot is free for others
	relA2 := mustTake(t, a, "g", "k2", 1, true)
	if p := postgres.SlotConnPID(a); p == pid || p == 0 {
		t.Fatalf("slot connection pid %d after the loss of %d", p, pid)
	}
	oldRelease() // a lock of the lost connection: nothing to do
	if n := postgres.HeldSlots(a); n != 1 {
		t.Fatalf("%d slots held, want the one taken since", n)
	}
	mustTake(t, a, "g", "k", 1, false) // b's
	relB()
	relA2()
}
