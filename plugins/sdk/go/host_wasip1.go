//go:build wasip1

package qrun

import "unsafe"

// Imports from module "qrun", with the exact signatures of ABI.md section 4.
// unsafe.Pointer parameters lower to wasm i32 offsets into this module's memory.

//go:wasmimport qrun log
func qrunLog(level int32, ptr unsafe.Pointer, n int32) int32

//go:wasmimport qrun msg_field
func qrunMsgField(field int32, buf unsafe.Pointer, cap int32) int32

//go:wasmimport qrun msg_attempt
func qrunMsgAttempt() int32

//go:wasmimport qrun msg_enqueued_at
func qrunMsgEnqueuedAt() int64

//go:wasmimport qrun msg_attr
func qrunMsgAttr(key unsafe.Pointer, keyLen int32, buf unsafe.Pointer, cap int32) int32

//go:wasmimport qrun msg_attr_key
func qrunMsgAttrKey(index int32, buf unsafe.Pointer, cap int32) int32

//go:wasmimport qrun config_get
func qrunConfigGet(key unsafe.Pointer, keyLen int32, buf unsafe.Pointer, cap int32) int32

//go:wasmimport qrun publish
func qrunPublish(queue unsafe.Pointer, queueLen int32, body unsafe.Pointer, bodyLen int32, attrs unsafe.Pointer, attrsLen int32) int32

//go:wasmimport qrun set_delay
func qrunSetDelay(millis int64) int32

//go:wasmimport qrun extend_lease
func qrunExtendLease(millis int64) int32

//go:wasmimport qrun now
func qrunNow() int64

//go:wasmimport qrun set_reason
func qrunSetReason(ptr unsafe.Pointer, n int32) int32

//go:wasmimport qrun http_request
func qrunHTTPRequest(method unsafe.Pointer, methodLen int32, url unsafe.Pointer, urlLen int32, headers unsafe.Pointer, headersLen int32, body unsafe.Pointer, bodyLen int32) int32

//go:wasmimport qrun http_response_headers
func qrunHTTPResponseHeaders(buf unsafe.Pointer, cap int32) int32

//go:wasmimport qrun http_response_body
func qrunHTTPResponseBody(buf unsafe.Pointer, cap int32) int32

//go:wasmimport qrun kv_get
func qrunKVGet(store unsafe.Pointer, storeLen int32, key unsafe.Pointer, keyLen int32, buf unsafe.Pointer, cap int32) int32

//go:wasmimport qrun kv_version
func qrunKVVersion(store unsafe.Pointer, storeLen int32, key unsafe.Pointer, keyLen int32) int64

//go:wasmimport qrun kv_set
func qrunKVSet(store unsafe.Pointer, storeLen int32, key unsafe.Pointer, keyLen int32, val unsafe.Pointer, valLen int32, ttlMillis int64) int32

//go:wasmimport qrun kv_cas
func qrunKVCas(store unsafe.Pointer, storeLen int32, key unsafe.Pointer, keyLen int32, version int64, val unsafe.Pointer, valLen int32, ttlMillis int64) int32

//go:wasmimport qrun kv_delete
func qrunKVDelete(store unsafe.Pointer, storeLen int32, key unsafe.Pointer, keyLen int32) int32

//go:wasmimport qrun kv_incr
func qrunKVIncr(store unsafe.Pointer, storeLen int32, key unsafe.Pointer, keyLen int32, delta int64, result unsafe.Pointer) int32

//go:wasmimport qrun kv_add
func qrunKVAdd(store unsafe.Pointer, storeLen int32, key unsafe.Pointer, keyLen int32, delta int64) int32

//go:wasmimport qrun state_get
func qrunStateGet(buf unsafe.Pointer, cap int32) int32

//go:wasmimport qrun state_set
func qrunStateSet(ptr unsafe.Pointer, n int32) int32

// The wrappers below turn Go strings and slices into (ptr, len) pairs. An
// empty value passes a nil pointer, offset 0, which every host accepts with
// length 0; lengths fit in i32 because wasm32 memory is at most 4 GiB and Go
// slices on wasm never reach 2 GiB in practice.

func strPtr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

func bufPtr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

func hostLog(level int32, msg string) int32 {
	return qrunLog(level, strPtr(msg), int32(len(msg)))
}

func hostMsgField(field int32, buf []byte) int32 {
	return qrunMsgField(field, bufPtr(buf), int32(len(buf)))
}

func hostMsgAttempt() int32 { return qrunMsgAttempt() }

func hostMsgEnqueuedAt() int64 { return qrunMsgEnqueuedAt() }

