//go:build linux

package ring

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test re-execute this binary as a process that claims
// positions in a segment and is SIGKILLed before publishing them.
func TestMain(m *testing.M) {
	if path := os.Getenv("QRUN_RING_CLAIM_AND_DIE"); path != "" {
		r, err := Open(path, Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		// Claim two positions exactly as Push does, then die before
		// writing or publishing either.
		for {
			p := r.hdr.tail.Load()
			if r.hdr.tail.CompareAndSwap(p, p+2) {
				break
			}
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	os.Exit(m.Run())
}

// TestKilledMidClaim: a real process SIGKILLed between claiming slots and
// publishing them does not wedge the consumers: after the stall timeout
// they skip its slots and deliver what other producers published behind.
func TestKilledMidClaim(t *testing.T) {
	t.Parallel()
	r := newTestRing(t, Geometry{SlotSize: 16, Capacity: 8}, Options{StallTimeout: 100 * time.Millisecond})
	push(t, r, "before")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "QRUN_RING_CLAIM_AND_DIE="+r.Path())
	err := cmd.Run()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("claiming process: %v, want killed", err)
	}
	push(t, r, "after")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	for len(got) < 2 {
		got = append(got, pop(t, r, 4)...)
		if len(got) < 2 {
			if err := r.WaitData(ctx, time.Time{}, nil); err != nil {
				t.Fatalf("waiting past the dead claims, got %v: %v", got, err)
			}
		}
	}
	if strings.Join(got, ",") != "before,after" {
		t.Fatalf("popped %v, want [before after]", got)
	}
	if st, _ := r.Stats(); st.Skipped != 2 || st.Published != 2 {
		t.Fatalf("Stats %+v, want 2 skipped and 2 published", st)
	}
}
