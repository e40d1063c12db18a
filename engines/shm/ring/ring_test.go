//go:build linux

package ring

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// newTestRing creates a segment under /dev/shm that the test deletes.
func newTestRing(t testing.TB, g Geometry, opts Options) *Ring {
	t.Helper()
	if _, err := os.Stat(DefaultDir); err != nil {
		t.Skipf("no %s on this machine (%v): POSIX shared memory is what this package is for", DefaultDir, err)
	}
	name := fmt.Sprintf("qrun-test-%d-%s", os.Getpid(), strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	path, err := Path(DefaultDir, name)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(path) // a leftover of a killed earlier run
	r, err := Create(path, g, opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		_ = r.Close()
		_ = os.Remove(path)
	})
	return r
}

func rec(s string) Record { return Record{Data: []byte(s)} }

func push(t testing.TB, r *Ring, data ...string) {
	t.Helper()
	recs := make([]Record, len(data))
	for i, d := range data {
		recs[i] = rec(d)
	}
	if n, err := r.Push(context.Background(), recs); err != nil || n != len(recs) {
		t.Fatalf("Push(%d) = %d, %v", len(recs), n, err)
	}
}

func pop(t testing.TB, r *Ring, max int) []string {
	t.Helper()
	out := make([]Record, max)
	n, err := r.TryPop(out)
	if err != nil {
		t.Fatalf("TryPop: %v", err)
	}
	var got []string
	for _, rc := range out[:n] {
		got = append(got, string(rc.Data))
	}
	return got
}

func TestLayout(t *testing.T) {
	var h header
	var s slotHeader
	for _, c := range []struct {
		name     string
		got, off uintptr
	}{
		{"magic", unsafe.Offsetof(h.magic), 0},
		{"version", unsafe.Offsetof(h.version), 8},
		{"mode", unsafe.Offsetof(h.mode), 12},
		{"slot size", unsafe.Offsetof(h.slotSize), 16},
		{"capacity", unsafe.Offsetof(h.capacity), 20},
		{"stride", unsafe.Offsetof(h.stride), 24},
		{"header size", unsafe.Offsetof(h.headerSize), 28},
		{"nonce", unsafe.Offsetof(h.nonce), 32},
		{"created", unsafe.Offsetof(h.created), 40},
		{"tail", unsafe.Offsetof(h.tail), 64},
		{"head", unsafe.Offsetof(h.head), 128},
		{"data word", unsafe.Offsetof(h.dataSeq), 192},
		{"data waiters", unsafe.Offsetof(h.dataWaiters), 196},
		{"space word", unsafe.Offsetof(h.spaceSeq), 256},
		{"space waiters", unsafe.Offsetof(h.spaceWaiters), 260},
		{"published", unsafe.Offsetof(h.published), 320},
		{"overwritten", unsafe.Offsetof(h.overwritten), 328},
		{"skipped", unsafe.Offsetof(h.skipped), 336},
		{"abandoned", unsafe.Offsetof(h.abandoned), 344},
		{"slot seq", unsafe.Offsetof(s.seq), 0},
		{"slot length", unsafe.Offsetof(s.length), 8},
		{"slot flags", unsafe.Offsetof(s.flags), 12},
		{"slot enqueued", unsafe.Offsetof(s.enqueued), 16},
		{"slot visible", unsafe.Offsetof(s.visible), 24},
	} {
		if c.got != c.off {
			t.Errorf("%s at offset %d, the documented layout says %d", c.name, c.got, c.off)
		}
	}
	if sz := unsafe.Sizeof(h); sz > HeaderSize {
		t.Errorf("header struct is %d bytes, more than the %d-byte header", sz, HeaderSize)
	}
	if sz := unsafe.Sizeof(s); sz != SlotHeaderSize {
		t.Errorf("slot header struct is %d bytes, want %d", sz, SlotHeaderSize)
	}
}

