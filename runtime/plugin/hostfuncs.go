package plugin

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/engines"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// stateKey is the context key under which every guest call carries its
// instance's state. Host functions are shared by all instances of a runtime,
// so this is how they find the current delivery without a per-call
// allocation: the context is built once per instance.
type stateKey struct{}

// instanceState is what host functions need about the calling instance.
type instanceState struct {
	p  *Plugin
	in *Instance
	// d and ctx are set for the duration of qrun_handle.
	d   *engines.Delivery
	ctx context.Context

	delay    time.Duration
	delaySet bool

	// reason is the guest's set_reason text, reused from delivery to
	// delivery so that a delivery which sets none allocates nothing.
	reason    []byte
	reasonSet bool

	keys      []string // sorted attribute names of d, built on first msg_attr_key
	keysReady bool

	http httpState

	tx txState // kv.go
}

var errNoState = errors.New("qrun host function called outside a qrun instance")

func stateOf(ctx context.Context) *instanceState {
	st, _ := ctx.Value(stateKey{}).(*instanceState)
	if st == nil {
		panic(errNoState)
	}
	return st
}

// region returns the guest memory [ptr, ptr+n) or traps the call with a
// *PointerError. Both are unsigned, as ABI.md section 4 says, so a negative
// i32 length is simply out of range.
func region(m api.Module, fn, arg string, ptr, n uint64) []byte {
	mem := m.Memory()
	p, l := api.DecodeU32(ptr), api.DecodeU32(n)
	if mem != nil {
		if b, ok := mem.Read(p, l); ok {
			return b
		}
	}
	var size uint32
	if mem != nil {
		size = mem.Size()
	}
	panic(&PointerError{Func: fn, Arg: arg, Ptr: p, Len: l, MemorySize: size})
}

// put implements the ABI's "(buf, cap) -> full length" convention.
func put(buf []byte, v string) uint64 {
	if len(v) <= len(buf) {
		copy(buf, v)
	}
	return ret(len(v))
}

// lookup implements msg_attr and config_get: the value of key in m, put into
// buf, or "not found".
func lookup(m map[string]string, key, buf []byte) uint64 {
	v, ok := m[string(key)] // no allocation: the compiler elides the conversion
	if !ok {
		return code(abi.ErrNotFound)
	}
	return put(buf, v)
}

func ret(n int) uint64 {
	if n > math.MaxInt32 {
		n = math.MaxInt32
	}
	return api.EncodeI32(int32(n))
}

func code(c int32) uint64 { return api.EncodeI32(c) }

// Bounds on the durations a guest may ask for (ABI.md section 4): larger
// values are clamped, so that no engine is handed a duration it would add to
// "now" and overflow, or a message hidden for centuries.
const (
	// MaxGuestDelay caps set_delay.
	MaxGuestDelay = 7 * 24 * time.Hour
	// MaxGuestLeaseExtension caps extend_lease.
	MaxGuestLeaseExtension = 12 * time.Hour
)

// millis converts a guest's non-negative millisecond count, clamped to max.
func millis(ms int64, max time.Duration) time.Duration {
	if ms >= int64(max/time.Millisecond) {
		return max
	}
	return time.Duration(ms) * time.Millisecond
}

// hostFunc is one host function of ABI v1: its implementation and its
// signature, kept together so that neither can exist without the other.
type hostFunc struct {
	fn  api.GoModuleFunc
	sig sig
}