func hostMsgAttr(key string, buf []byte) int32 {
	return qrunMsgAttr(strPtr(key), int32(len(key)), bufPtr(buf), int32(len(buf)))
}

func hostMsgAttrKey(index int32, buf []byte) int32 {
	return qrunMsgAttrKey(index, bufPtr(buf), int32(len(buf)))
}

func hostConfigGet(key string, buf []byte) int32 {
	return qrunConfigGet(strPtr(key), int32(len(key)), bufPtr(buf), int32(len(buf)))
}

func hostPublish(queue string, body, attrs []byte) int32 {
	return qrunPublish(strPtr(queue), int32(len(queue)), bufPtr(body), int32(len(body)), bufPtr(attrs), int32(len(attrs)))
}

func hostSetDelay(millis int64) int32 { return qrunSetDelay(millis) }

func hostExtendLease(millis int64) int32 { return qrunExtendLease(millis) }

func hostNow() int64 { return qrunNow() }

func hostSetReason(reason string) int32 {
	return qrunSetReason(strPtr(reason), int32(len(reason)))
}

func hostHTTPRequest(method, url string, headers, body []byte) int32 {
	return qrunHTTPRequest(strPtr(method), int32(len(method)), strPtr(url), int32(len(url)),
		bufPtr(headers), int32(len(headers)), bufPtr(body), int32(len(body)))
}

func hostHTTPResponseHeaders(buf []byte) int32 {
	return qrunHTTPResponseHeaders(bufPtr(buf), int32(len(buf)))
}

func hostHTTPResponseBody(buf []byte) int32 {
	return qrunHTTPResponseBody(bufPtr(buf), int32(len(buf)))
}

func hostKVGet(store, key string, buf []byte) int32 {
	return qrunKVGet(strPtr(store), int32(len(store)), strPtr(key), int32(len(key)), bufPtr(buf), int32(len(buf)))
}

func hostKVVersion(store, key string) int64 {
	return qrunKVVersion(strPtr(store), int32(len(store)), strPtr(key), int32(len(key)))
}

func hostKVSet(store, key string, val []byte, ttlMillis int64) int32 {
	return qrunKVSet(strPtr(store), int32(len(store)), strPtr(key), int32(len(key)), bufPtr(val), int32(len(val)), ttlMillis)
}

func hostKVCas(store, key string, version int64, val []byte, ttlMillis int64) int32 {
	return qrunKVCas(strPtr(store), int32(len(store)), strPtr(key), int32(len(key)), version, bufPtr(val), int32(len(val)), ttlMillis)
}

func hostKVDelete(store, key string) int32 {
	return qrunKVDelete(strPtr(store), int32(len(store)), strPtr(key), int32(len(key)))
}

func hostKVIncr(store, key string, delta int64, result *int64) int32 {
	// wasm is little-endian, so the host's i64 lands in *result as is.
	return qrunKVIncr(strPtr(store), int32(len(store)), strPtr(key), int32(len(key)), delta, unsafe.Pointer(result))
}

func hostKVAdd(store, key string, delta int64) int32 {
	return qrunKVAdd(strPtr(store), int32(len(store)), strPtr(key), int32(len(key)), delta)
}

func hostStateGet(buf []byte) int32 { return qrunStateGet(bufPtr(buf), int32(len(buf))) }

func hostStateSet(v []byte) int32 { return qrunStateSet(bufPtr(v), int32(len(v))) }

// Exports the host looks for (ABI.md section 2).

//go:wasmexport qrun_abi_v1
func qrunABIv1() {}

// regions holds every buffer handed out by qrun_alloc. The host writes into
// them between calls, when no Go pointer to them would otherwise exist, so
// without this map the garbage collector would free memory the host still
// owns. Go's collector does not move objects, so the address stays valid.
var regions = map[unsafe.Pointer][]byte{}

//go:wasmexport qrun_alloc
func qrunAlloc(size int32) unsafe.Pointer {
	if size < 0 {
		return nil
	}
	// A zero-size request still gets a distinct, non-nil region: nil (0)
	// means out of memory to the host.
	b := make([]byte, max(size, 1))
	p := unsafe.Pointer(unsafe.SliceData(b))
	regions[p] = b
	return p
}

//go:wasmexport qrun_free
func qrunFree(ptr unsafe.Pointer, size int32) {
	delete(regions, ptr)
}

//go:wasmexport qrun_init
func qrunInit() int32 { return runInit() }

//go:wasmexport qrun_handle
func qrunHandle(ptr unsafe.Pointer, n int32) int32 {
	var body []byte
	// For an empty body the ABI leaves ptr unspecified, so it is not touched.
	if n > 0 {
		body = unsafe.Slice((*byte)(ptr), n)
	}
	return runHandle(body)
}
