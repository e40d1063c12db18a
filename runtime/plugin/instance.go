package plugin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/engines"
	"github.com/tetratelabs/wazero/api"
)

// Instance is one live module instance. It serves one delivery at a time:
// Handle must not be called concurrently. Close, however, may be called from
// any goroutine while Handle runs, to abort a call (the dispatcher does this
// when a drain deadline passes).
type Instance struct {
	p      *Plugin
	st     instanceState
	ctx    context.Context // carries &st; cancelled when the instance is stopped
	cancel context.CancelFunc

	// stopMu guards stopG and stopReq: the watchdog or Close may ask for a
	// stop before instantiation has returned the global to set.
	stopMu  sync.Mutex
	stopG   api.MutableGlobal // the instrumentation's stop flag
	fuelG   api.MutableGlobal // and its fuel, zeroed to have stop read now
	stopReq bool
	depth   api.MutableGlobal // the instrumentation's call depth budget

	mod                 api.Module
	mem                 api.Memory
	alloc, handle, free api.Function
	stack               []uint64 // reused by every call: no per-call allocation
	bufPtr, bufCap      uint32   // body region from qrun_alloc, reused while bodies fit

	stdout, stderr *lineWriter

	// afterHandle, if set, runs right after qrun_handle returns and before
	// the call is marked finished; tests use it to stage races.
	afterHandle func()

	broken bool // written only by the goroutine calling Handle

	// seq is odd while a guest call runs; the watchdog samples it, and Close
	// uses it to tell whether a running call will do the cleanup.
	seq      atomic.Uint64
	timedOut atomic.Bool
	closed   atomic.Bool
	released atomic.Bool
	// Touched only by the watchdog goroutine, under Plugin.mu.
	wdSeq   uint64
	wdTicks int
}

// Result is the outcome of one Handle call.
type Result struct {
	// Verdict is what to do with the message; Nack whenever Err is set.
	Verdict engines.Verdict
	// Delay is the guest's set_delay value, meaningful when DelaySet. It is
	// not reported for failures, so a crashing guest cannot defeat the
	// retry policy's backoff.
	Delay    time.Duration
	DelaySet bool
	// Reason is the guest's set_reason text for a Nack or DeadLetter
	// verdict it returned, as given (cut to MaxGuestReason bytes); empty
	// when it set none, for Ack and Requeue, and for failures (Err set),
	// whose reason is Err.
	Reason string
	// Effects are the delivery's held writes and publishes (Spec.KV with
	// Tx, Spec.TxPublish), set only for an Ack that has some: the caller
	// applies them with the ack (engines.Delivery.SettleTx) or not at all.
	// The caller owns them: an engine may hold them past the next Handle
	// (engines.GroupTxSettler).
	Effects *engines.Effects
	// Err is nil for a verdict the guest returned normally; otherwise it
	// wraps ErrTrap, ErrTimeout, ErrBadVerdict, ErrBadPointer, ErrAlloc or
	// ErrBroken, and the instance is Broken.
	Err error
}

// Broken reports that the instance failed (trap, timeout, bad verdict, bad
// pointer, allocation failure) and must be closed and replaced: its memory
// may be inconsistent or wazero may already have closed it. It is also true
// when the watchdog stopped the instance just as a call returned normally:
// the call's verdict stands, but the instance's context is cancelled, so it
// could serve nothing more.
func (in *Instance) Broken() bool {
	return in.broken || in.closed.Load() || in.timedOut.Load() || in.ctx.Err() != nil
}

