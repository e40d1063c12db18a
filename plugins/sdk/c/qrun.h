/*
 * qrun.h: the C guest SDK for qrun message handlers (ABI v1, abi/ABI.md).
 *
 * Header only, C99, wasi-libc for malloc and vsnprintf. A handler is a
 * function from a message to a verdict, registered with QRUN_HANDLER, which
 * defines the exports the host looks for (qrun_abi_v1, qrun_alloc,
 * qrun_free, qrun_handle); QRUN_INIT optionally adds qrun_init:
 *
 *     #include "qrun.h"
 *
 *     static qrun_verdict handle(const qrun_msg *m) {
 *         qrun_logf(QRUN_INFO, "got %zu bytes", m->len);
 *         return QRUN_ACK;
 *     }
 *     QRUN_HANDLER(handle)
 *
 * Build as a WASI reactor, so that _initialize runs C constructors once:
 *
 *     clang --target=wasm32-wasi -mexec-model=reactor -O2 -I path/to/sdk/c \
 *         -Wl,--strip-all -o handler.wasm handler.c
 *
 * Functions returning a string return a malloc'd, NUL-terminated copy the
 * caller frees, or NULL when the value is absent (or memory ran out); the
 * qrun_sys_* declarations are the raw ABI, for code that wants to avoid the
 * copies. An instance serves one message at a time and many over its life,
 * so static variables persist between messages (as a cache: the host may
 * replace an instance between any two messages).
 */
#ifndef QRUN_H
#define QRUN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Verdicts: what to do with the message. */
typedef enum {
	QRUN_ACK = 0,         /* done: removed */
	QRUN_NACK = 1,        /* failure: retried with backoff, DLQ after max_attempts */
	QRUN_REQUEUE = 2,     /* again after the qrun_set_delay_ms delay; not a failure */
	QRUN_DEAD_LETTER = 3  /* to the dead-letter queue now */
} qrun_verdict;

/* Log levels. */
typedef enum { QRUN_DEBUG = 0, QRUN_INFO = 1, QRUN_WARN = 2, QRUN_ERROR = 3 } qrun_level;

/* Error codes returned (negative) by host functions. */
enum {
	QRUN_ERR_NOT_FOUND = -2,    /* no such field, attribute, config key or index */
	QRUN_ERR_DENIED = -3,       /* queue not in the publish list, URL not allowed by the http block */
	QRUN_ERR_INVALID = -4,      /* bad argument */
	QRUN_ERR_NO_MESSAGE = -5,   /* message function outside qrun_handle */
	QRUN_ERR_UNAVAILABLE = -6,  /* engine failed or refused; retry may work */
	QRUN_ERR_TOO_LARGE = -7,    /* message exceeds the queue's size limit, response its max_response_size */
	QRUN_ERR_RATE_LIMITED = -8, /* log line dropped */
	QRUN_ERR_TIMEOUT = -9,      /* HTTP request ran out of time */
	QRUN_ERR_CONNECT = -10,     /* HTTP connection could not be made or failed */
	QRUN_ERR_LIMIT = -11,       /* the delivery already made max_requests HTTP requests */
	QRUN_ERR_CONFLICT = -12,    /* qrun_kv_cas: the key's version is not the one given */
	QRUN_ERR_UNSUPPORTED = -13  /* per-message state on an engine that keeps none */
};

/* Message fields for qrun_msg_field. */
enum {
	QRUN_FIELD_ID = 0,
	QRUN_FIELD_QUEUE = 1,
	QRUN_FIELD_CONTENT_TYPE = 2,
	QRUN_FIELD_CORRELATION_ID = 3,
	QRUN_FIELD_ORDERING_KEY = 4
};

/* The message being handled; body is the host's buffer, valid only during
 * the handler call (copy it to keep it), and not NUL-terminated. */
typedef struct {
	const uint8_t *body;
	size_t len;
} qrun_msg;

/* An attribute for qrun_publish. */
typedef struct {
	const char *key;
	const char *value;
} qrun_attr;

/* ---- The raw ABI: host functions of module "qrun" (ABI.md section 4). ---- */

#define QRUN_IMPORT(name) __attribute__((import_module("qrun"), import_name(#name)))