// TestBytesOnDisk reads a fresh segment as another program would, through
// the file rather than this package, to pin the documented encoding.
func TestBytesOnDisk(t *testing.T) {
	r := newTestRing(t, Geometry{SlotSize: 100, Capacity: 4, Mode: Cyclic}, Options{})
	if n, err := r.Push(context.Background(), []Record{{Flags: FlagEnvelope, Enqueued: 7, Visible: 9, Data: []byte("abc")}}); n != 1 || err != nil {
		t.Fatalf("Push: %d, %v", n, err)
	}
	b, err := os.ReadFile(r.Path())
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	stride := (32 + 100 + 63) &^ 63
	if len(b) != HeaderSize+4*stride {
		t.Fatalf("segment is %d bytes, want %d", len(b), HeaderSize+4*stride)
	}
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"version", uint64(le.Uint32(b[8:])), Version},
		{"mode", uint64(le.Uint32(b[12:])), 1},
		{"slot size", uint64(le.Uint32(b[16:])), 100},
		{"capacity", uint64(le.Uint32(b[20:])), 4},
		{"stride", uint64(le.Uint32(b[24:])), uint64(stride)},
		{"header size", uint64(le.Uint32(b[28:])), HeaderSize},
		{"tail", le.Uint64(b[64:]), 1},
		{"head", le.Uint64(b[128:]), 0},
		{"published", le.Uint64(b[320:]), 1},
		{"slot 0 seq", le.Uint64(b[HeaderSize:]), 1},
		{"slot 0 length", uint64(le.Uint32(b[HeaderSize+8:])), 3},
		{"slot 0 flags", uint64(le.Uint32(b[HeaderSize+12:])), FlagEnvelope},
		{"slot 0 enqueued", le.Uint64(b[HeaderSize+16:]), 7},
		{"slot 0 visible", le.Uint64(b[HeaderSize+24:]), 9},
		{"slot 1 seq", le.Uint64(b[HeaderSize+stride:]), 2},
		{"slot 3 seq", le.Uint64(b[HeaderSize+3*stride:]), 6},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
		}
	}
	if string(b[:8]) != Magic {
		t.Errorf("magic %q, want %q", b[:8], Magic)
	}
	if got := string(b[HeaderSize+32 : HeaderSize+35]); got != "abc" {
		t.Errorf("slot 0 record %q, want %q", got, "abc")
	}
}

func TestWrapAround(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{Blocking, Cyclic} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			r := newTestRing(t, Geometry{SlotSize: 16, Capacity: 4, Mode: mode}, Options{})
			next, want := 0, 0
			// Batches of 1 to 3 against a capacity of 4 put every batch
			// boundary at every offset of the ring, many laps over.
			for round := 0; round < 60; round++ {
				k := round%3 + 1
				var batch []string
				for range k {
					batch = append(batch, fmt.Sprintf("m%03d", next))
					next++
				}
				push(t, r, batch...)
				for _, got := range pop(t, r, 4) {
					if w := fmt.Sprintf("m%03d", want); got != w {
						t.Fatalf("round %d: popped %q, want %q", round, got, w)
					}
					want++
				}
			}
			if want != next {
				t.Fatalf("popped %d of %d", want, next)
			}
			if st, _ := r.Stats(); st.Published != uint64(next) || st.Len != 0 || st.Overwritten != 0 {
				t.Fatalf("Stats %+v, want %d published, empty, nothing overwritten", st, next)
			}
		})
	}
}

func TestCyclicOverwrite(t *testing.T) {
	t.Parallel()
	const capacity = 8
	for _, batch := range []int{1, 5, 3 * capacity} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			t.Parallel()
			r := newTestRing(t, Geometry{SlotSize: 8, Capacity: capacity, Mode: Cyclic}, Options{})
			var all []string
			for i := range 3 * capacity {
				all = append(all, fmt.Sprintf("%d", i))
			}
			for i := 0; i < len(all); i += batch {
				push(t, r, all[i:min(i+batch, len(all))]...)
			}
			got := pop(t, r, 3*capacity)
			if want := all[2*capacity:]; strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("after %d sends into %d slots popped %v, want the last %d in order: %v", len(all), capacity, got, capacity, want)
			}
			st, _ := r.Stats()
			if st.Overwritten != 2*capacity {
				t.Fatalf("Overwritten = %d, want %d", st.Overwritten, 2*capacity)
			}
		})
	}
}

