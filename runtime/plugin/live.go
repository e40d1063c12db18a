package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/httpout"
)

// Live is one consumer's plugin across all its versions: the thing a
// dispatcher draws instances from while the module file is replaced under it.
//
// A new version is compiled, checked against the ABI and warmed (instances
// created, _initialize and qrun_init run) off the delivery path, with a Go P
// of its own so it does not take one from the deliveries (see extraProcs);
// only then is it swapped in, with one atomic store. A
// version that fails any of those steps never serves: the running one keeps
// going, the failure is logged with the file and the reason and kept in
// Status. Deliveries already running finish on the version they started on;
// an instance of a replaced version is closed as soon as it is idle, and the
// version's wazero runtime (compiled code and all) is released once its last
// instance is gone, i.e. when the last delivery on it returns.
//
// Versions are reference counted rather than locked: the delivery path
// touches only its own instance's state word and one read-mostly flag of its
// version, so a swap costs the deliveries around it nothing but the switch.
type Live struct {
	host *Host
	spec Spec
	pub  Publisher
	opts LiveOptions
	log  *zap.Logger

	cur     atomic.Pointer[version]
	ownHTTP bool // spec.HTTPClient was built by LoadLive, which closes it
	// droppedBefore sums LogDropped of the versions replaced so far.
	droppedBefore atomic.Uint64
	// versions counts versions not yet released, the current one included.
	versions atomic.Int64

	reloadMu sync.Mutex // one reload at a time, in the order they were asked

	trigger chan struct{} // cap 1: Trigger coalesces into one pending reload
	ctx     context.Context
	cancel  context.CancelFunc
	loopWG  sync.WaitGroup

	mu      sync.Mutex
	st      Status
	changed chan struct{} // closed and replaced on every status change
	closed  bool
	// updated, if set, sees every status change as it is made, under mu
	// (tests).
	updated func(Status)
}

// LiveOptions tune how versions are prepared.
type LiveOptions struct {
	// Warm is how many instances of a version are made ready before it
	// serves (at least one, since running qrun_init is part of checking a
	// version). A dispatcher with N workers wants N, so that none of them
	// waits for an instance when the version changes.
	Warm int
	// Refill keeps Warm instances ready at all times, made in the
	// background, for consumers that take a fresh instance per delivery
	// (per-message isolation): the instantiation cost leaves the delivery
	// path as long as the background keeps up.
	Refill bool
}

// Status is what a Live reports about its versions.
type Status struct {
	// Path is the module file.
	Path string
	// Digest is the hex SHA-256 of the current version's bytes.
	Digest string
	// LoadedAt is when the current version started serving.
	LoadedAt time.Time
	// FirstDeliveryAt is when the current version began its first delivery;
	// zero until it has one.
	FirstDeliveryAt time.Time
	// Reloads counts versions swapped in after the first.
	Reloads int64
	// FailedReloads counts versions refused (unreadable, invalid, failing
	// qrun_init); none of them served.
	FailedReloads int64
	// LastError is the reason the last refused version was refused, with
	// LastErrorAt and LastErrorDigest (empty when the file could not be read).
	LastError       string
	LastErrorAt     time.Time
	LastErrorDigest string
	// Versions is the number of versions still loaded: 1, plus replaced
	// versions whose last delivery has not returned yet.
	Versions int
}

// DefaultWarm is the number of instances warmed when LiveOptions.Warm is 0.
const DefaultWarm = 1

