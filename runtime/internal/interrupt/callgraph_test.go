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
	// bound, one level a frame: $via, which a table holds and which calls
	// a defined function, keeps its check, so the indirect call starts no
	// unchecked run that $indirect would have to count. Under a bound of
	// 100, 100 entries pass their check and the next traps.
	for _, fn := range []string{"indirect", "mutual"} {
		depth.Set(100)
		fuel.Set(1 << 30)
		trapsAtBound(fn, 0)
		if got := 1<<30 - fuel.Get(); got != 100 {
			t.Fatalf("%s: %d checked entries before the trap, want 100", fn, got)
		}
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
		refs  []uint32 // functions a table can hold
		fs    []funcInfo
		kinds []uint8
		w     []uint32 // weights of the checked functions, in order
	}{
		{"calls an import only", nil, []funcInfo{callsTo(0)}, []uint8{kindUnchecked}, nil},
		{"self recursion", nil, []funcInfo{callsTo(1)}, []uint8{kindChecked}, []uint32{1}},
		{"catches", nil, []funcInfo{{calls: true, catches: true, callees: []uint32{2}}, leaf},
			[]uint8{kindChecked, kindLeaf}, []uint32{1}},
		// f1 tail-calls f2, which calls the leaf f3: f2's frame replaces
		// f1's and would be counted by no one, so f2 keeps its check.
		{"tail target with callees", nil, []funcInfo{
			{calls: true, callees: []uint32{2}, tails: []uint32{2}},
			callsTo(3), leaf},
			[]uint8{kindUnchecked, kindChecked, kindLeaf}, []uint32{1}},
		{"tail target without callees", nil, []funcInfo{
			{calls: true, callees: []uint32{2}, tails: []uint32{2}}, {loops: true}},
			[]uint8{kindUnchecked, kindUnchecked}, nil},
		// Anywhere a return_call_indirect: every function with callees
		// could be tail-called, so each keeps its check.
		{"indirect tail call", nil, []funcInfo{
			{calls: true, indirect: true, tailIndirect: true}, callsTo(3), leaf},
			[]uint8{kindChecked, kindChecked, kindLeaf}, []uint32{1, 1}},
		// f2 and f3 may be in a table: f2, which calls the leaf f4, keeps
		// its check; f3, which calls only an import, is a top frame.
		// Neither adds to the weight of the indirect caller f1.
		{"indirect call", []uint32{2, 3}, []funcInfo{
			{calls: true, indirect: true}, callsTo(4), callsTo(0), leaf},
			[]uint8{kindChecked, kindChecked, kindUnchecked, kindLeaf}, []uint32{1, 1}},
		// Not in a table, f1 -> f2 -> leaf f3 need no check.
		{"direct run", nil, []funcInfo{callsTo(2, 0), callsTo(3), leaf},
			[]uint8{kindUnchecked, kindUnchecked, kindLeaf}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := plan(tc.fs, imp, tc.refs, false, false)
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
