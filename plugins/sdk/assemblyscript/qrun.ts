// qrun.ts: the AssemblyScript guest SDK for qrun message handlers
// (ABI v1, abi/ABI.md). Standard library only.
//
// A handler is a top-level function from a Message to a Verdict, registered
// with handle(); the entry file re-exports the ABI exports from this file:
//
//   import { Message, Verdict, handle, log, Level } from "./qrun";
//   export { qrun_abi_v1, qrun_alloc, qrun_free, qrun_init, qrun_handle } from "./qrun";
//
//   function onMessage(m: Message): Verdict {
//     log(Level.Info, "got " + m.length.toString() + " bytes");
//     return Verdict.Ack;
//   }
//   handle(onMessage);
//
// Build it as a reactor whose top-level code runs in _initialize, with
// aborts routed to this file (otherwise the module imports env.abort, which
// qrun does not provide):
//
//   asc handler.ts -o handler.wasm -O3 --runtime incremental \
//     --exportStart _initialize --use abort=path/to/qrun/qrunAbort
//
// An instance serves one message at a time and many over its life, so
// globals persist between messages (as a cache: the host may replace an
// instance between any two messages). AssemblyScript has no closures: the
// handler must be a top-level function.

// ---- The raw ABI: host functions of module "qrun" (ABI.md section 4). ----

@external("qrun", "log")
declare function sys_log(level: i32, ptr: usize, len: i32): i32;
@external("qrun", "msg_field")
declare function sys_msg_field(field: i32, buf: usize, cap: i32): i32;
@external("qrun", "msg_attempt")
declare function sys_msg_attempt(): i32;
@external("qrun", "msg_enqueued_at")
declare function sys_msg_enqueued_at(): i64;
@external("qrun", "msg_attr")
declare function sys_msg_attr(key: usize, keyLen: i32, buf: usize, cap: i32): i32;
@external("qrun", "msg_attr_key")
declare function sys_msg_attr_key(index: i32, buf: usize, cap: i32): i32;
@external("qrun", "config_get")
declare function sys_config_get(key: usize, keyLen: i32, buf: usize, cap: i32): i32;
@external("qrun", "publish")
declare function sys_publish(queue: usize, queueLen: i32, body: usize, bodyLen: i32, attrs: usize, attrsLen: i32): i32;
@external("qrun", "set_delay")
declare function sys_set_delay(millis: i64): i32;
@external("qrun", "extend_lease")
declare function sys_extend_lease(millis: i64): i32;
@external("qrun", "now")
declare function sys_now(): i64;
@external("qrun", "set_reason")
declare function sys_set_reason(ptr: usize, len: i32): i32;
@external("qrun", "http_request")
declare function sys_http_request(method: usize, methodLen: i32, url: usize, urlLen: i32, headers: usize, headersLen: i32, body: usize, bodyLen: i32): i32;
@external("qrun", "http_response_header")
declare function sys_http_response_header(name: usize, nameLen: i32, buf: usize, cap: i32): i32;
@external("qrun", "http_response_body")
declare function sys_http_response_body(buf: usize, cap: i32): i32;
@external("qrun", "kv_get")
declare function sys_kv_get(store: usize, storeLen: i32, key: usize, keyLen: i32, buf: usize, cap: i32): i32;
@external("qrun", "kv_version")
declare function sys_kv_version(store: usize, storeLen: i32, key: usize, keyLen: i32): i64;
@external("qrun", "kv_set")
declare function sys_kv_set(store: usize, storeLen: i32, key: usize, keyLen: i32, val: usize, valLen: i32, ttlMs: i64): i32;
@external("qrun", "kv_cas")
declare function sys_kv_cas(store: usize, storeLen: i32, key: usize, keyLen: i32, version: i64, val: usize, valLen: i32, ttlMs: i64): i32;
@external("qrun", "kv_delete")
declare function sys_kv_delete(store: usize, storeLen: i32, key: usize, keyLen: i32): i32;
@external("qrun", "kv_incr")
declare function sys_kv_incr(store: usize, storeLen: i32, key: usize, keyLen: i32, delta: i64, result: usize): i32;
@external("qrun", "kv_add")
declare function sys_kv_add(store: usize, storeLen: i32, key: usize, keyLen: i32, delta: i64): i32;
@external("qrun", "state_get")
declare function sys_state_get(buf: usize, cap: i32): i32;
@external("qrun", "state_set")
declare function sys_state_set(ptr: usize, len: i32): i32;