// Handle delivers d to qrun_handle and returns the guest's verdict. ctx is
// what publish and extend_lease pass to the runtime; the guest code itself
// is bounded by the plugin's timeout, not by ctx.
//
// start is when the delivery began, as time.Now read it (with its monotonic
// reading): the end of the delivery's timeout, which bounds every HTTP
// request the guest makes, is start plus the timeout. The caller passes it
// because the dispatcher reads the clock for each delivery anyway (lease
// check, latency); reading it again here cost every delivery of a module
// importing http_request about 30 ns on a virtual machine, around a fifth of
// a trivial handler's call.
func (in *Instance) Handle(ctx context.Context, d *engines.Delivery, start time.Time) Result {
	if in.broken || in.timedOut.Load() {
		return Result{Verdict: engines.Nack, Err: ErrBroken}
	}
	if err := ctx.Err(); err != nil {
		return Result{Verdict: engines.Nack, Err: err}
	}
	body := d.Body
	if uint64(len(body)) > math.MaxUint32 {
		return in.failed(fmt.Errorf("%w: body of %d bytes cannot fit a 32-bit guest", ErrAlloc, len(body)))
	}
	n := uint32(len(body))
	// Mark the call running before looking at closed; Close does the
	// reverse, so at least one of the two sees the other (see Close).
	in.seq.Add(1)
	defer in.endCall()
	if in.closed.Load() {
		return in.failed(fmt.Errorf("%w: instance closed", ErrBroken))
	}

	ptr := in.bufPtr
	if n > in.bufCap {
		var err error
		if ptr, err = in.grow(n); err != nil {
			return in.failed(err)
		}
	}
	if n > 0 {
		in.mem.Write(ptr, body) // in bounds: grow checked the region
	}
	st := &in.st
	st.d, st.ctx = d, ctx
	st.delay, st.delaySet, st.keysReady, st.reasonSet = 0, false, false, false
	st.http.n, st.http.start = 0, start
	st.tx.reset()
	in.stack[0], in.stack[1] = uint64(ptr), uint64(n)
	err := in.handle.CallWithStack(in.ctx, in.stack)
	if in.afterHandle != nil {
		in.afterHandle()
	}
	st.d, st.ctx = nil, nil
	st.http.resp, st.http.respHdrs = nil, nil // a response can be large: not kept past its delivery
	if err != nil {
		return in.failed(in.callError(abi.ExportHandle, err))
	}
	v := api.DecodeI32(in.stack[0])
	if v < abi.VerdictAck || v > abi.VerdictDeadLetter {
		return in.failed(fmt.Errorf("%w: qrun_handle returned %d; want 0 (ack), 1 (nack), 2 (requeue) or 3 (dead-letter)", ErrBadVerdict, v))
	}
	r := Result{Verdict: engines.Verdict(v), Delay: st.delay, DelaySet: st.delaySet}
	if st.tx.used && r.Verdict == engines.Ack && !st.tx.eff.Empty() {
		r.Effects = st.tx.take()
	}
	if st.reasonSet && (r.Verdict == engines.Nack || r.Verdict == engines.DeadLetter) {
		r.Reason = string(st.reason) // the only allocation, and only when asked for
	}
	return r
}

// grow obtains a region for an n-byte body. It asks for the next power of
// two (at least 256 bytes) so a stream of slowly growing bodies costs a
// logarithmic number of allocations in a guest whose allocator never frees,
// and falls back to exactly n when the guest cannot spare that much.
//
// As ABI.md "Buffers" says, the region held so far is passed to qrun_free
// (when exported) before anything is allocated, so a guest whose allocator
// has room for one buffer only can still grow it.
func (in *Instance) grow(n uint32) (uint32, error) {
	if in.free != nil && in.bufCap > 0 {
		in.stack[0], in.stack[1] = uint64(in.bufPtr), uint64(in.bufCap)
		in.bufPtr, in.bufCap = 0, 0
		if err := in.free.CallWithStack(in.ctx, in.stack); err != nil {
			return 0, in.callError(abi.ExportFree, err)
		}
	}
	want := uint32(256)
	if n > want {
		want = n
		if n <= 1<<31 {
			want = 1 << bits.Len32(n-1)
		}
	}
	ptr, err := in.callAlloc(want)
	if err != nil {
		return 0, err
	}
	if ptr == 0 && want != n {
		want = n
		if ptr, err = in.callAlloc(want); err != nil {
			return 0, err
		}
	}
	if ptr == 0 {
		return 0, fmt.Errorf("%w: qrun_alloc(%d) returned 0 (guest out of memory)", ErrAlloc, want)
	}
	if uint64(ptr)+uint64(want) > uint64(in.mem.Size()) {
		return 0, fmt.Errorf("%w: qrun_alloc(%d) returned region [%#x, %#x) outside guest memory of %d bytes",
			ErrAlloc, want, ptr, uint64(ptr)+uint64(want), in.mem.Size())
	}
	in.bufPtr, in.bufCap = ptr, want
	return ptr, nil
}

func (in *Instance) callAlloc(size uint32) (uint32, error) {
	in.stack[0] = uint64(size)
	if err := in.alloc.CallWithStack(in.ctx, in.stack); err != nil {
		return 0, in.callError(abi.ExportAlloc, err)
	}
	return uint32(in.stack[0]), nil
}