func TestBlockingDeadline(t *testing.T) {
	t.Parallel()
	r := newTestRing(t, Geometry{SlotSize: 8, Capacity: 2, Mode: Blocking}, Options{SendTimeout: 100 * time.Millisecond})
	push(t, r, "a", "b")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	n, err := r.Push(ctx, []Record{rec("c")})
	if n != 0 || !errors.Is(err, ErrFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Push into a full ring with a deadline = %d, %v; want 0 and ErrFull wrapping DeadlineExceeded", n, err)
	}
	// No deadline: the default send timeout still ends the wait.
	n, err = r.Push(context.Background(), []Record{rec("c")})
	if n != 0 || !errors.Is(err, ErrFull) {
		t.Fatalf("Push into a full ring without a deadline = %d, %v; want 0 and ErrFull", n, err)
	}

	// A waiting producer is released by a consumer.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := r.Push(ctx, []Record{rec("c")})
		done <- err
	}()
	// Pop once the producer is registered as waiting for space, so the pop
	// is what releases it.
	for r.hdr.spaceWaiters.Load() == 0 {
		runtime.Gosched() // the condition is the event: the waiter registers
	}
	if got := pop(t, r, 1); len(got) != 1 || got[0] != "a" {
		t.Fatalf("popped %v, want [a]", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("blocked Push after a pop: %v", err)
	}
	if got := pop(t, r, 4); strings.Join(got, ",") != "b,c" {
		t.Fatalf("popped %v, want [b c]", got)
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	r := newTestRing(t, Geometry{SlotSize: 8, Capacity: 2}, Options{})
	_, err := r.Push(context.Background(), []Record{rec("12345678"), rec("123456789")})
	var tl *TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) || tl.Size != 9 || tl.SlotSize != 8 {
		t.Fatalf("Push of 9 bytes into 8-byte slots: %v; want a TooLargeError{9, 8}", err)
	}
	if got := pop(t, r, 2); len(got) != 0 {
		t.Fatalf("a rejected batch left %v in the ring", got)
	}
	push(t, r, "", "12345678")
	if got := pop(t, r, 2); len(got) != 2 || got[0] != "" || got[1] != "12345678" {
		t.Fatalf("popped %q, want an empty record and a full one", got)
	}
}

func TestDeleteRemovesSegment(t *testing.T) {
	t.Parallel()
	r := newTestRing(t, Geometry{SlotSize: 8, Capacity: 2}, Options{})
	path := r.Path()
	if _, err := Create(path, Geometry{SlotSize: 8, Capacity: 2}, Options{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over an existing segment: %v, want ErrExist", err)
	}
	if err := Delete(path); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Delete, stat %s: %v; want it gone", path, err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open after Delete: %v, want ErrNotExist", err)
	}
	// The mapping this process holds still works until it is closed.
	push(t, r, "x")
	if got := pop(t, r, 1); len(got) != 1 {
		t.Fatalf("the deleted segment's mapping lost its record: %v", got)
	}
	if err := Delete(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second Delete: %v, want ErrNotExist", err)
	}
}

func TestOpenSharesAndValidates(t *testing.T) {
	t.Parallel()
	g := Geometry{SlotSize: 24, Capacity: 8, Mode: Cyclic}
	r := newTestRing(t, g, Options{})
	o, err := Open(r.Path(), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer o.Close()
	if o.Geometry() != g || o.Nonce() != r.Nonce() {
		t.Fatalf("opened geometry %+v nonce %x, want %+v %x", o.Geometry(), o.Nonce(), g, r.Nonce())
	}
	push(t, r, "through one mapping")
	if got := pop(t, o, 1); len(got) != 1 || got[0] != "through one mapping" {
		t.Fatalf("the second mapping popped %v", got)
	}

	good, err := os.ReadFile(r.Path())
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	dir := t.TempDir()
	for _, c := range []struct {
		name  string
		edit  func(b []byte) []byte
		want  error
		words string
	}{
		{"bad magic", func(b []byte) []byte { copy(b, "NOTARING"); return b }, ErrCorrupt, "magic"},
		{"future version", func(b []byte) []byte { le.PutUint32(b[8:], 2); return b }, ErrCorrupt, "version 2"},
		{"capacity not a power of two", func(b []byte) []byte { le.PutUint32(b[20:], 6); return b }, ErrCorrupt, "capacity 6"},
		{"bad stride", func(b []byte) []byte { le.PutUint32(b[24:], 60); return b }, ErrCorrupt, "stride 60"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-64] }, ErrCorrupt, "bytes"},
		{"shorter than a header", func(b []byte) []byte { return b[:100] }, ErrCorrupt, "header"},
		{"bad mode", func(b []byte) []byte { le.PutUint32(b[12:], 9); return b }, ErrCorrupt, "mode(9)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := c.edit(bytes.Clone(good))
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(p, Options{})
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.words) {
				t.Fatalf("Open: %v; want an error wrapping %v that mentions %q", err, c.want, c.words)
			}
		})
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"orders", true},
		{"qrun.a-b_c.1", true},
		{strings.Repeat("x", NameMax), true},
		{strings.Repeat("x", NameMax+1), false},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/orders", false},
		{"nul\x00", false},
	} {
		err := ValidateName(c.name)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrName)) {
			t.Errorf("ValidateName(%.20q) = %v, want ok=%v", c.name, err, c.ok)
		}
	}
	for _, c := range []Geometry{{SlotSize: 0, Capacity: 4}, {SlotSize: 8, Capacity: 3}, {SlotSize: 8, Capacity: 1}, {SlotSize: 8, Capacity: 4, Mode: 7}, {SlotSize: MaxSlotSize, Capacity: MaxCapacity}} {
		if err := c.Validate(); !errors.Is(err, ErrGeometry) {
			t.Errorf("Validate(%+v) = %v, want ErrGeometry", c, err)
		}
	}
}