/** What to do with a message. */
export enum Verdict {
  /** Done: the message is removed. */
  Ack = 0,
  /** A failure: retried with backoff, dead-lettered after max_attempts. */
  Nack = 1,
  /** Visible again after the setDelay delay (0 if none); not a failure. */
  Requeue = 2,
  /** To the dead-letter queue now: no retry can fix it. */
  DeadLetter = 3,
}

/** Log levels. */
export enum Level { Debug = 0, Info = 1, Warn = 2, Error = 3 }

/** Error codes returned (negative) by host functions. */
export namespace Err {
  export const NotFound: i32 = -2;
  export const Denied: i32 = -3;
  export const Invalid: i32 = -4;
  export const NoMessage: i32 = -5;
  export const Unavailable: i32 = -6;
  export const TooLarge: i32 = -7;
  export const RateLimited: i32 = -8;
  export const Timeout: i32 = -9;
  export const Connect: i32 = -10;
  export const Limit: i32 = -11;
  export const Conflict: i32 = -12;
  export const Unsupported: i32 = -13;
}

// Host calls that return bytes write nothing when the value does not fit and
// return its full length, so a call is repeated with a buffer that size.
// scratch is reused across calls; it grows, never shrinks (bounded by the
// largest value read).
let scratch = new ArrayBuffer(256);

const FIELD = 0;
const ATTR = 1;
const ATTR_KEY = 2;
const CONFIG = 3;
const HTTP_HEADER = 4;
const HTTP_BODY = 5;
const STATE = 6;

function call(kind: i32, n: i32, key: ArrayBuffer | null, buf: usize, cap: i32): i32 {
  const kp: usize = key === null ? 0 : changetype<usize>(key);
  const kl = key === null ? 0 : key.byteLength;
  if (kind == FIELD) return sys_msg_field(n, buf, cap);
  if (kind == ATTR) return sys_msg_attr(kp, kl, buf, cap);
  if (kind == ATTR_KEY) return sys_msg_attr_key(n, buf, cap);
  if (kind == HTTP_HEADER) return sys_http_response_header(kp, kl, buf, cap);
  if (kind == HTTP_BODY) return sys_http_response_body(buf, cap);
  if (kind == STATE) return sys_state_get(buf, cap);
  return sys_config_get(kp, kl, buf, cap);
}

/** readString returns the value, or null when the host returned an error. */
function readString(kind: i32, n: i32, key: string | null): string | null {
  const k: ArrayBuffer | null = key === null ? null : String.UTF8.encode(key);
  let got = call(kind, n, k, changetype<usize>(scratch), scratch.byteLength);
  while (got > scratch.byteLength) {
    scratch = new ArrayBuffer(got);
    got = call(kind, n, k, changetype<usize>(scratch), scratch.byteLength);
  }
  if (got < 0) return null;
  return String.UTF8.decodeUnsafe(changetype<usize>(scratch), <usize>got);
}

/** readBytes is readString for bytes: a copy, or null on an error. */
function readBytes(kind: i32): Uint8Array | null {
  let got = call(kind, 0, null, changetype<usize>(scratch), scratch.byteLength);
  while (got > scratch.byteLength) {
    scratch = new ArrayBuffer(got);
    got = call(kind, 0, null, changetype<usize>(scratch), scratch.byteLength);
  }
  if (got < 0) return null;
  const b = new Uint8Array(got);
  memory.copy(b.dataStart, changetype<usize>(scratch), <usize>got);
  return b;
}

/** A value read from a store or the message's state. error is 0 when it was
 * found, Err.NotFound when it is absent, else a negative Err code; bytes is
 * then empty. */
export class Value {
  constructor(readonly error: i32, readonly bytes: Uint8Array) {}

  /** Whether the value was there. */
  get found(): bool { return this.error == 0; }

  /** The value decoded as UTF-8. */
  text(): string {
    return String.UTF8.decodeUnsafe(this.bytes.dataStart, <usize>this.bytes.length);
  }
}

/** readValue is readBytes keeping the host's code: kind STATE, or a kv_get
 * of key in store when store is not null. */
