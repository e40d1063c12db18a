// Package interrupt is the instrumentation pass that makes every guest
// module stoppable and bounds its call depth, without wazero's per-call
// context watcher.
//
// # Design
//
// Instrument rewrites a WebAssembly binary before it is compiled. It adds two
// mutable i32 globals after every global the module imports or defines, and
// exports them under names the ABI reserves (StopExport, DepthExport) so the
// host can reach them through api.MutableGlobal:
//
//   - stop: zero while the guest may run. The host's watchdog sets it to 1
//     to stop a call that overran its timeout.
//   - depth: the calls the guest may still nest, DefaultDepth until the host
//     sets the consumer's limit.
//
// Every function body becomes
//
//	if (depth == 0 | stop != 0) unreachable   ;; entry check
//	depth -= 1
//	block (result <the function's results>)
//	  <the original body, with a stop check after every loop header>
//	end
//	depth += 1
//
// and `return`, `return_call`, `return_call_indirect` and `return_call_ref`
// are preceded by `depth += 1`. A branch to the function's own label becomes
// a branch to the added block, which has the same result types, so it too
// passes the exit. Each loop iteration and each call (a tail call included,
// which recurses without any loop instruction) therefore reads stop, and a
// chain of calls deeper than the limit traps instead of growing wazero's
// stack towards its 400 MB ceiling.
//
// A loop header check is `global.get stop; if; unreachable; end`. wazero's
// compiler loads a mutable global from the instance on every global.get and
// does not hoist loads out of loops, so a store by another goroutine is seen
// at the next iteration; TestTightLoopIsStopped in package plugin fails if a
// future wazero hoists it.
//
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
// their numbers, the added local comes after all others, and custom sections
// (names, debug information) are kept byte for byte.
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
const Version = 1

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
