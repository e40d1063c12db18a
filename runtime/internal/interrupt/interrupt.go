// Package interrupt is the instrumentation pass that makes every guest
// module stoppable and bounds its call depth, without wazero's per-call
// context watcher.
//
// # Design
//
// Instrument rewrites a WebAssembly binary before it is compiled. It adds
// three mutable i32 globals after every global the module imports or
// defines, and exports them under names the ABI reserves (ReservedPrefix) so
// the host can reach them through api.MutableGlobal:
//
//   - stop (StopExport): zero while the guest may run; the host sets it to
//     1 to stop the guest.
//   - depth (DepthExport): how many more calls the guest may nest,
//     DefaultDepth until the host sets its own bound.
//   - fuel (FuelExport): loop iterations and calls left before the guest
//     next yields to Go and reads stop.
//
// Every function body that needs an entry check (below: one that can take
// part in recursion, calls indirectly, catches, or calls too much) becomes
//
//	if depth < weight { depth = 0; unreachable }
//	depth -= weight
//	<fuel check>
//	block (result <the function's results>)
//	  <the original body, with a loop check after every loop header>
//	end
//	depth += weight
//
// and `return`, `return_call`, `return_call_indirect` and `return_call_ref`
// are preceded by `depth += weight`. The weight is 1 plus the frames the
// function can stack above itself without an entry check (below); the
// trap leaves depth at 0, which is how the host tells a depth trap from
// others. A branch to the function's own label becomes
// a branch to the added block, which has the same result types, so it too
// passes the exit. The fuel check (at entry) and the loop check are
//
//	fuel -= 1                      counter -= 1  ;; a local, set at entry
//	if fuel <= 0 {                 if counter == 0 {
//	    drop(memory.grow(0))           drop(memory.grow(0))
//	    if stop { unreachable }        if stop { unreachable }
//	    fuel = FuelPeriod              counter = LoopPeriod
//	}                              }
//
// The loop counter lives in a local, i.e. a register, because a global's
// load and store at every iteration would make a tight loop half again as
// slow; a load of stop at every iteration would cost as little but would not
// yield (below). Calls, including tail calls, which recurse without any loop
// instruction, spend the global fuel instead.
//
// Why count, and why memory.grow: machine code compiled by wazero cannot be
// preempted by the Go scheduler. A guest spinning in a loop that never
// leaves machine code would hold up every stop-the-world phase of the
// garbage collector, and with it every goroutine, the watchdog that would
// stop it included. memory.grow is the one instruction every module can use
// (a module without memory is given an empty one) that wazero implements by
// returning to Go, where the goroutine can be preempted; growing by zero
// pages changes nothing the guest can see. Doing so every LoopPeriod loop
// iterations and every FuelPeriod calls bounds how long the guest holds up
// the collector (TestSpinningGuestLetsGCRun hangs without it).
//
// To stop a call the host sets stop and then fuel to 0: the next checked
// call takes the slow path and traps, leaving fuel at or below zero, so
// every later checked call of the instance traps too; a loop reads stop
// within LoopPeriod iterations. Between two checks a guest makes at most
// MaxUncheckedCalls calls and no loop iteration. The guest's own decrement can overwrite the host's store of
// fuel if the two interleave; the stop is then seen at most FuelPeriod calls
// later, and the host's watchdog stores fuel again on each of its ticks.
//
// Each loop iteration and every MaxUncheckedCalls-th call at the latest
// therefore passes a check, and a chain of calls deeper than the bound
// traps instead of growing wazero's stack towards its 400 MB ceiling. wazero's compiler loads a mutable global from
// the instance at each global.get that follows a control-flow merge (a loop
// header is one) and does not hoist loads out of loops, so a store by another
// goroutine is seen; TestRunawayIsStopped in package plugin fails if a
// future wazero hoists it.
//
// A leaf function, which neither loops nor calls, is left as it is: it runs
// in time bounded by its size, and its frame is at most one beyond the depth
// bound. Small leaves are what call-heavy code calls most.
//
// Most other functions need no entry check either: only recursion makes the
// call depth unbounded, and only recursion or a loop makes the work between
// two checks unbounded. The pass reads every function's direct calls
// (call, return_call) into a call graph and gives a function an entry check
// when it
//
//   - lies on a cycle of the graph (a strongly connected component of more
//     than one function, or one calling itself): it can recurse;
//   - calls indirectly (call_indirect, call_ref and their tail forms): its
//     callee is unknown, so it may be on a cycle the graph cannot show;
//   - contains try, catch, catch_all or try_table (it must restore depth,
//     below);
//   - calls a defined function and either is the target of a return_call
//     (or the module contains any return_call_indirect or return_call_ref):
//     its frame replaces its caller's, whose count was given back; or a
//     table can hold it (an element segment or a ref.func names it): an
//     indirect call could start it from anywhere;
//   - would otherwise make more than MaxUncheckedCalls calls before a check:
//     each call site counts 1 plus the count of an unchecked callee (a
//     checked callee counts only its own call), wherever the site is. A
//     graph without cycles can still make exponentially many calls (f0
//     calling f1 twice, f1 calling f2 twice, ...), so the count is what
//     bounds the work, not the absence of recursion.
//
// Every other function that loops keeps its loop checks and nothing else.
//
// The weight of a checked function counts the unchecked frames it can
// stack: 1 for itself plus, over its unchecked direct callees, the largest
// height, where a function calling no defined function has height 0 (it
// is the frame allowed beyond the bound, like a leaf) and any other
// unchecked function 1 plus the largest height of its unchecked callees.
// Heights are at most MaxUncheckedCalls. An indirect call adds nothing: an
// unchecked function a table can hold has height 0.
// Exceptions unwind frames without passing their exits, which would leave
// depth too low. In a function that can catch (it contains try, catch,
// catch_all or try_table), the value of depth after the entry decrement is
// saved in an added local and written back to depth after every catch and
// catch_all, after every end and at every loop header (a try_table's catch
// branches to the end of a block or to a loop header), and the exit restores
// from it too. Writing the saved value back is correct anywhere in the body,
// since depth only changes while a callee runs.
//
// A start function would run inside instantiation, before the host holds the
// instance and can set stop. Instrument therefore removes the start section
// and exports the start function as StartExport; the host calls it right
// after instantiation, which is when the start function would have run.
//
// # Safety argument
//
// The guest cannot see or change the added globals: they take the indices
// right after the module's own globals, and Instrument refuses a module in
// which any instruction, constant expression or export names a global index
// at or past the module's original count (wazero would refuse such a module
// anyway; after instrumentation it would silently name ours). It also refuses
// a module that already exports a name with ReservedPrefix. Nothing else
// moves: types are only appended (a block type for multi-value results),
// functions, tables, memories, data, elements and every other index keep
// their numbers, the added local comes after all others, a memory is added
// only to a module that has none (so no instruction can name it), and
// custom sections
// (names, debug information) are kept byte for byte.
//
// Stack and time stay bounded with unchecked functions. Depth: take any
// stack of wasm frames. An unchecked function calls only directly (else it
// would be checked) and is on no cycle, so a run of consecutive unchecked
// frames is a path in the acyclic part of the call graph. A run that ends
// below a checked frame C, or on top, was entered from the checked frame
// below it by a call (not a tail call: an unchecked target of a tail call
// calls no defined function and is the top frame), so it is a chain of
// that frame's unchecked callees, and its frames but the top one are
// counted in that frame's weight (entered by an indirect call, the run is
// a single top frame). The only uncounted frames are the run at
// the bottom, entered from the host (at most MaxUncheckedCalls + 1), and
// one on top: a stack never exceeds the depth bound by more than
// MaxUncheckedCalls + 2 frames. Time: every loop back edge passes a loop
// check, so between two checks the guest runs a path without back edges
// through unchecked functions, which makes at most MaxUncheckedCalls calls,
// each into a body of bounded size. Exceptions: only checked frames change
// depth, and a function that catches is checked and restores its own.
//
// Instrument decodes every instruction wazero 1.12 accepts, with wazero's own
// reading of each encoding (a SIMD or atomic opcode is one byte, as wazero
// reads it). A byte it cannot decode makes it refuse the module with an
// *UnsupportedError naming the opcode and offset: a module is never compiled
// without its checks.
package interrupt