function readValue(kind: i32, store: ArrayBuffer | null, key: ArrayBuffer | null): Value {
  let got: i32 = 0;
  while (true) {
    const buf = changetype<usize>(scratch);
    const cap = scratch.byteLength;
    got = store === null ? call(kind, 0, null, buf, cap)
      : sys_kv_get(changetype<usize>(store), store.byteLength, changetype<usize>(key), key!.byteLength, buf, cap);
    if (got <= scratch.byteLength) break;
    scratch = new ArrayBuffer(got);
  }
  if (got < 0) return new Value(got, new Uint8Array(0));
  const b = new Uint8Array(got);
  memory.copy(b.dataStart, changetype<usize>(scratch), <usize>got);
  return new Value(0, b);
}

/** The result of KV.incr: error 0 and the new value, or a negative Err code. */
export class Counter {
  constructor(readonly error: i32, readonly value: i64) {}
}

// Where kv_incr writes its result: static memory, so no allocation per call.
const incrOut = memory.data(8);

/**
 * A key-value store the consumer is granted (its kv list). On an engine
 * with transactions, when the store lives in the same engine as the
 * consumer's queue, writes happen together with the ack or not at all, and
 * reads see the delivery's own writes (docs/state.md). Methods return 0 or a
 * negative Err code: Denied for a store not granted, Invalid for a key that
 * is empty or over 512 bytes (or a negative TTL), TooLarge over the store's
 * max_value_size, NoMessage outside a handler call. Keys are sent as UTF-8.
 *
 *   const counters = new KV("counters");
 *   const c = counters.incr("orders", 1);
 *   if (c.error < 0) return Verdict.Nack;
 */
export class KV {
  private n: ArrayBuffer;

  constructor(readonly name: string) { this.n = String.UTF8.encode(name); }

  /** The value of key; its error is Err.NotFound when absent (or expired). */
  get(key: string): Value {
    return readValue(0, this.n, String.UTF8.encode(key));
  }

  /** The key's version as this delivery sees it, 0 when absent (what cas
   * compares against), or a negative Err code. */
  version(key: string): i64 {
    const k = String.UTF8.encode(key);
    return sys_kv_version(changetype<usize>(this.n), this.n.byteLength, changetype<usize>(k), k.byteLength);
  }

  /** Stores value under key, expiring ttlMs later (0: never). */
  set(key: string, value: ArrayBuffer, ttlMs: i64 = 0): i32 {
    const k = String.UTF8.encode(key);
    return sys_kv_set(changetype<usize>(this.n), this.n.byteLength, changetype<usize>(k), k.byteLength,
      changetype<usize>(value), value.byteLength, ttlMs);
  }

  /** set with a string value, stored as UTF-8. */
  setText(key: string, value: string, ttlMs: i64 = 0): i32 {
    return this.set(key, String.UTF8.encode(value), ttlMs);
  }

  /** set only if the key's version is still version (0: only if absent);
   * Err.Conflict otherwise, and nothing is written. */
  cas(key: string, version: i64, value: ArrayBuffer, ttlMs: i64 = 0): i32 {
    const k = String.UTF8.encode(key);
    return sys_kv_cas(changetype<usize>(this.n), this.n.byteLength, changetype<usize>(k), k.byteLength,
      version, changetype<usize>(value), value.byteLength, ttlMs);
  }

  /** cas with a string value, stored as UTF-8. */
  casText(key: string, version: i64, value: string, ttlMs: i64 = 0): i32 {
    return this.cas(key, version, String.UTF8.encode(value), ttlMs);
  }

  /** Removes key; 0 for an absent key too. */
  delete(key: string): i32 {
    const k = String.UTF8.encode(key);
    return sys_kv_delete(changetype<usize>(this.n), this.n.byteLength, changetype<usize>(k), k.byteLength);
  }

  /** Adds delta to the decimal integer under key (absent counts as 0) and
   * stores the sum as decimal text; error Err.Invalid when the value is not
   * a decimal i64 or the sum overflows. */
  incr(key: string, delta: i64): Counter {
    const k = String.UTF8.encode(key);
    const r = sys_kv_incr(changetype<usize>(this.n), this.n.byteLength, changetype<usize>(k), k.byteLength,
      delta, incrOut);
    return r < 0 ? new Counter(r, 0) : new Counter(0, load<i64>(incrOut));
  }

