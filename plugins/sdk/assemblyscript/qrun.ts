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

function call(kind: i32, n: i32, key: ArrayBuffer | null, buf: usize, cap: i32): i32 {
  const kp: usize = key === null ? 0 : changetype<usize>(key);
  const kl = key === null ? 0 : key.byteLength;
  if (kind == FIELD) return sys_msg_field(n, buf, cap);
  if (kind == ATTR) return sys_msg_attr(kp, kl, buf, cap);
  if (kind == ATTR_KEY) return sys_msg_attr_key(n, buf, cap);
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

/** The delivery being handled; valid only during the handler call. */
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

/** Delay before the current message is visible again after Nack or Requeue. */
export function setDelay(millis: i64): i32 { return sys_set_delay(millis); }

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

/** Calls the handler. For an empty body ptr is unspecified and never read. */
export function qrun_handle(ptr: usize, len: i32): i32 {
  const h = handler!;
  return h(new Message(ptr, len));
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