QRUN_IMPORT(log) int32_t qrun_sys_log(int32_t level, const void *ptr, int32_t len);
QRUN_IMPORT(msg_field) int32_t qrun_sys_msg_field(int32_t field, void *buf, int32_t cap);
QRUN_IMPORT(msg_attempt) int32_t qrun_sys_msg_attempt(void);
QRUN_IMPORT(msg_enqueued_at) int64_t qrun_sys_msg_enqueued_at(void);
QRUN_IMPORT(msg_attr) int32_t qrun_sys_msg_attr(const void *key, int32_t key_len, void *buf, int32_t cap);
QRUN_IMPORT(msg_attr_key) int32_t qrun_sys_msg_attr_key(int32_t index, void *buf, int32_t cap);
QRUN_IMPORT(config_get) int32_t qrun_sys_config_get(const void *key, int32_t key_len, void *buf, int32_t cap);
QRUN_IMPORT(publish) int32_t qrun_sys_publish(const void *queue, int32_t queue_len, const void *body,
                                              int32_t body_len, const void *attrs, int32_t attrs_len);
QRUN_IMPORT(set_delay) int32_t qrun_sys_set_delay(int64_t millis);
QRUN_IMPORT(extend_lease) int32_t qrun_sys_extend_lease(int64_t millis);
QRUN_IMPORT(now) int64_t qrun_sys_now(void);
QRUN_IMPORT(set_reason) int32_t qrun_sys_set_reason(const void *ptr, int32_t len);
QRUN_IMPORT(http_request) int32_t qrun_sys_http_request(const void *method, int32_t method_len, const void *url,
                                                        int32_t url_len, const void *headers, int32_t headers_len,
                                                        const void *body, int32_t body_len);
QRUN_IMPORT(http_response_header) int32_t qrun_sys_http_response_header(const void *name, int32_t name_len, void *buf,
                                                                        int32_t cap);
QRUN_IMPORT(http_response_headers) int32_t qrun_sys_http_response_headers(void *buf, int32_t cap);
QRUN_IMPORT(http_response_body) int32_t qrun_sys_http_response_body(void *buf, int32_t cap);
QRUN_IMPORT(kv_get) int32_t qrun_sys_kv_get(const void *store, int32_t store_len, const void *key, int32_t key_len,
                                            void *buf, int32_t cap);
QRUN_IMPORT(kv_version) int64_t qrun_sys_kv_version(const void *store, int32_t store_len, const void *key,
                                                    int32_t key_len);
QRUN_IMPORT(kv_set) int32_t qrun_sys_kv_set(const void *store, int32_t store_len, const void *key, int32_t key_len,
                                            const void *val, int32_t val_len, int64_t ttl_ms);
QRUN_IMPORT(kv_cas) int32_t qrun_sys_kv_cas(const void *store, int32_t store_len, const void *key, int32_t key_len,
                                            int64_t version, const void *val, int32_t val_len, int64_t ttl_ms);
QRUN_IMPORT(kv_delete) int32_t qrun_sys_kv_delete(const void *store, int32_t store_len, const void *key,
                                                  int32_t key_len);
QRUN_IMPORT(kv_incr) int32_t qrun_sys_kv_incr(const void *store, int32_t store_len, const void *key, int32_t key_len,
                                              int64_t delta, int64_t *result);
QRUN_IMPORT(kv_add) int32_t qrun_sys_kv_add(const void *store, int32_t store_len, const void *key, int32_t key_len,
                                            int64_t delta);
QRUN_IMPORT(state_get) int32_t qrun_sys_state_get(void *buf, int32_t cap);
QRUN_IMPORT(state_set) int32_t qrun_sys_state_set(const void *ptr, int32_t len);

/* ---- Helpers. ---- */

/* qrun__read runs a host call that writes a value into (buf, cap). The ABI
 * writes nothing when the value does not fit and returns its full length, so
 * the call is repeated with a buffer that size; a loop covers a value that
 * changed in between. Returns a NUL-terminated malloc'd copy, or NULL. */
typedef int32_t (*qrun__reader)(const void *arg, int32_t arg_len, void *buf, int32_t cap);

static inline char *qrun__read(qrun__reader call, const void *arg, int32_t arg_len) {
	int32_t cap = 128;
	for (;;) {
		char *buf = (char *)malloc((size_t)cap + 1);
		if (buf == NULL) return NULL;
		int32_t n = call(arg, arg_len, buf, cap);
		if (n >= 0 && n <= cap) {
			buf[n] = '\0';
			return buf;
		}
		free(buf);
		if (n < 0) return NULL;
		cap = n;
	}
}