// TestStalledWriteSkipped plays a producer killed between claiming a slot
// and publishing it: consumers wait out the stall timeout, then skip it.
func TestStalledWriteSkipped(t *testing.T) {
	t.Parallel()
	const stallTimeout = 100 * time.Millisecond
	r := newTestRing(t, Geometry{SlotSize: 8, Capacity: 8}, Options{StallTimeout: stallTimeout})
	r.hdr.tail.Add(3) // the dead producer's claim of positions 0-2, a batch
	push(t, r, "after")
	if got := pop(t, r, 4); len(got) != 0 {
		t.Fatalf("popped %v past an unpublished slot before the stall timeout", got)
	}
	start := time.Now()
	var got []string
	for len(got) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.WaitData(ctx, time.Time{}, nil)
		cancel()
		if err != nil {
			t.Fatalf("WaitData: %v", err)
		}
		got = pop(t, r, 4)
	}
	if time.Since(start) < stallTimeout/2 || len(got) != 1 || got[0] != "after" {
		t.Fatalf("after %v popped %v; want [after], not before the stall timeout", time.Since(start), got)
	}
	// The batch's later positions were claimed as long ago as its first:
	// they are skipped at once, not after a stall timeout each.
	t.Logf("three abandoned claims skipped after %v (stall timeout %v)", time.Since(start), stallTimeout)
	if st, _ := r.Stats(); st.Skipped != 3 {
		t.Fatalf("Skipped = %d, want 3", st.Skipped)
	}
	// A producer whose claim was skipped finds its publish refused.
	if r.slot(0).seq.CompareAndSwap(0, 1) {
		t.Fatal("a skipped slot still accepted its late publish")
	}
}

// TestStalledReadReleased plays a consumer killed between claiming a slot
// and releasing it: a blocking producer waits out the stall, then frees it.
func TestStalledReadReleased(t *testing.T) {
	t.Parallel()
	r := newTestRing(t, Geometry{SlotSize: 8, Capacity: 2}, Options{StallTimeout: 100 * time.Millisecond})
	push(t, r, "lost", "kept")
	r.hdr.head.Add(1) // the dead consumer's claim of position 0
	if got := pop(t, r, 2); len(got) != 1 || got[0] != "kept" {
		t.Fatalf("popped %v, want [kept]", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Push(ctx, []Record{rec("new"), rec("newer")}); err != nil {
		t.Fatalf("Push past an abandoned read: %v", err)
	}
	if got := pop(t, r, 2); strings.Join(got, ",") != "new,newer" {
		t.Fatalf("popped %v, want [new newer]", got)
	}
	if st, _ := r.Stats(); st.Abandoned != 1 {
		t.Fatalf("Abandoned = %d, want 1", st.Abandoned)
	}
}

// payload makes a record whose every byte derives from (producer, seq), so
// a torn or mixed copy is detected.
func payload(producer, seq int) []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b, uint32(producer))
	binary.LittleEndian.PutUint32(b[4:], uint32(seq))
	for i := 8; i < len(b); i++ {
		b[i] = byte(producer*31 + seq*7 + i)
	}
	return b
}

func checkPayload(b []byte) (producer, seq int, ok bool) {
	if len(b) != 64 {
		return 0, 0, false
	}
	producer, seq = int(binary.LittleEndian.Uint32(b)), int(binary.LittleEndian.Uint32(b[4:]))
	return producer, seq, bytes.Equal(b, payload(producer, seq))
}