// hostFuncs returns ABI v1's host functions (ABI.md section 4), used both to
// build the host module and to check a guest's imports. It is a function
// rather than a package variable so that no caller can change the contract
// at run time.
func hostFuncs() map[string]hostFunc {
	vt := func(ts ...api.ValueType) []api.ValueType { return ts }
	return map[string]hostFunc{
		abi.FuncLog:           {hostLog, sig{vt(i32, i32, i32), vt(i32)}},
		abi.FuncMsgField:      {hostMsgField, sig{vt(i32, i32, i32), vt(i32)}},
		abi.FuncMsgAttempt:    {hostMsgAttempt, sig{nil, vt(i32)}},
		abi.FuncMsgEnqueuedAt: {hostMsgEnqueuedAt, sig{nil, vt(i64)}},
		abi.FuncMsgAttr:       {hostMsgAttr, sig{vt(i32, i32, i32, i32), vt(i32)}},
		abi.FuncMsgAttrKey:    {hostMsgAttrKey, sig{vt(i32, i32, i32), vt(i32)}},
		abi.FuncConfigGet:     {hostConfigGet, sig{vt(i32, i32, i32, i32), vt(i32)}},
		abi.FuncPublish:       {hostPublish, sig{vt(i32, i32, i32, i32, i32, i32), vt(i32)}},
		abi.FuncSetDelay:      {hostSetDelay, sig{vt(i64), vt(i32)}},
		abi.FuncExtendLease:   {hostExtendLease, sig{vt(i64), vt(i32)}},
		abi.FuncNow:           {hostNow, sig{nil, vt(i64)}},
		abi.FuncSetReason:     {hostSetReason, sig{vt(i32, i32), vt(i32)}},

		abi.FuncHTTPRequest:         {hostHTTPRequest, sig{vt(i32, i32, i32, i32, i32, i32, i32, i32), vt(i32)}},
		abi.FuncHTTPResponseHeader:  {hostHTTPResponseHeader, sig{vt(i32, i32, i32, i32), vt(i32)}},
		abi.FuncHTTPResponseHeaders: {hostHTTPResponseHeaders, sig{vt(i32, i32), vt(i32)}},
		abi.FuncHTTPResponseBody:    {hostHTTPResponseBody, sig{vt(i32, i32), vt(i32)}},

		abi.FuncKVGet:     {hostKVGet, sig{vt(i32, i32, i32, i32, i32, i32), vt(i32)}},
		abi.FuncKVVersion: {hostKVVersion, sig{vt(i32, i32, i32, i32), vt(i64)}},
		abi.FuncKVSet:     {hostKVSet, sig{vt(i32, i32, i32, i32, i32, i32, i64), vt(i32)}},
		abi.FuncKVCas:     {hostKVCas, sig{vt(i32, i32, i32, i32, i64, i32, i32, i64), vt(i32)}},
		abi.FuncKVDelete:  {hostKVDelete, sig{vt(i32, i32, i32, i32), vt(i32)}},
		abi.FuncKVIncr:    {hostKVIncr, sig{vt(i32, i32, i32, i32, i64, i32), vt(i32)}},
		abi.FuncKVAdd:     {hostKVAdd, sig{vt(i32, i32, i32, i32, i64), vt(i32)}},
		abi.FuncStateGet:  {hostStateGet, sig{vt(i32, i32), vt(i32)}},
		abi.FuncStateSet:  {hostStateSet, sig{vt(i32, i32), vt(i32)}},
	}
}