import (
	"errors"
	"fmt"
)

// Version identifies the pass's output. It is written into every
// instrumented module (custom section VersionSection), so compiled code cached
// under the module's hash is never reused across versions of the pass.
const Version = 2

// ReservedPrefix starts every export name the pass adds; a module that
// exports such a name itself is refused.
const ReservedPrefix = "qrun:"

// Names of the exports the pass adds.
const (
	// StopExport is the mutable i32 global the host sets to non-zero to
	// stop the guest at its next loop iteration or call.
	StopExport = ReservedPrefix + "stop"
	// DepthExport is the mutable i32 global holding how many more calls
	// the guest may nest; a call made when it is zero traps.
	DepthExport = ReservedPrefix + "depth"
	// FuelExport is the mutable i32 global counting down the loop
	// iterations and calls before the guest next yields and reads stop;
	// the host sets it to 0 to have stop read at once.
	FuelExport = ReservedPrefix + "fuel"
	// StartExport is the module's start function, removed from the start
	// section, for the host to call after instantiation.
	StartExport = ReservedPrefix + "start"
	// VersionSection is the custom section recording Version.
	VersionSection = ReservedPrefix + "interrupt"
)

// DefaultDepth is the initial call depth bound, which holds until the host
// sets its own (and while a start function runs). Ten thousand frames is far
// beyond what handlers nest (a Go guest's goroutine stacks live in linear
// memory and nest only a few wasm frames) yet keeps wazero's native stack to
// a few megabytes.
const DefaultDepth = 10000

// FuelPeriod is how many loop iterations and calls a guest runs between two
// yields to Go. A yield costs about as much as a host function call, so at
// this period it is noise; a tight loop still yields every few tens of
// microseconds, which is how long it can hold up the garbage collector.
const FuelPeriod = 1 << 14

// LoopPeriod is how many iterations a loop runs between two yields, counted
// in a local of the function (a register) rather than in fuel (a global in
// memory, whose load and store would double the cost of a tight loop).
const LoopPeriod = 1 << 12

// ErrMalformed is wrapped by every error for a module the pass cannot parse.
var ErrMalformed = errors.New("malformed module")

// UnsupportedError reports an instruction the pass cannot decode. The module
// is refused: running it without the pass's checks could not be stopped.
type UnsupportedError struct {
	// Offset is the byte offset of the instruction in the module.
	Offset int
	// Opcode is the opcode as hex bytes, e.g. "0xfc 0x12".
	Opcode string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("unsupported instruction %s at offset %#x", e.Opcode, e.Offset)
}

// ReservedError reports a module that uses what the pass reserves: an export
// named with ReservedPrefix, or a global index past the module's own globals.
type ReservedError struct {
	// Offset is the byte offset where the reference was found.
	Offset int
	// What describes the reference.
	What string
}

func (e *ReservedError) Error() string {
	return fmt.Sprintf("%s at offset %#x", e.What, e.Offset)
}
