package interrupt

// MaxUncheckedCalls bounds the calls a function without entry checks may
// make, counted over its body and, transitively, the bodies of the
// functions without entry checks it calls (see the package documentation):
// the most calls a guest can make between two checks that are not loop
// iterations.
const MaxUncheckedCalls = 64

// funcInfo is what the plan needs of one defined function's body.
type funcInfo struct {
	loops, catches         bool
	calls                  bool     // any call, to an import included
	callees                []uint32 // direct calls and return_calls, function indices
	tails                  []uint32 // return_call targets
	indirect, tailIndirect bool
}

// Kinds of function in the plan.
const (
	// kindLeaf: neither loops nor calls; kept byte for byte.
	kindLeaf = iota
	// kindUnchecked: no entry check (no depth, no fuel); its loops are
	// checked.
	kindUnchecked
	// kindChecked: the entry check of the package documentation, taking
	// weight levels of depth.
	kindChecked
)

type funcPlan struct {
	kind   uint8
	weight uint32 // kindChecked: depth taken at entry
	// cost is, for kindUnchecked and kindLeaf, the calls one invocation can
	// make without passing an entry check (at most MaxUncheckedCalls).
	cost uint32
	// height is, for kindUnchecked and kindLeaf, how many frames beyond
	// the last leaf one invocation can stack without an entry check: 0
	// when it calls no defined function, else 1 + the largest height of
	// its unchecked callees.
	height uint32
	state  uint8 // computing the plan: 0 new, 1 in progress, 2 done
}

// plan decides, for each defined function, which checks it needs; see the
// package documentation's safety argument. imported is the number of
// imported functions (the defined functions' indices start there).
//
// everyCall (a test hook) checks every function, leaves included;
// everyEntry (another) every function but leaves.
func plan(fs []funcInfo, imported uint32, refs []uint32, everyCall, everyEntry bool) []funcPlan {
	n := len(fs)
	p := make([]funcPlan, n)
	// A function a table can hold can be called indirectly, from anywhere.
	referenced := make([]bool, n)
	for _, f := range refs {
		if f >= imported && int(f-imported) < n {
			referenced[f-imported] = true
		}
	}
	cyclic := cycles(fs, imported)
	anyTailIndirect := false
	tailTarget := make([]bool, n)
	for i := range fs {
		anyTailIndirect = anyTailIndirect || fs[i].tailIndirect
		for _, c := range fs[i].tails {
			if c >= imported && int(c-imported) < n {
				tailTarget[c-imported] = true
			}
		}
	}
	definedCallee := func(i int) bool {
		for _, c := range fs[i].callees {
			if c >= imported {
				return true
			}
		}
		return false
	}
	var visit func(i int)
	visit = func(i int) {
		if p[i].state == 2 {
			return
		}
		p[i].state = 1
		defer func() { p[i].state = 2 }()
		f := &fs[i]
		if !f.loops && !f.calls && !everyCall {
			p[i].kind = kindLeaf
			return
		}
		// A function that could take part in recursion, could land in a
		// handler after frames were unwound, or could be called (or
		// tail-called) from where its frames are counted by no one,
		// keeps its check.
		checked := everyCall || everyEntry || cyclic[i] || f.indirect || f.catches
		if (tailTarget[i] || anyTailIndirect || referenced[i]) && definedCallee(i) {
			checked = true
		}
		var cost, height uint32
		if !checked {
			for _, c := range f.callees {
				cost++
				if c < imported {
					continue
				}
				j := int(c - imported)
				visit(j) // not cyclic, so j is not in progress
				if p[j].kind != kindChecked {
					cost += p[j].cost
					height = max(height, p[j].height)
				}
				if cost > MaxUncheckedCalls {
					checked = true
					break
				}
			}
			if definedCallee(i) {
				height++
			}
		}
		if !checked {
			p[i].kind, p[i].cost, p[i].height = kindUnchecked, cost, height
			return
		}
		p[i].kind = kindChecked
	}
	for i := range fs {
		visit(i)
	}
	// The weight of a checked function: its own frame and the deepest run
	// of unchecked frames it can start by direct calls. An indirect call
	// starts none: an unchecked function a table can hold calls no
	// defined function, so it is a top frame.
	for i := range fs {
		if p[i].kind != kindChecked {
			continue
		}
		var h uint32
		for _, c := range fs[i].callees {
			if c >= imported && p[c-imported].kind != kindChecked {
				h = max(h, p[c-imported].height)
			}
		}
		p[i].weight = 1 + h
	}
	return p
}

// cycles reports the defined functions that are on a cycle of direct calls
// (a strongly connected component of more than one function, or one that
// calls itself), by Tarjan's algorithm, iteratively.
func cycles(fs []funcInfo, imported uint32) []bool {
	n := len(fs)
	index := make([]int32, n) // 0: unvisited; else visit order + 1
	low := make([]int32, n)
	onStack := make([]bool, n)
	cyclic := make([]bool, n)
	var stack []int32
	type frame struct{ v, next int32 }
	var call []frame
	var counter int32
	for root := range fs {
		if index[root] != 0 {
			continue
		}
		call = append(call[:0], frame{v: int32(root)})
		for len(call) > 0 {
			top := &call[len(call)-1]
			v := top.v
			if top.next == 0 && index[v] == 0 {
				counter++
				index[v], low[v] = counter, counter
				stack = append(stack, v)
				onStack[v] = true
			}
			if int(top.next) < len(fs[v].callees) {
				c := fs[v].callees[top.next]
				top.next++
				if c < imported || int(c-imported) >= n {
					continue
				}
				w := int32(c - imported)
				if w == v {
					cyclic[v] = true
				}
				if index[w] == 0 {
					call = append(call, frame{v: w})
				} else if onStack[w] {
					low[v] = min(low[v], index[w])
				}
				continue
			}
			call = call[:len(call)-1]
			if len(call) > 0 {
				u := call[len(call)-1].v
				low[u] = min(low[u], low[v])
			}
			if low[v] == index[v] {
				k := len(stack) - 1
				for stack[k] != v {
					k--
				}
				for _, w := range stack[k:] {
					onStack[w] = false
					if len(stack)-k > 1 {
						cyclic[w] = true
					}
				}
				stack = stack[:k]
			}
		}
	}
	return cyclic
}