// LoadLive loads the first version of a consumer's plugin from s.Path (or
// s.Wasm) and returns it ready to serve. Later versions come from Reload,
// Trigger (the file watcher) or Swap.
func (h *Host) LoadLive(ctx context.Context, s Spec, pub Publisher, o LiveOptions) (*Live, error) {
	if o.Warm < 1 {
		o.Warm = DefaultWarm
	}
	l := &Live{
		host: h, spec: s, pub: pub, opts: o,
		log:     h.log.With(zap.String("consumer", s.Consumer), zap.String("file", s.Path)),
		trigger: make(chan struct{}, 1),
		changed: make(chan struct{}),
	}
	wasm := s.Wasm
	l.spec.Wasm = nil // each version brings its own bytes
	if l.spec.HTTPClient == nil {
		l.spec.HTTPClient, l.ownHTTP = h.newHTTPClient(s, l.log), true
	}
	fail := func(err error) (*Live, error) {
		if l.ownHTTP {
			l.spec.HTTPClient.Close()
		}
		return nil, err
	}
	if wasm == nil {
		b, err := os.ReadFile(s.Path)
		if err != nil {
			return fail(fmt.Errorf("plugin: load consumer %q: %w", s.Consumer, err))
		}
		wasm = b
	}
	v, err := l.prepare(ctx, wasm)
	if err != nil {
		return fail(err)
	}
	l.cur.Store(v)
	l.st = Status{Path: s.Path, Digest: v.p.Digest(), LoadedAt: time.Now(), Versions: 1}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.loopWG.Add(1)
	go l.reloadLoop()
	return l, nil
}

// Status returns the current status.
func (l *Live) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.st
	st.Versions = int(l.versions.Load())
	return st
}

// Changed returns a channel closed at the next change of Status. Take the
// channel before reading Status, so no change falls in between.
func (l *Live) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// update changes the status under the lock and wakes Changed's waiters.
func (l *Live) update(f func(*Status)) {
	l.mu.Lock()
	if f != nil {
		f(&l.st)
	}
	if l.updated != nil {
		l.updated(l.st)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// LogDropped is the number of guest log lines dropped by the rate limit,
// over all versions since the consumer started.
func (l *Live) LogDropped() uint64 {
	n := l.droppedBefore.Load()
	if v := l.cur.Load(); v != nil {
		n += v.p.LogDropped()
	}
	return n
}

// Digest is the hex SHA-256 of the current version.
func (l *Live) Digest() string {
	if v := l.cur.Load(); v != nil {
		return v.p.Digest()
	}
	return ""
}

// Trigger asks for a Reload in the background and returns at once; several
// triggers while one reload runs collapse into one more reload, which reads
// the file as it is by then. The file watcher calls it.
func (l *Live) Trigger() {
	select {
	case l.trigger <- struct{}{}:
	default:
	}
}

func (l *Live) reloadLoop() {
	defer l.loopWG.Done()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.trigger:
		}
		// Reload logs and records its own failures.
		_ = l.Reload(l.ctx)
	}
}

// ErrUnchanged is returned by Reload when the file holds the version that
// already runs, or the version refused last time: nothing was done.
var ErrUnchanged = errors.New("plugin unchanged")

// Reload reads the module file and, if it holds a new version, swaps it in
// (see Swap). A missing file is not a failure: it is usually the gap in a
// remove-then-copy deployment, and the running version keeps serving.
func (l *Live) Reload(ctx context.Context) error {
	if l.spec.Path == "" {
		return ErrUnchanged
	}
	l.reloadMu.Lock()
	defer l.reloadMu.Unlock()
	before, err := os.Stat(l.spec.Path)
	if errors.Is(err, fs.ErrNotExist) {
		l.log.Warn("plugin file is gone; the running version keeps serving")
		return ErrUnchanged
	}
	wasm, err := os.ReadFile(l.spec.Path)
	if err != nil {
		l.failed("", fmt.Errorf("plugin: reload consumer %q: %w", l.spec.Consumer, err))
		return err
	}
	digest := digestOf(wasm)
	if digest == l.Digest() {
		return ErrUnchanged
	}
	l.mu.Lock()
	refusedBefore := digest == l.st.LastErrorDigest
	l.mu.Unlock()
	if refusedBefore {
		return ErrUnchanged
	}
	err = l.swap(ctx, wasm, digest, func() bool {
		// A file still being written fails to compile for no fault of its
		// own; when it changed since we read it, the watcher will trigger
		// again with the rest, so this attempt is not counted.
		after, err := os.Stat(l.spec.Path)
		return err == nil && (after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()))
	})
	return err
}

