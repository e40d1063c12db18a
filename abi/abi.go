// Package abi holds the constants of qrun's guest ABI, shared by the plugin
// host and the Go guest SDK. ABI.md in this directory is the normative
// specification; this file must agree with it.
package abi

import "strconv"

// Version is the ABI version this package describes.
const Version = 1

// ImportModule is the module name under which the host exports its functions.
const ImportModule = "qrun"

// VersionExportPrefix is the prefix of the marker export through which a
// module declares the ABI versions it speaks: a module speaking v1 exports a
// function named "qrun_abi_v1" with no parameters and no results.
const VersionExportPrefix = "qrun_abi_v"

// Guest exports.
const (
	ExportMemory     = "memory"
	ExportAlloc      = "qrun_alloc"  // (size i32) -> ptr i32; required
	ExportHandle     = "qrun_handle" // (ptr i32, len i32) -> verdict i32; required
	ExportInit       = "qrun_init"   // () -> i32, 0 = ready; optional
	ExportFree       = "qrun_free"   // (ptr i32, size i32); optional
	ExportInitialize = "_initialize" // WASI reactor start; optional
)

// Verdicts returned by qrun_handle.
const (
	VerdictAck        = 0
	VerdictNack       = 1
	VerdictRequeue    = 2
	VerdictDeadLetter = 3
)

// VerdictName names a verdict code as qrun's logs and metrics spell it.
func VerdictName(v int32) string {
	switch v {
	case VerdictAck:
		return "ack"
	case VerdictNack:
		return "nack"
	case VerdictRequeue:
		return "requeue"
	case VerdictDeadLetter:
		return "dead_letter"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Host functions in module "qrun".
const (
	FuncLog           = "log"             // (level, ptr, len) -> err
	FuncMsgField      = "msg_field"       // (field, buf, cap) -> len | err
	FuncMsgAttempt    = "msg_attempt"     // () -> attempt
	FuncMsgEnqueuedAt = "msg_enqueued_at" // () -> unix nanos (i64)
	FuncMsgAttr       = "msg_attr"        // (key, key_len, buf, cap) -> len | err
	FuncMsgAttrKey    = "msg_attr_key"    // (index, buf, cap) -> len | err
	FuncConfigGet     = "config_get"      // (key, key_len, buf, cap) -> len | err
	FuncPublish       = "publish"         // (queue, queue_len, body, body_len, attrs, attrs_len) -> err
	FuncSetDelay      = "set_delay"       // (millis i64) -> err
	FuncExtendLease   = "extend_lease"    // (millis i64) -> err
	FuncNow           = "now"             // () -> unix nanos (i64)
	FuncSetReason     = "set_reason"      // (ptr, len) -> err

	// Outbound HTTP (ABI.md section 4, "Outbound HTTP").
	FuncHTTPRequest         = "http_request"          // (method, method_len, url, url_len, headers, headers_len, body, body_len) -> status | err
	FuncHTTPResponseHeader  = "http_response_header"  // (name, name_len, buf, cap) -> len | err
	FuncHTTPResponseHeaders = "http_response_headers" // (buf, cap) -> len | err
	FuncHTTPResponseBody    = "http_response_body"    // (buf, cap) -> len | err

	// Key-value stores and per-message state (ABI.md section 4, "State").
	FuncKVGet     = "kv_get"     // (store, store_len, key, key_len, buf, cap) -> len | err
	FuncKVVersion = "kv_version" // (store, store_len, key, key_len) -> version (i64) | err
	FuncKVSet     = "kv_set"     // (store, store_len, key, key_len, val, val_len, ttl_ms i64) -> err
	FuncKVCas     = "kv_cas"     // (store, store_len, key, key_len, version i64, val, val_len, ttl_ms i64) -> err
	FuncKVDelete  = "kv_delete"  // (store, store_len, key, key_len) -> err
	FuncKVIncr    = "kv_incr"    // (store, store_len, key, key_len, delta i64, result_ptr) -> err
	FuncKVAdd     = "kv_add"     // (store, store_len, key, key_len, delta i64) -> err
	FuncStateGet  = "state_get"  // (buf, cap) -> len | err
	FuncStateSet  = "state_set"  // (ptr, len) -> err
)

// Fields readable through msg_field.
const (
	FieldID            = 0
	FieldQueue         = 1
	FieldContentType   = 2
	FieldCorrelationID = 3
	FieldOrderingKey   = 4
)

// Log levels accepted by log.
const (
	LogDebug = 0
	LogInfo  = 1
	LogWarn  = 2
	LogError = 3
)

// Error codes returned (as negative i32) by host functions.
const (
	ErrNotFound    = -2  // no such field, attribute, config key or index
	ErrDenied      = -3  // publish to a queue the consumer may not publish to
	ErrInvalid     = -4  // bad argument: unknown field or level, negative duration, bad encoding
	ErrNoMessage   = -5  // a message accessor or publish called outside qrun_handle
	ErrUnavailable = -6  // the engine refused or failed; retrying later may work
	ErrTooLarge    = -7  // the message exceeds the target queue's size limit
	ErrRateLimited = -8  // log line dropped by the rate limiter
	ErrTimeout     = -9  // http_request ran out of time (its timeout or the delivery's)
	ErrConnect     = -10 // http_request could not connect, or the connection failed
	ErrLimit       = -11 // http_request beyond the consumer's max_requests per delivery
	ErrConflict    = -12 // kv_cas: the key's version is not the one given
	ErrUnsupported = -13 // state_get/state_set on an engine that keeps no per-message state
)