  /** Adds delta to the decimal integer under key (absent counts as 0)
   * without returning the sum and without reading the key: the counter a
   * handler does not need to read (incr when it needs the sum). On a
   * transactional store (same engine as the queue: memory, disk, postgres)
   * the add is held and applied at commit to whatever value the key has
   * then, so deliveries adding to one key never conflict and the call costs
   * no round trip to the store; if at commit the value is not a decimal i64
   * or the sum overflows, nothing of the delivery is applied and the
   * delivery fails. A later read of the key in the same delivery sees the
   * value with its adds applied. Returns 0 or a negative Err code:
   * Err.Invalid when the value is known at the call (on an immediate store
   * always, on a transactional one once the delivery read or wrote the key)
   * and is not a decimal i64 or the sum overflows, Err.TooLarge when the sum
   * would exceed the store's max_value_size. */
  add(key: string, delta: i64): i32 {
    const k = String.UTF8.encode(key);
    return sys_kv_add(changetype<usize>(this.n), this.n.byteLength, changetype<usize>(k), k.byteLength, delta);
  }
}

/** The delivery being handled; valid only during the handler call: the
 * SDK hands every delivery the same Message, so one kept past its call reads
 * whatever delivery comes next. Copy what must outlive the call. */
export class Message {
  constructor(private ptr: usize, readonly length: i32) {}

  /** A copy of the body. */
  get body(): Uint8Array {
    const b = new Uint8Array(this.length);
    memory.copy(b.dataStart, this.ptr, <usize>this.length);
    return b;
  }

  /** The body decoded as UTF-8. */
  text(): string {
    return String.UTF8.decodeUnsafe(this.ptr, <usize>this.length);
  }

  /** The message id assigned by the engine. */
  id(): string { return field(0); }
  /** The queue the message came from. */
  queue(): string { return field(1); }
  /** The content type, "" if none. */
  contentType(): string { return field(2); }
  /** The correlation id, "" if none. */
  correlationId(): string { return field(3); }
  /** The ordering key, "" if none. */
  orderingKey(): string { return field(4); }
  /** The delivery attempt, starting at 1. */
  attempt(): i32 { return sys_msg_attempt(); }
  /** When the message was first enqueued, Unix nanoseconds. */
  enqueuedAt(): i64 { return sys_msg_enqueued_at(); }

  /** The value of attribute key, or null if the message has none. */
  attr(key: string): string | null { return readString(ATTR, 0, key); }

  /** The message's per-message state: what a handler stored with setState
   * during this or an earlier delivery of the same message. Its error is
   * Err.NotFound when there is none, Err.Unsupported when the queue's engine
   * keeps none (only memory, disk and postgres do). */
  state(): Value { return readValue(STATE, null, null); }

  /** Replaces the message's state (at most 1 MiB), written through at once:
   * it survives a nack, a trap, a timeout and a crash of qrun, and the
   * engine deletes it when the message is acked or dead-lettered. Returns 0
   * or a negative Err code. */
  setState(value: ArrayBuffer): i32 {
    return sys_state_set(changetype<usize>(value), value.byteLength);
  }

  /** setState with a string, stored as UTF-8. */
  setStateText(value: string): i32 { return this.setState(String.UTF8.encode(value)); }

  /** Every attribute, sorted by key (two host calls per attribute). */
  attrs(): Map<string, string> {
    const m = new Map<string, string>();
    let k = readString(ATTR_KEY, 0, null);
    for (let i = 1; k !== null; i++) {
      const v = this.attr(k);
      m.set(k, v === null ? "" : v);
      k = readString(ATTR_KEY, i, null);
    }
    return m;
  }
}

function field(f: i32): string {
  const v = readString(FIELD, f, null);
  return v === null ? "" : v;
}

/** The value of key in the consumer's config map, or null if it is not set. */
export function config(key: string): string | null {
  return readString(CONFIG, 0, key);
}

/** Writes msg to qrun's log; the host adds consumer, queue, message id and attempt. */
export function log(level: Level, msg: string): void {
  const b = String.UTF8.encode(msg);
  sys_log(level, changetype<usize>(b), b.byteLength);
}

/** encodeAttrs writes attrs in the ABI's pair encoding. */
export function encodeAttrs(attrs: Map<string, string> | null): ArrayBuffer {
  if (attrs === null || attrs.size == 0) return new ArrayBuffer(0);
  const keys = attrs.keys();
  const parts = new Array<ArrayBuffer>();
  let size = 0;
  for (let i = 0; i < keys.length; i++) {
    const k = String.UTF8.encode(keys[i]);
    const v = String.UTF8.encode(attrs.get(keys[i]));
    parts.push(k);
    parts.push(v);
    size += 8 + k.byteLength + v.byteLength;
  }
  const out = new ArrayBuffer(size);
  let p = changetype<usize>(out);
  for (let i = 0; i < parts.length; i++) {
    const s = parts[i];
    store<u32>(p, s.byteLength);
    memory.copy(p + 4, changetype<usize>(s), s.byteLength);
    p += 4 + s.byteLength;
  }
  return out;
}

