//go:build !wasip1

package qrun

import (
	"time"

	"github.com/qrun-dev/qrun/abi"
)

// Outside wasip1 there is no qrun host. The package still builds so that
// handler packages vet and unit-test on the build machine; host calls go to
// the host variable, which tests in this package replace with a fake.

// hostAPI mirrors the ABI's host functions with Go strings and slices.
type hostAPI interface {
	log(level int32, msg string) int32
	msgField(field int32, buf []byte) int32
	msgAttempt() int32
	msgEnqueuedAt() int64
	msgAttr(key string, buf []byte) int32
	msgAttrKey(index int32, buf []byte) int32
	configGet(key string, buf []byte) int32
	publish(queue string, body, attrs []byte) int32
	setDelay(millis int64) int32
	extendLease(millis int64) int32
	now() int64
	setReason(reason string) int32
	httpRequest(method, url string, headers, body []byte) int32
	httpResponseHeaders(buf []byte) int32
	httpResponseBody(buf []byte) int32
	kvGet(store, key string, buf []byte) int32
	kvVersion(store, key string) int64
	kvSet(store, key string, val []byte, ttlMillis int64) int32
	kvCas(store, key string, version int64, val []byte, ttlMillis int64) int32
	kvDelete(store, key string) int32
	kvIncr(store, key string, delta int64, result *int64) int32
	kvAdd(store, key string, delta int64) int32
	stateGet(buf []byte) int32
	stateSet(v []byte) int32
}

var host hostAPI = noHost{}

// noHost answers like a host with no current message, no config and a
// failed engine, so handler code exercised outside wasm takes its error paths
// instead of crashing.
type noHost struct{}

func (noHost) log(int32, string) int32              { return 0 }
func (noHost) msgField(int32, []byte) int32         { return abi.ErrNoMessage }
func (noHost) msgAttempt() int32                    { return abi.ErrNoMessage }
func (noHost) msgEnqueuedAt() int64                 { return 0 }
func (noHost) msgAttr(string, []byte) int32         { return abi.ErrNoMessage }
func (noHost) msgAttrKey(int32, []byte) int32       { return abi.ErrNoMessage }
func (noHost) configGet(string, []byte) int32       { return abi.ErrNotFound }
func (noHost) publish(string, []byte, []byte) int32 { return abi.ErrUnavailable }
func (noHost) setDelay(int64) int32                 { return abi.ErrNoMessage }
func (noHost) extendLease(int64) int32              { return abi.ErrNoMessage }
func (noHost) now() int64                           { return time.Now().UnixNano() }
func (noHost) setReason(string) int32               { return abi.ErrNoMessage }
func (noHost) httpRequest(string, string, []byte, []byte) int32 {
	return abi.ErrNoMessage
}
func (noHost) httpResponseHeaders([]byte) int32 { return abi.ErrNotFound }
func (noHost) httpResponseBody([]byte) int32    { return abi.ErrNotFound }
func (noHost) kvGet(string, string, []byte) int32 {
	return abi.ErrNoMessage
}
func (noHost) kvVersion(string, string) int64 { return abi.ErrNoMessage }
func (noHost) kvSet(string, string, []byte, int64) int32 {
	return abi.ErrNoMessage
}
func (noHost) kvCas(string, string, int64, []byte, int64) int32 {
	return abi.ErrNoMessage
}
func (noHost) kvDelete(string, string) int32 { return abi.ErrNoMessage }
func (noHost) kvIncr(string, string, int64, *int64) int32 {
	return abi.ErrNoMessage
}
func (noHost) kvAdd(string, string, int64) int32 { return abi.ErrNoMessage }
func (noHost) stateGet([]byte) int32             { return abi.ErrNoMessage }
func (noHost) stateSet([]byte) int32             { return abi.ErrNoMessage }

func hostLog(level int32, msg string) int32        { return host.log(level, msg) }
func hostMsgField(field int32, buf []byte) int32   { return host.msgField(field, buf) }
func hostMsgAttempt() int32                        { return host.msgAttempt() }
func hostMsgEnqueuedAt() int64                     { return host.msgEnqueuedAt() }
func hostMsgAttr(key string, buf []byte) int32     { return host.msgAttr(key, buf) }
func hostMsgAttrKey(index int32, buf []byte) int32 { return host.msgAttrKey(index, buf) }
func hostConfigGet(key string, buf []byte) int32   { return host.configGet(key, buf) }
func hostPublish(queue string, body, attrs []byte) int32 {
	return host.publish(queue, body, attrs)
}
func hostSetDelay(millis int64) int32    { return host.setDelay(millis) }
func hostExtendLease(millis int64) int32 { return host.extendLease(millis) }
func hostNow() int64                     { return host.now() }
func hostSetReason(reason string) int32  { return host.setReason(reason) }
func hostHTTPRequest(method, url string, headers, body []byte) int32 {
	return host.httpRequest(method, url, headers, body)
}
func hostHTTPResponseHeaders(buf []byte) int32      { return host.httpResponseHeaders(buf) }
func hostHTTPResponseBody(buf []byte) int32         { return host.httpResponseBody(buf) }
func hostKVGet(store, key string, buf []byte) int32 { return host.kvGet(store, key, buf) }
func hostKVVersion(store, key string) int64         { return host.kvVersion(store, key) }
func hostKVSet(store, key string, val []byte, ttlMillis int64) int32 {
	return host.kvSet(store, key, val, ttlMillis)
}
func hostKVCas(store, key string, version int64, val []byte, ttlMillis int64) int32 {
	return host.kvCas(store, key, version, val, ttlMillis)
}
func hostKVDelete(store, key string) int32 { return host.kvDelete(store, key) }
func hostKVIncr(store, key string, delta int64, result *int64) int32 {
	return host.kvIncr(store, key, delta, result)
}
func hostKVAdd(store, key string, delta int64) int32 {
	return host.kvAdd(store, key, delta)
}
func hostStateGet(buf []byte) int32 { return host.stateGet(buf) }
func hostStateSet(v []byte) int32   { return host.stateSet(v) }