// Swap makes wasm the serving version if it compiles, passes the ABI check
// and initialises; otherwise the running version stays and the error says
// why. It returns once the new version serves.
func (l *Live) Swap(ctx context.Context, wasm []byte) error {
	l.reloadMu.Lock()
	defer l.reloadMu.Unlock()
	digest := digestOf(wasm)
	if digest == l.Digest() {
		return ErrUnchanged
	}
	return l.swap(ctx, wasm, digest, nil)
}

// swap runs with reloadMu held. stillWriting, if set, is asked after a
// failure whether the file moved on meanwhile.
func (l *Live) swap(ctx context.Context, wasm []byte, digest string, stillWriting func() bool) error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return fmt.Errorf("plugin: swap consumer %q: %w", l.spec.Consumer, ErrClosed)
	}
	start := time.Now()
	l.host.precompile(ctx, wasm, l.log)
	var v *version
	var err error
	if l.host.opts.ExtraProc {
		withOwnProc(func() { v, err = l.prepare(ctx, wasm) })
	} else {
		v, err = l.prepare(ctx, wasm)
	}
	if err != nil {
		if stillWriting != nil && stillWriting() {
			l.log.Debug("plugin file changed while it was loaded; waiting for the next change", zap.Error(err))
			return err
		}
		l.failed(digest, err)
		return err
	}
	old := l.cur.Swap(v)
	now := time.Now()
	l.droppedBefore.Add(old.p.LogDropped())
	// Retired before the status says so: once Status (and so GET
	// /v1/consumers) shows the new version, no instance of the old one
	// takes another delivery.
	old.retire()
	l.update(func(st *Status) {
		st.Digest, st.LoadedAt, st.FirstDeliveryAt = digest, now, time.Time{}
		if at := v.firstAt.Load(); at != 0 { // it served already: it is current since cur.Swap
			st.FirstDeliveryAt = time.Unix(0, at)
		}
		st.Reloads++
	})
	l.log.Info("plugin version swapped in",
		zap.String("version", v.p.Version()), zap.String("previous", old.p.Version()),
		zap.Duration("prepared_in", now.Sub(start)))
	return nil
}

func (l *Live) failed(digest string, err error) {
	now := time.Now()
	l.update(func(st *Status) {
		st.FailedReloads++
		st.LastError, st.LastErrorAt, st.LastErrorDigest = err.Error(), now, digest
	})
	l.log.Error("plugin reload refused; the running version keeps serving",
		zap.String("refused", shortDigest(digest)), zap.String("version", shortDigest(l.Digest())), zap.Error(err))
}

// prepare compiles, checks and warms a version. Nothing of it is visible
// until the caller stores it.
func (l *Live) prepare(ctx context.Context, wasm []byte) (*version, error) {
	s := l.spec
	s.Wasm = wasm
	p, err := l.host.Load(ctx, s, l.pub)
	if err != nil {
		return nil, err
	}
	v := &version{
		l: l, p: p, insts: make(map[*LiveInstance]struct{}),
		pool: make(chan *Instance, l.opts.Warm), stop: make(chan struct{}), refillDone: make(chan struct{}),
	}
	v.refs.Store(1) // the Live's own reference while it is current
	for range l.opts.Warm {
		in, err := p.NewInstance(ctx)
		if err != nil {
			close(v.refillDone)
			v.drainPool()
			_ = p.Close(context.Background())
			return nil, err
		}
		v.pool <- in
	}
	l.versions.Add(1)
	if l.opts.Refill {
		go v.refill()
	} else {
		close(v.refillDone)
	}
	return v, nil
}

// NewInstance returns an instance of the current version, a warm one when
// the pool has one. The caller owns it until Close.
func (l *Live) NewInstance(ctx context.Context) (*LiveInstance, error) {
	for {
		v := l.cur.Load()
		if v == nil {
			return nil, fmt.Errorf("plugin: consumer %q: %w", l.spec.Consumer, ErrClosed)
		}
		if !v.ref() {
			// Released between the load and now: a newer one is current.
			if l.isClosed() {
				return nil, fmt.Errorf("plugin: consumer %q: %w", l.spec.Consumer, ErrClosed)
			}
			continue
		}
		var in *Instance
		select {
		case in = <-v.pool:
		default:
			var err error
			if in, err = v.p.NewInstance(ctx); err != nil {
				v.unref()
				return nil, err
			}
		}
		li := &LiveInstance{in: in, v: v}
		if v.track(li) {
			return li, nil
		}
		// Retired meanwhile: this instance would only be swept.
		_ = in.Close(context.Background())
		v.unref()
		if l.isClosed() {
			return nil, fmt.Errorf("plugin: consumer %q: %w", l.spec.Consumer, ErrClosed)
		}
	}
}

