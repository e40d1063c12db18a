package interrupt

import (
	"errors"
	"strings"
	"testing"
)

// TestCallGraph runs testdata/callgraph.wat, whose shapes of call graph
// decide which functions keep their entry check (callgraph.go).
func TestCallGraph(t *testing.T) {
	wasm := readTestdata(t, "callgraph")
	rt := newRuntime(t)
	inst := instantiate(t, rt, mustInstrument(t, wasm))
	depth, fuel := global(t, inst, DepthExport), global(t, inst, FuelExport)
	trapsAtBound := func(fn string, arg uint64) {
		t.Helper()
		if _, err := call(t, inst, fn, arg); err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("%s(%d) under depth %d: %v, want a trap", fn, arg, depth.Get(), err)
		}
		if d := depth.Get(); d != 0 {
			t.Fatalf("%s: depth %d after the trap, want 0 (how the host tells a depth trap)", fn, d)
		}
	}
	spends := func(fn string, arg, want uint64) {
		t.Helper()
		fuel.Set(1 << 30)
		if _, err := call(t, inst, fn, arg); err != nil {
			t.Fatalf("%s(%d): %v", fn, arg, err)
		}
		if got := 1<<30 - fuel.Get(); got != want {
			t.Fatalf("%s(%d): %d checked entries, want %d", fn, arg, got, want)
		}
	}

	// weighted(n) nests n+1 recursive frames, each calling (at the
	// bottom) a chain of three unchecked frames and a leaf: only the
	// recursive frames are checked, each taking 1+3 levels.
	spends("weighted", 24, 25)
	depth.Set(100)
	if _, err := call(t, inst, "weighted", 24); err != nil {
		t.Fatalf("weighted(24) under depth 100: %v", err)
	}
	if d := depth.Get(); d != 100 {
		t.Fatalf("depth %d after balanced calls, want 100", d)
	}
	trapsAtBound("weighted", 25)

	// Recursion through call_indirect and mutual recursion trap at the
	// bound.
	for _, fn := range []string{"indirect", "mutual"} {
		depth.Set(DefaultDepth)
		trapsAtBound(fn, 0)
	}

	// A deep acyclic chain: d0 -> ... -> d199 -> leaf d200. Counting up
	// from the leaf, d136..d199 make at most MaxUncheckedCalls calls each
	// before a check and go unchecked; d135 would make 65 and is checked,
	// which starts the count again: d135, d70 and d5 are checked, each
	// taking 1 + 64 levels for the unchecked run above it. The 201 frames
	// are the 195 levels, the 5 unchecked frames below the first check and
	// the leaf on top.
	depth.Set(DefaultDepth)
	spends("chain", 0, 3)
	depth.Set(195)
	if _, err := call(t, inst, "chain", 0); err != nil {
		t.Fatalf("chain under depth 195: %v", err)
	}
	depth.Set(194)
	trapsAtBound("chain", 0)

	// exp makes 2^40 calls with neither loop nor recursion: its upper
	// levels keep the check, so it is stopped. (Unchecked, it would run
	// for hours and hang the test.)
	depth.Set(DefaultDepth)
	stopNow(t, inst)
	if _, err := call(t, inst, "exp", 0); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("exp with stop set: %v, want the stop trap", err)
	}
}

// TestPlan covers what the module above cannot show by running it.
func TestPlan(t *testing.T) {
	const imp = 1 // function 0 is imported
	leaf := funcInfo{}
	callsTo := func(fs ...uint32) funcInfo { return funcInfo{calls: true, callees: fs} }
	for _, tc := range []struct {
		name  string
		fs    []funcInfo
		kinds []uint8
		w     []uint32 // weights of the checked functions, in order
	}{
		{"calls an import only", []funcInfo{callsTo(0)}, []uint8{kindUnchecked}, nil},
		{"self recursion", []funcInfo{callsTo(1)}, []uint8{kindChecked}, []uint32{1}},
		{"catches", []funcInfo{{calls: true, catches: true, callees: []uint32{2}}, leaf},
			[]uint8{kindChecked, kindLeaf}, []uint32{1}},
		// f1 tail-calls f2, which calls the leaf f3: f2's frame replaces
		// f1's and would be counted by no one, so f2 keeps its check.
		{"tail target with callees", []funcInfo{
			{calls: true, callees: []uint32{2}, tails: []uint32{2}},
			callsTo(3), leaf},
			[]uint8{kindUnchecked, kindChecked, kindLeaf}, []uint32{1}},
		{"tail target without callees", []funcInfo{
			{calls: true, callees: []uint32{2}, tails: []uint32{2}}, {loops: true}},
			[]uint8{kindUnchecked, kindUnchecked}, nil},
		// Anywhere a return_call_indirect: every function with callees
		// could be tail-called, so each keeps its check.
		{"indirect tail call", []funcInfo{
			{calls: true, indirect: true, tailIndirect: true}, callsTo(3), leaf},
			[]uint8{kindChecked, kindChecked, kindLeaf}, []uint32{1, 1}},
		// An indirect caller takes the deepest unchecked run of the
		// module: f2 -> f3 -> leaf f4 is 2 frames.
		{"indirect call", []funcInfo{
			{calls: true, indirect: true}, callsTo(3), callsTo(4), leaf},
			[]uint8{kindChecked, kindUnchecked, kindUnchecked, kindLeaf}, []uint32{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := plan(tc.fs, imp, false, false)
			var w []uint32
			for i := range p {
				if p[i].kind != tc.kinds[i] {
					t.Fatalf("function %d: kind %d, want %d", i+imp, p[i].kind, tc.kinds[i])
				}
				if p[i].kind == kindChecked {
					w = append(w, p[i].weight)
				}
			}
			if len(w) != len(tc.w) {
				t.Fatalf("weights %v, want %v", w, tc.w)
			}
			for i := range w {
				if w[i] != tc.w[i] {
					t.Fatalf("weights %v, want %v", w, tc.w)
				}
			}
		})
	}
}

// TestCallOutOfRange: a call to a function the module does not have is
// refused as malformed (the plan would index past its functions).
func TestCallOutOfRange(t *testing.T) {
	if _, err := Instrument(testModule(code(0x10, 0x05, 0x0b))); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
}