/**
 * Enqueues body with attrs (may be null) to queue, which must be in the
 * consumer's publish list. Returns 0 or a negative Err code.
 */
export function publish(queue: string, body: ArrayBuffer, attrs: Map<string, string> | null = null): i32 {
  const q = String.UTF8.encode(queue);
  const a = encodeAttrs(attrs);
  return sys_publish(
    changetype<usize>(q), q.byteLength,
    changetype<usize>(body), body.byteLength,
    changetype<usize>(a), a.byteLength);
}

/** publish with a string body, sent as UTF-8. */
export function publishText(queue: string, body: string, attrs: Map<string, string> | null = null): i32 {
  return publish(queue, String.UTF8.encode(body), attrs);
}

/**
 * A complete HTTP response (ABI.md section 4, "Outbound HTTP"). error is 0
 * when a response came (a 404 or a 503 is a response), otherwise a negative
 * Err code: Denied (not allowed), Timeout, Connect, TooLarge (over
 * max_response_size), Limit, Invalid, NoMessage; status is then 0.
 */
export class Response {
  constructor(readonly status: i32, readonly error: i32, readonly body: Uint8Array) {}

  /** The body decoded as UTF-8. */
  text(): string {
    return String.UTF8.decodeUnsafe(this.body.dataStart, <usize>this.body.length);
  }
}

/**
 * Sends a request (method "" is GET) and reads the whole response. The
 * consumer's http block decides where it may go.
 */
export function fetch(method: string, url: string, headers: Map<string, string> | null = null, body: ArrayBuffer | null = null): Response {
  const m = String.UTF8.encode(method.length == 0 ? "GET" : method);
  const u = String.UTF8.encode(url);
  const h = encodeAttrs(headers);
  const bp: usize = body === null ? 0 : changetype<usize>(body);
  const bl = body === null ? 0 : body.byteLength;
  const status = sys_http_request(changetype<usize>(m), m.byteLength, changetype<usize>(u), u.byteLength,
    changetype<usize>(h), h.byteLength, bp, bl);
  if (status < 0) return new Response(0, status, new Uint8Array(0));
  // The body is read from the response the host holds: not sent again.
  const b = readBytes(HTTP_BODY);
  if (b === null) return new Response(0, Err.NoMessage, new Uint8Array(0));
  return new Response(status, 0, b);
}

/** The value of header name of the last response (several values joined
 * with ", "), or null. */
export function header(name: string): string | null {
  return readString(HTTP_HEADER, 0, name);
}

/** daysFromCivil is the number of days from 1970-01-01 to y-m-d (Howard
 * Hinnant's algorithm). */