func (l *Live) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops the reload loop and releases the current version once its
// instances are closed (Plugin-level close is immediate for idle ones).
// Callers close their instances as usual.
func (l *Live) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.loopWG.Wait()
	l.reloadMu.Lock() // a Swap in progress finishes first
	defer l.reloadMu.Unlock()
	v := l.cur.Swap(nil)
	if v != nil {
		v.retire()
	}
	if l.ownHTTP {
		// Only idle connections close: a delivery still running on the
		// retired version finishes its request.
		l.spec.HTTPClient.Close()
	}
	return nil
}

// HTTPStats is a snapshot of the consumer's outbound HTTP counters, over
// every version of the plugin.
func (l *Live) HTTPStats() httpout.Stats { return l.spec.HTTPClient.Stats() }

// version is one loaded module of a Live.
type version struct {
	l *Live
	p *Plugin

	// refs is 1 while the version is current, plus one per live instance;
	// the Plugin is closed when it reaches zero.
	refs    atomic.Int64
	retired atomic.Bool
	first   atomic.Bool  // the first delivery was recorded
	firstAt atomic.Int64 // when, Unix nanoseconds; 0 before

	pool       chan *Instance // warm instances, not yet handed out
	stop       chan struct{}  // closed at retire: stops refill
	refillDone chan struct{}

	mu    sync.Mutex
	insts map[*LiveInstance]struct{}
}

// ref takes a reference unless the version is already released.
func (v *version) ref() bool {
	for {
		n := v.refs.Load()
		if n == 0 {
			return false
		}
		if v.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (v *version) unref() {
	if v.refs.Add(-1) == 0 {
		// The last delivery on a replaced version returned. Closing a
		// wazero runtime is not free, so it happens off the caller's
		// (possibly delivery) path.
		go v.release()
	}
}

func (v *version) release() {
	<-v.refillDone
	v.drainPool()
	if err := v.p.Close(context.Background()); err != nil {
		v.l.log.Warn("closing a replaced plugin version", zap.String("version", v.p.Version()), zap.Error(err))
	}
	v.l.versions.Add(-1)
	v.l.log.Debug("plugin version released", zap.String("version", v.p.Version()))
	v.l.update(nil)
}

func (v *version) track(li *LiveInstance) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.retired.Load() {
		return false
	}
	v.insts[li] = struct{}{}
	return true
}

func (v *version) untrack(li *LiveInstance) {
	v.mu.Lock()
	delete(v.insts, li)
	v.mu.Unlock()
}

// retire takes the version out of service: warm instances and idle ones
// are closed now, busy ones when their delivery returns, and the Plugin
// when the last of them is gone.
func (v *version) retire() {
	v.retired.Store(true)
	close(v.stop)
	v.mu.Lock()
	idle := make([]*LiveInstance, 0, len(v.insts))
	for li := range v.insts {
		idle = append(idle, li)
	}
	v.mu.Unlock()
	for _, li := range idle {
		li.reclaim()
	}
	<-v.refillDone
	v.drainPool()
	v.unref()
}

func (v *version) drainPool() {
	for {
		select {
		case in := <-v.pool:
			_ = in.Close(context.Background())
		default:
			return
		}
	}
}

// refill keeps the pool full for per-message isolation. A failure to make an
// instance is logged at most every errEvery and retried with backoff; the
// consumer meanwhile makes its own instances and reports their failures.
func (v *version) refill() {
	defer close(v.refillDone)
	var backoff time.Duration
	var lastLog time.Time
	for {
		in, err := v.p.NewInstance(context.Background())
		if err != nil {
			if now := time.Now(); now.Sub(lastLog) >= 10*time.Second {
				v.l.log.Warn("pre-instantiating for per-message isolation failed", zap.Error(err))
				lastLog = now
			}
			backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
				continue
			case <-v.stop:
				t.Stop()
				return
			}
		}
		backoff = 0
		select {
		case v.pool <- in:
		case <-v.stop:
			_ = in.Close(context.Background())
			return
		}
	}
}