// endCall marks the end of a guest call and, if Close ran meanwhile,
// finishes the release Close left to it.
func (in *Instance) endCall() {
	in.seq.Add(1)
	if in.closed.Load() {
		_ = in.release(context.Background())
	}
}

// call runs a guest function outside Handle (_initialize, qrun_init) under
// the same timeout.
func (in *Instance) call(f api.Function, name string) error {
	in.seq.Add(1)
	err := f.CallWithStack(in.ctx, in.stack)
	in.seq.Add(1)
	if err != nil {
		return in.callError(name, err)
	}
	return nil
}

// interrupt stops the instance: the guest traps at its next checked loop
// header or function entry (package interrupt), and host functions blocked on the instance's context
// (publish, extend_lease, a WASI sleep) return. It may be called from any
// goroutine, before, during or after a call, any number of times.
func (in *Instance) interrupt() {
	in.stopMu.Lock()
	in.stopReq = true
	if in.stopG != nil {
		in.stopG.Set(1)
		in.fuelG.Set(0)
	}
	in.stopMu.Unlock()
	in.cancel()
}

// setStopGlobals hands the instance its stop flag and fuel once
// instantiated, stopping it at once if a stop was asked for meanwhile.
func (in *Instance) setStopGlobals(stop, fuel api.MutableGlobal) {
	in.stopMu.Lock()
	in.stopG, in.fuelG = stop, fuel
	if in.stopReq {
		stop.Set(1)
		fuel.Set(0)
	}
	in.stopMu.Unlock()
}

// errSleepStopped ends a WASI sleep of a stopped instance.
var errSleepStopped = errors.New("sleep interrupted: instance stopped")

// nanosleep is the instance's WASI sleep (poll_oneoff with a clock): it ends
// when the instance is stopped, so a guest that sleeps for an hour is
// stopped with its timeout like one that loops. It ends by panicking, which
// wazero turns into an error of the guest call (as for PointerError), so
// the call fails as a timeout instead of returning a verdict after its
// time was up.
func (in *Instance) nanosleep(ns int64) {
	if ns <= 0 {
		return
	}
	if in.ctx.Err() != nil {
		panic(errSleepStopped)
	}
	t := time.NewTimer(time.Duration(ns))
	select {
	case <-t.C:
	case <-in.ctx.Done():
		t.Stop()
		panic(errSleepStopped)
	}
}

// callError classifies an error from a guest call. The watchdog's flag, not
// wazero's exit code, decides "timeout", since a guest may also see its
// context cancelled when the plugin is closed.
func (in *Instance) callError(fn string, err error) error {
	if in.timedOut.Load() {
		return fmt.Errorf("%w: %s ran longer than %v and was stopped", ErrTimeout, fn, in.p.timeout)
	}
	if in.closed.Load() {
		return fmt.Errorf("%w: %s: stopped because the instance was closed: %w", ErrTrap, fn, err)
	}
	if in.depth != nil && in.depth.Get() == 0 {
		// A call made with less budget left than it takes traps at its
		// entry and leaves it at zero. (A trap of the guest's own in a frame at exactly the
		// bound reads the same; it is a trap either way.)
		return fmt.Errorf("%w: %w: %s nested more than %d calls", ErrTrap, ErrCallDepth, fn, in.p.maxDepth)
	}
	var pe *PointerError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", fn, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrTrap, fn, err)
}

func (in *Instance) failed(err error) Result {
	in.broken = true
	return Result{Verdict: engines.Nack, Err: err}
}

// Close releases the instance; it is safe to call more than once and from
// another goroutine while Handle runs, in which case the running guest call
// is stopped (Handle returns ErrTrap) and the call's goroutine finishes the
// release, because wazero must not free a module while it executes.
func (in *Instance) Close(ctx context.Context) error {
	if in.closed.Swap(true) {
		return nil
	}
	in.p.unregister(in)
	in.interrupt() // a running call traps at its next check
	if in.seq.Load()&1 == 1 {
		// A call is running: its endCall sees closed (it loads closed after
		// its seq update, we loaded seq after our closed update) and releases.
		return nil
	}
	return in.release(ctx)
}

// release closes the module once, whoever gets here first.
func (in *Instance) release(ctx context.Context) error {
	if in.released.Swap(true) {
		return nil
	}
	in.stdout.flush()
	in.stderr.flush()
	if in.mod == nil {
		return nil
	}
	if err := in.mod.Close(ctx); err != nil {
		return fmt.Errorf("plugin: close instance: %w", err)
	}
	return nil
}