function daysFromCivil(year: i64, m: i64, d: i64): i64 {
  const y = m <= 2 ? year - 1 : year;
  const era = (y >= 0 ? y : y - 399) / 400;
  const yoe = y - era * 400;
  const doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

function digits(s: string): bool {
  if (s.length == 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/**
 * How long the last response asks the client to wait, in milliseconds: its
 * Retry-After, in seconds or as an HTTP date ("Sun, 06 Nov 1994 08:49:37
 * GMT", relative to now(); a past date is 0), when status is 429 or 503.
 * -1 when the response does not say.
 */
export function retryAfterMs(status: i32): i64 {
  if (status != 429 && status != 503) return -1;
  const raw = header("Retry-After");
  if (raw === null) return -1;
  const v = raw.trim();
  if (digits(v)) {
    if (v.length > 7) return 604800000;
    const secs = I64.parseInt(v);
    return (secs < 604800 ? secs : 604800) * 1000;
  }
  if (v.length != 29 || v.substring(25) != " GMT") return -1;
  const mi = "JanFebMarAprMayJunJulAugSepOctNovDec".indexOf(v.substring(8, 11));
  const d = v.substring(5, 7), y = v.substring(12, 16), hh = v.substring(17, 19), mm = v.substring(20, 22), ss = v.substring(23, 25);
  if (mi < 0 || mi % 3 != 0 || !digits(d) || !digits(y) || !digits(hh) || !digits(mm) || !digits(ss)) return -1;
  const t = daysFromCivil(I64.parseInt(y), <i64>(mi / 3 + 1), I64.parseInt(d)) * 86400 +
    I64.parseInt(hh) * 3600 + I64.parseInt(mm) * 60 + I64.parseInt(ss);
  const diff = t * 1000 - sys_now() / 1000000;
  return diff > 0 ? diff : 0;
}

/**
 * For a response worth retrying (429, 5xx): sets the retry delay from its
 * Retry-After when it has one and returns Nack, which counts an attempt, so
 * a receiver that never recovers still dead-letters the message. Call it
 * right after fetch, before another request.
 */
export function retryLater(status: i32): Verdict {
  const ms = retryAfterMs(status);
  if (ms >= 0) sys_set_delay(ms);
  return Verdict.Nack;
}

/** Delay before the current message is visible again after Nack or Requeue. */
export function setDelay(millis: i64): i32 { return sys_set_delay(millis); }

/**
 * Records why the current message is nacked or dead-lettered: with
 * Verdict.Nack or Verdict.DeadLetter the reason is logged with the verdict
 * and becomes the dead letter's reason, as given (what `qrun dlq show`
 * shows). Ignored for Ack and Requeue; a later call replaces it, "" clears
 * it, and qrun keeps at most 1024 bytes (of UTF-8). Returns 0, or
 * Err.NoMessage outside a handler call.
 */
export function setReason(reason: string): i32 {
  const b = String.UTF8.encode(reason);
  return sys_set_reason(changetype<usize>(b), b.byteLength);
}

/** Records reason (see setReason) and returns Verdict.DeadLetter. */
export function deadLetterWith(reason: string): Verdict {
  setReason(reason);
  return Verdict.DeadLetter;
}

/** Records reason (see setReason) and returns Verdict.Nack. */
export function nackWith(reason: string): Verdict {
  setReason(reason);
  return Verdict.Nack;
}

/** Extends the current delivery's lease to now + millis (a heartbeat). */
export function extendLease(millis: i64): i32 { return sys_extend_lease(millis); }

/** The host's wall clock, Unix nanoseconds. */
export function now(): i64 { return sys_now(); }

let handler: ((m: Message) => Verdict) | null = null;
let initFn: (() => bool) | null = null;

/** Registers the handler; call it once from the entry file's top level. */
export function handle(h: (m: Message) => Verdict): void {
  handler = h;
}

/** Registers a function run once per instance before its first message;
 * returning false refuses the instance. */
export function init(f: () => bool): void {
  initFn = f;
}

// ---- Exports (ABI.md section 2); the entry file re-exports these. ----

/** Version marker: this module speaks ABI v1. */
export function qrun_abi_v1(): void {}

/** Unmanaged memory the garbage collector never touches. */
export function qrun_alloc(size: i32): usize {
  return heap.alloc(<usize>max(size, 1));
}

/** Gives a qrun_alloc region back. */
export function qrun_free(ptr: usize, size: i32): void {
  heap.free(ptr);
}

/** Runs the init function, if any. */
export function qrun_init(): i32 {
  if (handler === null) {
    log(Level.Error, "no handler registered: call handle() from the entry file");
    return 1;
  }
  const f = initFn;
  if (f !== null && !f()) return 1;
  return 0;
}

// The one Message every delivery is handed: a new one per delivery cost a
// garbage-collected allocation, and with it the incremental collector's
// share, on every message (about a third of a trivial handler's time).
// Its fields are set in place because to the handler they are read-only.
const current = new Message(0, 0);

/** Calls the handler. For an empty body ptr is unspecified and never read. */
export function qrun_handle(ptr: usize, len: i32): i32 {
  const h = handler!;
  const at = changetype<usize>(current);
  store<usize>(at + offsetof<Message>("ptr"), ptr);
  store<i32>(at + offsetof<Message>("length"), len);
  return h(current);
}

/** Replaces AssemblyScript's env.abort import (--use abort=...): the reason
 * goes to qrun's log and the call traps, which the host counts as a nack. */
export function qrunAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  let s = "abort";
  if (message !== null) s += ": " + message;
  if (fileName !== null) s += " at " + fileName + ":" + line.toString() + ":" + column.toString();
  log(Level.Error, s);
  unreachable();
}