// Instance states: a LiveInstance is idle between deliveries, busy from
// Acquire until its Handle returns, and closed for good.
const (
	stateIdle int32 = iota
	stateBusy
	stateClosed
)

// LiveInstance is an instance of one version of a Live. Like Instance it
// serves one delivery at a time; unlike it, it knows when its version was
// replaced and asks to be replaced too.
type LiveInstance struct {
	in    *Instance
	v     *version
	state atomic.Int32
}

// Acquire reserves the instance for the next delivery. It returns false when
// the version was replaced (or the instance closed): the caller then closes
// it and takes a new one from the Live. A delivery that acquired its
// instance runs on that version to the end, whatever swaps meanwhile.
func (li *LiveInstance) Acquire() bool {
	v := li.v
	if v.retired.Load() {
		return false
	}
	if li.state.Load() != stateBusy && !li.state.CompareAndSwap(stateIdle, stateBusy) {
		return false
	}
	if !v.first.Load() && v.first.CompareAndSwap(false, true) && v.l.cur.Load() == v {
		now := time.Now()
		// Stored first: a swap whose status update comes after this one's
		// check (the status still shows the old version) takes it from here.
		v.firstAt.Store(now.UnixNano())
		v.l.update(func(st *Status) {
			if st.Digest == v.p.Digest() {
				st.FirstDeliveryAt = now
			}
		})
	}
	return true
}

// Handle runs one delivery (see Instance.Handle), acquiring the instance
// first if the caller did not.
func (li *LiveInstance) Handle(ctx context.Context, d *engines.Delivery, start time.Time) Result {
	if li.state.Load() != stateBusy && !li.Acquire() {
		return Result{Verdict: engines.Nack, Err: fmt.Errorf("%w: instance of a replaced plugin version", ErrBroken)}
	}
	r := li.in.Handle(ctx, d, start)
	if li.state.CompareAndSwap(stateBusy, stateIdle) && li.v.retired.Load() {
		// Replaced while this delivery ran; the sweep left it to us.
		li.reclaim()
	}
	return r
}

// reclaim closes an idle instance on behalf of its retired version; the
// sweep and the end of a delivery may race here, and one of them wins.
func (li *LiveInstance) reclaim() {
	if li.state.CompareAndSwap(stateIdle, stateClosed) {
		li.closeInner()
	}
}

// Broken reports that the instance failed and must be replaced.
func (li *LiveInstance) Broken() bool { return li.in.Broken() }

// Version is the short digest of the instance's version.
func (li *LiveInstance) Version() string { return li.v.p.Version() }

// Digest is the full digest of the instance's version.
func (li *LiveInstance) Digest() string { return li.v.p.Digest() }

// Close releases the instance; it may be called while Handle runs, to abort
// the call (see Instance.Close), and more than once.
func (li *LiveInstance) Close(ctx context.Context) error {
	if li.state.Swap(stateClosed) == stateClosed {
		return nil
	}
	return li.closeInner()
}

func (li *LiveInstance) closeInner() error {
	err := li.in.Close(context.Background())
	li.v.untrack(li)
	li.v.unref()
	return err
}

// Plugins is the number of plugins (versions) the host has loaded and not
// yet released.
func (h *Host) Plugins() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.plugins)
}

func digestOf(wasm []byte) string {
	sum := sha256.Sum256(wasm)
	return hex.EncodeToString(sum[:])
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// CheckFile reads and checks a module file the way config validation wants
// it (config.Options.CheckPlugin): nil, or an error listing every problem.
func CheckFile(path string) error {
	wasm, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	rep, err := Check(context.Background(), wasm)
	if err != nil {
		return err
	}
	if len(rep.Problems) > 0 {
		return &ValidationError{Problems: rep.Problems}
	}
	return nil
}

func (p *Plugin) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}