// TestConcurrent runs producers and consumers against a small ring in both
// modes: blocking must deliver everything exactly once, cyclic may lose
// only what it counts as overwritten, and neither may ever deliver a torn
// record or reorder one producer's records.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	runConcurrent(t, 20000)
}

// TestSoakConcurrent is TestConcurrent a hundred times longer (`make soak`).
func TestSoakConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: run with `make soak`")
	}
	runConcurrent(t, 2_000_000)
}

func runConcurrent(t *testing.T, per int) {
	const producers, consumers = 3, 3
	for _, mode := range []Mode{Blocking, Cyclic} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			r := newTestRing(t, Geometry{SlotSize: 64, Capacity: 64, Mode: mode}, Options{SendTimeout: time.Minute})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var pw, cw sync.WaitGroup
			for p := range producers {
				pw.Add(1)
				go func() {
					defer pw.Done()
					for i := 0; i < per; {
						k := min(1+i%7, per-i)
						recs := make([]Record, k)
						for j := range recs {
							recs[j].Data = payload(p, i+j)
						}
						if _, err := r.Push(ctx, recs); err != nil {
							t.Errorf("producer %d: %v", p, err)
							return
						}
						i += k
					}
				}()
			}
			var mu sync.Mutex
			got := 0
			last := make(map[int]int)
			stop := make(chan struct{})
			for c := range consumers {
				cw.Add(1)
				go func() {
					defer cw.Done()
					out := make([]Record, 8)
					seen := make(map[int]int) // per consumer: order holds within what one consumer sees
					for {
						n, err := r.TryPop(out)
						if err != nil {
							t.Errorf("consumer %d: %v", c, err)
							return
						}
						for _, rc := range out[:n] {
							p, s, ok := checkPayload(rc.Data)
							if !ok {
								t.Errorf("consumer %d: torn record at position %d: % x", c, rc.Pos, rc.Data[:16])
								return
							}
							if prev, ok := seen[p]; ok && s <= prev {
								t.Errorf("consumer %d: producer %d's record %d after %d", c, p, s, prev)
								return
							}
							seen[p] = s
						}
						mu.Lock()
						got += n
						for _, rc := range out[:n] {
							p, s, _ := checkPayload(rc.Data)
							last[p] = max(last[p], s)
						}
						mu.Unlock()
						if n > 0 {
							continue
						}
						select {
						case <-stop:
							if r.Len() == 0 {
								return
							}
						default:
						}
						_ = r.WaitData(ctx, time.Now().Add(10*time.Millisecond), nil)
					}
				}()
			}
			pw.Wait()
			close(stop)
			cw.Wait()
			st, _ := r.Stats()
			if st.Published != uint64(producers*per) {
				t.Fatalf("Published = %d, want %d", st.Published, producers*per)
			}
			if uint64(got)+st.Overwritten != uint64(producers*per) {
				t.Fatalf("consumed %d + overwritten %d != published %d", got, st.Overwritten, producers*per)
			}
			if mode == Blocking && st.Overwritten != 0 {
				t.Fatalf("blocking mode overwrote %d", st.Overwritten)
			}
			if mode == Blocking {
				for p := range producers {
					if last[p] != per-1 {
						t.Fatalf("producer %d's last record seen is %d, want %d", p, last[p], per-1)
					}
				}
			}
			t.Logf("%s: consumed %d, overwritten %d", mode, got, st.Overwritten)
		})
	}
}

// TestStatsSleepers counts a consumer asleep in WaitData and stops counting
// it once Notify wakes it: the event tests use to know consumers are idle.
func TestStatsSleepers(t *testing.T) {
	r := newTestRing(t, Geometry{SlotSize: 8, Capacity: 8}, Options{})
	if st, _ := r.Stats(); st.Sleepers != 0 {
		t.Fatalf("Sleepers = %d with nobody waiting", st.Sleepers)
	}
	woke := make(chan error)
	go func() { woke <- r.WaitData(context.Background(), time.Time{}, nil) }()
	for {
		st, err := r.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Sleepers == 1 {
			break
		}
		runtime.Gosched() // the condition is the event: the sleeper registers
	}
	push(t, r, "x")
	if err := <-woke; err != nil {
		t.Fatalf("WaitData: %v", err)
	}
	if st, _ := r.Stats(); st.Sleepers != 0 {
		t.Fatalf("Sleepers = %d after the sleeper woke", st.Sleepers)
	}
}