static inline int32_t qrun__field(const void *arg, int32_t field, void *buf, int32_t cap) {
	(void)arg;
	return qrun_sys_msg_field(field, buf, cap);
}
static inline int32_t qrun__attr_key(const void *arg, int32_t index, void *buf, int32_t cap) {
	(void)arg;
	return qrun_sys_msg_attr_key(index, buf, cap);
}

/* Message fields, NULL outside qrun_handle; "" when the field is empty. */
static inline char *qrun_msg_field(int32_t field) { return qrun__read(qrun__field, NULL, field); }
static inline char *qrun_msg_id(void) { return qrun_msg_field(QRUN_FIELD_ID); }
static inline char *qrun_msg_queue(void) { return qrun_msg_field(QRUN_FIELD_QUEUE); }

/* The delivery attempt, starting at 1 (negative outside qrun_handle). */
static inline int32_t qrun_msg_attempt(void) { return qrun_sys_msg_attempt(); }

/* When the message was first enqueued, Unix nanoseconds. */
static inline int64_t qrun_msg_enqueued_at(void) { return qrun_sys_msg_enqueued_at(); }

/* The value of attribute key, or NULL if the message has none. */
static inline char *qrun_attr_get(const char *key) {
	return qrun__read(qrun_sys_msg_attr, key, (int32_t)strlen(key));
}

/* The name of the attribute at index in sorted order, or NULL past the
 * last: for (i = 0; (k = qrun_attr_key(i)) != NULL; i++) enumerates them. */
static inline char *qrun_attr_key(int32_t index) { return qrun__read(qrun__attr_key, NULL, index); }

/* Every attribute of the message, sorted by key, as a malloc'd array of
 * *n pairs whose strings are malloc'd too; free it all with
 * qrun_attrs_free. NULL with *n = 0 when there are none, NULL with *n = 1
 * when memory ran out. Two host calls per attribute: prefer qrun_attr_get
 * for keys you know. */
static inline void qrun_attrs_free(qrun_attr *attrs, size_t n) {
	if (attrs == NULL) return;
	for (size_t i = 0; i < n; i++) {
		free((void *)attrs[i].key);
		free((void *)attrs[i].value);
	}
	free(attrs);
}

static inline qrun_attr *qrun_attrs_get_all(size_t *n) {
	qrun_attr *attrs = NULL;
	size_t len = 0, cap = 0;
	char *key;
	*n = 0;
	while ((key = qrun_attr_key((int32_t)len)) != NULL) {
		char *value = qrun_attr_get(key);
		if (len == cap) {
			size_t ncap = cap ? 2 * cap : 8;
			qrun_attr *grown = (qrun_attr *)realloc(attrs, ncap * sizeof *attrs);
			if (grown == NULL) { /* handled as out of memory below */
				free(value);
				value = NULL;
			} else {
				attrs = grown;
				cap = ncap;
			}
		}
		if (value == NULL) { /* out of memory (the key exists, so it has a value) */
			free(key);
			qrun_attrs_free(attrs, len);
			*n = 1;
			return NULL;
		}
		attrs[len].key = key;
		attrs[len].value = value;
		len++;
	}
	*n = len;
	return attrs;
}

/* The value of key in the consumer's config map, or NULL if it is not set.
 * Works in the QRUN_INIT function too. */
static inline char *qrun_config_get(const char *key) {
	return qrun__read(qrun_sys_config_get, key, (int32_t)strlen(key));
}

/* Writes msg to qrun's log; the host adds consumer, queue, message id and
 * attempt. Returns 0 or a negative error (QRUN_ERR_RATE_LIMITED). */
static inline int32_t qrun_log(qrun_level level, const char *msg) {
	return qrun_sys_log((int32_t)level, msg, (int32_t)strlen(msg));
}

/* printf-style qrun_log; lines are cut at 1 KiB here (the host cuts at 4). */
static inline int32_t qrun_logf(qrun_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int32_t qrun_logf(qrun_level level, const char *fmt, ...) {
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0) return QRUN_ERR_INVALID;
	if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
	return qrun_sys_log((int32_t)level, line, n);
}

static inline uint8_t *qrun__put32(uint8_t *p, uint32_t v) {
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
	return p + 4;
}