func instantiateHostModule(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(abi.ImportModule)
	for name, f := range hostFuncs() {
		b.NewFunctionBuilder().WithGoModuleFunction(f.fn, f.sig.params, f.sig.results).Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

func hostLog(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	msg := region(m, abi.FuncLog, "message", stack[1], stack[2])
	var lvl zapcore.Level
	switch api.DecodeI32(stack[0]) {
	case abi.LogDebug:
		lvl = zapcore.DebugLevel
	case abi.LogInfo:
		lvl = zapcore.InfoLevel
	case abi.LogWarn:
		lvl = zapcore.WarnLevel
	case abi.LogError:
		lvl = zapcore.ErrorLevel
	default:
		stack[0] = code(abi.ErrInvalid)
		return
	}
	// Cut before anything is copied: a guest may pass its whole memory.
	line := truncateLine(msg, maxLine)
	if cut := len(msg) - len(line); cut > 0 {
		st.p.truncated.Add(uint64(cut))
	}
	stack[0] = code(st.p.guestLog(st, lvl, line, "guest", len(line) < len(msg)))
}

func hostMsgField(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	buf := region(m, abi.FuncMsgField, "buf", stack[1], stack[2])
	d := st.d
	if d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	var v string
	switch api.DecodeI32(stack[0]) {
	case abi.FieldID:
		v = d.ID
	case abi.FieldQueue:
		v = d.Queue
	case abi.FieldContentType:
		v = d.ContentType
	case abi.FieldCorrelationID:
		v = d.CorrelationID
	case abi.FieldOrderingKey:
		v = d.OrderingKey
	default:
		stack[0] = code(abi.ErrInvalid)
		return
	}
	stack[0] = put(buf, v)
}

func hostMsgAttempt(ctx context.Context, _ api.Module, stack []uint64) {
	st := stateOf(ctx)
	if st.d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	stack[0] = ret(st.d.Attempt)
}

func hostMsgEnqueuedAt(ctx context.Context, _ api.Module, stack []uint64) {
	st := stateOf(ctx)
	if st.d == nil || st.d.EnqueuedAt.IsZero() {
		stack[0] = 0
		return
	}
	stack[0] = api.EncodeI64(st.d.EnqueuedAt.UnixNano())
}

func hostMsgAttr(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	key := region(m, abi.FuncMsgAttr, "key", stack[0], stack[1])
	buf := region(m, abi.FuncMsgAttr, "buf", stack[2], stack[3])
	if st.d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	stack[0] = lookup(st.d.Attributes, key, buf)
}

func hostMsgAttrKey(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	buf := region(m, abi.FuncMsgAttrKey, "buf", stack[1], stack[2])
	if st.d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	if !st.keysReady {
		st.keys = st.keys[:0]
		for k := range st.d.Attributes {
			st.keys = append(st.keys, k)
		}
		slices.Sort(st.keys)
		st.keysReady = true
	}
	i := api.DecodeI32(stack[0])
	if i < 0 || int(i) >= len(st.keys) {
		stack[0] = code(abi.ErrNotFound)
		return
	}
	stack[0] = put(buf, st.keys[i])
}

func hostConfigGet(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	key := region(m, abi.FuncConfigGet, "key", stack[0], stack[1])
	buf := region(m, abi.FuncConfigGet, "buf", stack[2], stack[3])
	stack[0] = lookup(st.p.config, key, buf)
}

func hostPublish(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	queue := region(m, abi.FuncPublish, "queue", stack[0], stack[1])
	body := region(m, abi.FuncPublish, "body", stack[2], stack[3])
	attrs := region(m, abi.FuncPublish, "attrs", stack[4], stack[5])
	if st.d == nil {
		// Outside qrun_handle there is no delivery whose retry would make
		// a duplicate publish visible as such; the ABI refuses it.
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	p := st.p
	if _, ok := p.allowed[string(queue)]; !ok {
		stack[0] = code(abi.ErrDenied)
		return
	}
	msg := engines.Message{Body: slices.Clone(body)} // guest memory changes after we return
	if len(attrs) > 0 {
		a, ok := decodeAttrs(attrs)
		if !ok {
			stack[0] = code(abi.ErrInvalid)
			return
		}
		msg.Attributes = a
	}
	if !publishPriority(&msg, st.d) {
		stack[0] = code(abi.ErrInvalid)
		return
	}
	inheritTrace(&msg, st.d)
	if name, held := p.txPublish[string(queue)]; held {
		// Applied with the ack, or not at all (kv.go).
		st.tx.publish(engines.Publish{Queue: name, Message: msg})
		stack[0] = 0
		return
	}
	if p.pub == nil {
		stack[0] = code(abi.ErrUnavailable)
		return
	}
	err := withInstanceCancel(st, func(ctx context.Context) error {
		return p.pub.Publish(ctx, string(queue), msg)
	})
	switch {
	case err == nil:
		stack[0] = 0
	case errors.Is(err, engines.ErrTooLarge):
		stack[0] = code(abi.ErrTooLarge)
	default:
		p.log.Debug("guest publish failed", zap.Error(err))
		stack[0] = code(abi.ErrUnavailable)
	}
}

// withInstanceCancel runs a blocking runtime call from a host function with
// the caller's context, additionally cancelled when the watchdog stops the
// instance: otherwise a stuck engine would hold a timed-out guest forever.
// It allocates, which is acceptable on publish and extend_lease only.
func withInstanceCancel(st *instanceState, f func(context.Context) error) error {
	base := st.ctx
	if base == nil {
		base = context.Background()
	}
	ctx, cancel := context.WithCancel(base)
	stop := context.AfterFunc(st.in.ctx, cancel)
	err := f(ctx)
	stop()
	cancel()
	return err
}

// decodeAttrs decodes publish's attribute encoding (ABI.md section 4): pairs
// of u32-LE-length-prefixed key and value, nothing else. A repeated key is
// refused because a map cannot say which one the guest meant.
func decodeAttrs(b []byte) (map[string]string, bool) {
	out := make(map[string]string)
	ok := eachPair(b, func(k, v string) bool {
		if _, dup := out[k]; dup {
			return false
		}
		out[k] = v
		return true
	})
	if !ok {
		return nil, false
	}
	return out, true
}

// eachPair walks the pair encoding shared by publish's attributes and
// http_request's headers, calling f with each key and value until f returns
// false. It reports whether the whole encoding was well formed and f took
// every pair.
func eachPair(b []byte, f func(k, v string) bool) bool {
	next := func() (string, bool) {
		if len(b) < 4 {
			return "", false
		}
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return "", false
		}
		s := string(b[:n])
		b = b[n:]
		return s, true
	}
	for len(b) > 0 {
		k, ok := next()
		if !ok {
			return false
		}
		v, ok := next()
		if !ok || !f(k, v) {
			return false
		}
	}
	return true
}

func hostSetDelay(ctx context.Context, _ api.Module, stack []uint64) {
	st := stateOf(ctx)
	if st.d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	ms := int64(stack[0])
	if ms < 0 {
		stack[0] = code(abi.ErrInvalid)
		return
	}
	st.delay, st.delaySet = millis(ms, MaxGuestDelay), true
	stack[0] = 0
}

func hostExtendLease(ctx context.Context, _ api.Module, stack []uint64) {
	st := stateOf(ctx)
	d := st.d
	if d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	ms := int64(stack[0])
	if ms < 0 {
		stack[0] = code(abi.ErrInvalid)
		return
	}
	err := withInstanceCancel(st, func(ctx context.Context) error {
		return d.Extend(ctx, millis(ms, MaxGuestLeaseExtension))
	})
	if err != nil {
		st.p.log.Debug("guest extend_lease failed", zap.Error(err))
		stack[0] = code(abi.ErrUnavailable)
		return
	}
	stack[0] = 0
}

// MaxGuestReason caps set_reason: a longer reason is cut to at most this
// many bytes, at a UTF-8 boundary (ABI.md section 4).
const MaxGuestReason = 1024

func hostSetReason(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	b := region(m, abi.FuncSetReason, "reason", stack[0], stack[1])
	if st.d == nil {
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	// Cut before validating: a guest may pass its whole memory.
	b = truncateLine(b, MaxGuestReason)
	if !utf8.Valid(b) {
		stack[0] = code(abi.ErrInvalid)
		return
	}
	st.reason = append(st.reason[:0], b...)
	st.reasonSet = len(b) > 0
	stack[0] = 0
}

func hostNow(_ context.Context, _ api.Module, stack []uint64) {
	stack[0] = api.EncodeI64(time.Now().UnixNano())
}

// AttrPriority is the publish attribute that sets the published message's
// priority, a decimal 0..255 (anything else makes publish return
// ErrInvalid); abi/ABI.md documents it. The host takes it out of the
// message's attributes. Without it a published message carries the
// priority of the message being handled, so a pipeline keeps a message's
// urgency from stage to stage. (It lives here rather than in package abi
// because every guest build embeds that package: a new constant there
// changes every committed example module.)
const AttrPriority = "qrun.priority"

// publishPriority sets a published message's priority: the one its
// AttrPriority attribute names (which it removes), or else the
// priority of the delivery being handled. It reports false for an
// attribute that is not a decimal 0..255.
func publishPriority(msg *engines.Message, from *engines.Delivery) bool {
	v, ok := msg.Attributes[AttrPriority]
	if !ok {
		msg.Priority = from.Priority
		return true
	}
	n, err := strconv.ParseUint(v, 10, 8)
	if err != nil {
		return false
	}
	msg.Priority = uint8(n)
	delete(msg.Attributes, AttrPriority)
	if len(msg.Attributes) == 0 {
		msg.Attributes = nil
	}
	return true
}