/* qrun__encode writes n pairs in the ABI's pair encoding into a malloc'd
 * buffer of *size bytes; NULL with *size 0 for none, NULL with *size 1 when
 * memory ran out. */
static inline uint8_t *qrun__encode(const qrun_attr *attrs, size_t n, size_t *size) {
	*size = 0;
	for (size_t i = 0; i < n; i++) *size += 8 + strlen(attrs[i].key) + strlen(attrs[i].value);
	if (*size == 0) return NULL;
	uint8_t *enc = (uint8_t *)malloc(*size);
	if (enc == NULL) {
		*size = 1;
		return NULL;
	}
	uint8_t *p = enc;
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(attrs[i].key), vl = strlen(attrs[i].value);
		p = qrun__put32(p, (uint32_t)kl);
		memcpy(p, attrs[i].key, kl);
		p = qrun__put32(p + kl, (uint32_t)vl);
		memcpy(p, attrs[i].value, vl);
		p += vl;
	}
	return enc;
}

/* Enqueues body with nattrs attributes (attrs may be NULL when nattrs is 0)
 * to queue, which must be in the consumer's publish list. Returns 0 or a
 * negative error: QRUN_ERR_DENIED, QRUN_ERR_TOO_LARGE, QRUN_ERR_UNAVAILABLE,
 * QRUN_ERR_INVALID (a key given twice), or QRUN_ERR_UNAVAILABLE when the
 * attribute encoding could not be allocated. */
static inline int32_t qrun_publish(const char *queue, const void *body, size_t len, const qrun_attr *attrs,
                                   size_t nattrs) {
	size_t size;
	uint8_t *enc = qrun__encode(attrs, nattrs, &size);
	if (enc == NULL && size > 0) return QRUN_ERR_UNAVAILABLE;
	int32_t r = qrun_sys_publish(queue, (int32_t)strlen(queue), body, (int32_t)len, enc, (int32_t)size);
	free(enc);
	return r;
}

/* How long the current message stays invisible after a nack or requeue
 * verdict, replacing the retry policy's delay for this delivery. */
static inline int32_t qrun_set_delay_ms(int64_t millis) { return qrun_sys_set_delay(millis); }

/* The most of a reason, in bytes, that qrun keeps. */
#define QRUN_MAX_REASON 1024

/* Why the current message is nacked or dead-lettered: with QRUN_NACK or
 * QRUN_DEAD_LETTER the reason is logged with the verdict and becomes the
 * dead letter's reason, as given (what `qrun dlq show` shows). Ignored for
 * ack and requeue; a later call replaces it, "" clears it, and the host keeps
 * at most QRUN_MAX_REASON bytes, cut at a UTF-8 boundary. Returns 0,
 * QRUN_ERR_INVALID for text that is not UTF-8, or QRUN_ERR_NO_MESSAGE
 * outside qrun_handle. */
static inline int32_t qrun_set_reason(const char *reason) {
	return qrun_sys_set_reason(reason, (int32_t)strlen(reason));
}

/* printf-style qrun_set_reason. The text is formatted a few bytes past
 * QRUN_MAX_REASON so that the host, not this cut, decides where a long one
 * ends: it cuts at a UTF-8 boundary, which vsnprintf does not. */
static inline int32_t qrun_set_reasonf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int32_t qrun_set_reasonf(const char *fmt, ...) {
	char text[QRUN_MAX_REASON + 4];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (n < 0) return QRUN_ERR_INVALID;
	if ((size_t)n >= sizeof text) n = (int)sizeof text - 1;
	return qrun_sys_set_reason(text, n);
}

/* Records reason (see qrun_set_reason) and returns QRUN_DEAD_LETTER:
 * `return qrun_dead_letter_with("webhook: 404 Not Found");` */
static inline qrun_verdict qrun_dead_letter_with(const char *reason) {
	qrun_set_reason(reason);
	return QRUN_DEAD_LETTER;
}

/* Records reason (see qrun_set_reason) and returns QRUN_NACK. */
static inline qrun_verdict qrun_nack_with(const char *reason) {
	qrun_set_reason(reason);
	return QRUN_NACK;
}

/* ---- Outbound HTTP (ABI.md section 4, "Outbound HTTP"). ---- */

/* A complete response: body is malloc'd (and NUL-terminated, not counted in
 * len); free it with qrun_http_response_free. */
typedef struct {
	int32_t status;
	uint8_t *body;
	size_t len;
} qrun_http_response;

static inline void qrun_http_response_free(qrun_http_response *r) {
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

static inline int32_t qrun__http_body(const void *arg, int32_t arg_len, void *buf, int32_t cap) {
	(void)arg;
	(void)arg_len;
	return qrun_sys_http_response_body(buf, cap);
}

/* Sends a request (method NULL or "" is GET; nheaders headers, which may
 * repeat a name) and reads the whole response into *resp. Returns the HTTP
 * status, or a negative error: QRUN_ERR_DENIED (not allowed), _TIMEOUT,
 * _CONNECT, _TOO_LARGE (response over max_response_size), _LIMIT,
 * _INVALID, _NO_MESSAGE, or _UNAVAILABLE when memory ran out here. A 404 or
 * a 503 is a status, not an error. */
static inline int32_t qrun_http(const char *method, const char *url, const qrun_attr *headers, size_t nheaders,
                                const void *body, size_t len, qrun_http_response *resp) {
	resp->status = 0;
	resp->body = NULL;
	resp->len = 0;
	if (method == NULL || *method == '\0') method = "GET";
	size_t size;
	uint8_t *enc = qrun__encode(headers, nheaders, &size);
	if (enc == NULL && size > 0) return QRUN_ERR_UNAVAILABLE;
	int32_t status = qrun_sys_http_request(method, (int32_t)strlen(method), url, (int32_t)strlen(url), enc,
	                                       (int32_t)size, len > 0 ? body : NULL, (int32_t)len);
	free(enc);
	if (status < 0) return status;
	/* The body is read from the held response: the request is not sent again. */
	int32_t n = qrun_sys_http_response_body(NULL, 0);
	if (n < 0) return n;
	char *b = qrun__read(qrun__http_body, NULL, 0);
	if (b == NULL) return QRUN_ERR_UNAVAILABLE;
	resp->status = status;
	resp->body = (uint8_t *)b;
	resp->len = (size_t)n;
	return status;
}

/* The value of header name of the last response (several values joined
 * with ", "), or NULL. */
static inline char *qrun_http_header(const char *name) {
	return qrun__read(qrun_sys_http_response_header, name, (int32_t)strlen(name));
}

/* qrun__days is the number of days from 1970-01-01 to y-m-d (proleptic
 * Gregorian), Howard Hinnant's days_from_civil. */
static inline int64_t qrun__days(int64_t y, int64_t m, int64_t d) {
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* How long the last response asks the client to wait, in milliseconds: its
 * Retry-After, in seconds or as an HTTP date ("Sun, 06 Nov 1994 08:49:37
 * GMT", relative to qrun_now_ns; a past date is 0), when status is 429 or
 * 503. -1 when the response does not say. */
static inline int64_t qrun_http_retry_after_ms(int32_t status) {
	if (status != 429 && status != 503) return -1;
	char *v = qrun_http_header("Retry-After");
	if (v == NULL) return -1;
	int64_t ms = -1;
	char *p = v;
	while (*p == ' ') p++;
	if (*p >= '0' && *p <= '9') {
		int64_t secs = 0;
		while (*p >= '0' && *p <= '9' && secs < 604800) secs = secs * 10 + (*p++ - '0');
		while (*p >= '0' && *p <= '9') p++;
		while (*p == ' ') p++;
		if (*p == '\0') ms = (secs < 604800 ? secs : 604800) * 1000;
	} else {
		static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
		char mon[4] = {0};
		int d, y, hh, mm, ss;
		if (strlen(p) == 29 && sscanf(p + 5, "%2d %3c %4d %2d:%2d:%2d GMT", &d, mon, &y, &hh, &mm, &ss) == 6) {
			const char *at = strstr(months, mon);
			if (at != NULL && (at - months) % 3 == 0) {
				int64_t t = qrun__days(y, (at - months) / 3 + 1, d) * 86400 + hh * 3600 + mm * 60 + ss;
				int64_t diff = t * 1000 - qrun_sys_now() / 1000000;
				ms = diff > 0 ? diff : 0;
			}
		}
	}
	free(v);
	return ms;
}

/* For a response worth retrying (429, 5xx): sets the retry delay from its
 * Retry-After when it has one and returns QRUN_NACK, which counts an
 * attempt, so a receiver that never recovers still dead-letters the
 * message. Call it right after qrun_http, before another request. */
static inline qrun_verdict qrun_http_retry_later(int32_t status) {
	int64_t ms = qrun_http_retry_after_ms(status);
	if (ms >= 0) qrun_set_delay_ms(ms);
	return QRUN_NACK;
}

/* Extends the current delivery's lease to now + millis (a heartbeat). */
static inline int32_t qrun_extend_lease_ms(int64_t millis) { return qrun_sys_extend_lease(millis); }

/* The host's wall clock, Unix nanoseconds. */
static inline int64_t qrun_now_ns(void) { return qrun_sys_now(); }

/* ---- Key-value stores and per-message state (ABI.md section 4). ----
 *
 * A store must be in the consumer's kv list (else QRUN_ERR_DENIED); keys are
 * 1..512 bytes (else QRUN_ERR_INVALID); every function belongs to a delivery
 * (QRUN_ERR_NO_MESSAGE outside qrun_handle). On an engine with
 * transactions, writes to a store of the queue's own engine happen together
 * with the ack or not at all, and reads see the delivery's own writes:
 *
 *     int64_t n;
 *     if (qrun_kv_incr("counters", "orders", 1, &n) < 0) return QRUN_NACK;
 */

/* qrun__read_value is qrun__read keeping the host's code: the value's length
 * with *out malloc'd (NUL-terminated, not counted), or the negative code
 * with *out NULL (QRUN_ERR_UNAVAILABLE when memory ran out). */
static inline int32_t qrun__read_value(qrun__reader call, const void *arg, int32_t arg_len, char **out) {
	int32_t cap = 128;
	*out = NULL;
	for (;;) {
		char *buf = (char *)malloc((size_t)cap + 1);
		if (buf == NULL) return QRUN_ERR_UNAVAILABLE;
		int32_t n = call(arg, arg_len, buf, cap);
		if (n >= 0 && n <= cap) {
			buf[n] = '\0';
			*out = buf;
			return n;
		}
		free(buf);
		if (n < 0) return n;
		cap = n;
	}
}

typedef struct {
	const char *store, *key;
} qrun__kv_ref;

static inline int32_t qrun__kv_get(const void *arg, int32_t arg_len, void *buf, int32_t cap) {
	(void)arg_len;
	const qrun__kv_ref *r = (const qrun__kv_ref *)arg;
	return qrun_sys_kv_get(r->store, (int32_t)strlen(r->store), r->key, (int32_t)strlen(r->key), buf, cap);
}

static inline int32_t qrun__state_get(const void *arg, int32_t arg_len, void *buf, int32_t cap) {
	(void)arg;
	(void)arg_len;
	return qrun_sys_state_get(buf, cap);
}

/* The value of key in store: its length, with *value a malloc'd copy the
 * caller frees; or a negative error with *value NULL: QRUN_ERR_NOT_FOUND
 * when the key is absent (or expired). */
static inline int32_t qrun_kv_get(const char *store, const char *key, char **value) {
	qrun__kv_ref r = {store, key};
	return qrun__read_value(qrun__kv_get, &r, 0, value);
}

/* The key's version as this delivery sees it (0 when absent), what
 * qrun_kv_cas compares against; or a negative error. */
static inline int64_t qrun_kv_version(const char *store, const char *key) {
	return qrun_sys_kv_version(store, (int32_t)strlen(store), key, (int32_t)strlen(key));
}

/* Stores len bytes at val under key, expiring ttl_ms later (0: never).
 * Returns 0 or a negative error: QRUN_ERR_TOO_LARGE over the store's
 * max_value_size, QRUN_ERR_INVALID for a bad key or a negative TTL. */
static inline int32_t qrun_kv_set(const char *store, const char *key, const void *val, size_t len, int64_t ttl_ms) {
	return qrun_sys_kv_set(store, (int32_t)strlen(store), key, (int32_t)strlen(key), len > 0 ? val : NULL,
	                       (int32_t)len, ttl_ms);
}

/* qrun_kv_set only if the key's version is still version (0: only if
 * absent); QRUN_ERR_CONFLICT otherwise, and nothing is written. */
static inline int32_t qrun_kv_cas(const char *store, const char *key, int64_t version, const void *val, size_t len,
                                  int64_t ttl_ms) {
	return qrun_sys_kv_cas(store, (int32_t)strlen(store), key, (int32_t)strlen(key), version, len > 0 ? val : NULL,
	                       (int32_t)len, ttl_ms);
}

/* Removes key; 0 for an absent key too, or a negative error. */
static inline int32_t qrun_kv_delete(const char *store, const char *key) {
	return qrun_sys_kv_delete(store, (int32_t)strlen(store), key, (int32_t)strlen(key));
}

/* Adds delta to the decimal integer under key (absent counts as 0), stores
 * the sum as decimal text and sets *result to it. Returns 0, or a negative
 * error: QRUN_ERR_INVALID when the value is not a decimal int64 or the sum
 * overflows. */
static inline int32_t qrun_kv_incr(const char *store, const char *key, int64_t delta, int64_t *result) {
	return qrun_sys_kv_incr(store, (int32_t)strlen(store), key, (int32_t)strlen(key), delta, result);
}

/* Adds delta to the decimal integer under key (absent counts as 0) without
 * returning the sum and without reading the key: the counter a handler does
 * not need to read (qrun_kv_incr when it needs the sum). On a transactional
 * store (same engine as the queue: memory, disk, postgres) the add is held
 * and applied at commit to whatever value the key has then, so deliveries
 * adding to one key never conflict and the call costs no round trip to the
 * store; if at commit the value is not a decimal int64 or the sum overflows,
 * nothing of the delivery is applied and the delivery fails. A later read of
 * the key in the same delivery sees the value with its adds applied. Returns
 * 0, or a negative error: QRUN_ERR_INVALID when the value is known at the
 * call (on an immediate store always, on a transactional one once the
 * delivery read or wrote the key) and is not a decimal int64 or the sum
 * overflows, QRUN_ERR_TOO_LARGE when the sum would exceed the store's
 * max_value_size. */
static inline int32_t qrun_kv_add(const char *store, const char *key, int64_t delta) {
	return qrun_sys_kv_add(store, (int32_t)strlen(store), key, (int32_t)strlen(key), delta);
}

/* The current message's per-message state, as qrun_kv_get returns a value:
 * QRUN_ERR_NOT_FOUND when there is none, QRUN_ERR_UNSUPPORTED when the
 * queue's engine keeps none (only memory, disk and postgres do). */
static inline int32_t qrun_state_get(char **value) { return qrun__read_value(qrun__state_get, NULL, 0, value); }

/* Replaces the message's state (at most 1 MiB, else QRUN_ERR_TOO_LARGE). It
 * is written through at once, so it survives a nack, a trap, a timeout and
 * a crash of qrun; the engine deletes it when the message is acked or
 * dead-lettered. */
static inline int32_t qrun_state_set(const void *val, size_t len) {
	return qrun_sys_state_set(len > 0 ? val : NULL, (int32_t)len);
}

/* ---- Exports (ABI.md section 2). ---- */

#define QRUN_EXPORT(name) __attribute__((export_name(#name)))

/* QRUN_HANDLER(fn) defines the module's exports around
 * qrun_verdict fn(const qrun_msg *m). Use it once, at file scope. Returning
 * any other int (a cast) is a bad verdict: a nack that replaces the instance. */
#define QRUN_HANDLER(fn)                                                             \
	QRUN_EXPORT(qrun_abi_v1) void qrun__abi_v1(void) {}                              \
	/* malloc'd, so qrun_free can give it back; never 0 for a size of 0. */         \
	QRUN_EXPORT(qrun_alloc) void *qrun__alloc(int32_t size) {                        \
		return size < 0 ? NULL : malloc(size > 0 ? (size_t)size : 1);                \
	}                                                                                \
	QRUN_EXPORT(qrun_free) void qrun__free(void *ptr, int32_t size) {                \
		(void)size;                                                                  \
		free(ptr);                                                                   \
	}                                                                                \
	QRUN_EXPORT(qrun_handle) int32_t qrun__handle(const uint8_t *ptr, int32_t len) { \
		/* For an empty body the ABI leaves ptr unspecified: not passed on. */      \
		qrun_msg m = {len > 0 ? ptr : (const uint8_t *)"", len > 0 ? (size_t)len : 0}; \
		return (int32_t)fn(&m);                                                      \
	}

/* QRUN_INIT(fn) exports qrun_init around int fn(void), run once per
 * instance before its first message; non-zero refuses the instance. */
#define QRUN_INIT(fn) \
	QRUN_EXPORT(qrun_init) int32_t qrun__init(void) { return (int32_t)fn(); }

#endif /* QRUN_H */
