//! The Zig guest SDK for qrun message handlers (ABI v1, abi/ABI.md), for
//! Zig 0.11, standard library only.
//!
//! The root file of a handler declares a `handle` function and re-exports
//! this module's panic handler; importing the SDK is what adds the exports
//! the host looks for (qrun_abi_v1, qrun_alloc, qrun_free, qrun_init,
//! qrun_handle):
//!
//!     const qrun = @import("qrun");
//!     pub const panic = qrun.panic;
//!     comptime { qrun.exportAbi(@This()); }
//!
//!     pub fn handle(m: *const qrun.Message) qrun.Verdict {
//!         qrun.log(.info, "hello");
//!         return .ack;
//!     }
//!
//! An optional `pub fn init() bool` in the root runs once per instance
//! (false refuses it). Build for wasm32-freestanding (no WASI needed):
//!
//!     zig build-lib -target wasm32-freestanding -dynamic -rdynamic -O ReleaseSmall \
//!         -fstrip --mod qrun::path/to/qrun.zig --deps qrun handler.zig
//!
//! An instance serves one message at a time and many over its life, so
//! globals persist between messages (as a cache: the host may replace an
//! instance between any two messages). Strings the SDK returns are allocated
//! with the allocator passed in; `allocator` (the wasm page allocator) is the
//! usual choice.
const std = @import("std");

/// The allocator handlers normally use.
pub const allocator = std.heap.wasm_allocator;

/// What to do with a message. Values outside the four named ones are bad
/// verdicts (a nack that replaces the instance); the enum is open so that a
/// newer host's verdicts and tests can be expressed.
pub const Verdict = enum(i32) {
    /// Done: the message is removed.
    ack = 0,
    /// A failure: retried with backoff, dead-lettered after max_attempts.
    nack = 1,
    /// Visible again after the setDelay delay (0 if none); not a failure.
    requeue = 2,
    /// To the dead-letter queue now: no retry can fix it.
    dead_letter = 3,
    _,
};

/// Log levels.
pub const Level = enum(i32) { debug = 0, info = 1, warn = 2, err = 3 };

/// Host errors, one per ABI error code.
pub const Error = error{
    /// -2: no such field, attribute, config key or index.
    NotFound,
    /// -3: queue not in the consumer's publish list, or URL not allowed by
    /// its http block (retrying won't help).
    Denied,
    /// -4: an argument the host rejected.
    Invalid,
    /// -5: a message function called outside a handler call.
    NoMessage,
    /// -6: the engine failed or refused; a later retry may succeed.
    Unavailable,
    /// -7: the message exceeds the target queue's size limit, or an HTTP
    /// response the consumer's max_response_size.
    TooLarge,
    /// -8: log line dropped.
    RateLimited,
    /// -9: an HTTP request ran out of time.
    Timeout,
    /// -10: an HTTP connection could not be made or failed.
    Connect,
    /// -11: the delivery already made the consumer's max_requests.
    Limit,
    /// -12: Store.cas found another version of the key.
    Conflict,
    /// -13: per-message state on an engine that keeps none.
    Unsupported,
    /// A code this SDK does not know.
    Unknown,
};

fn codeError(code: i32) Error {
    return switch (code) {
        -2 => error.NotFound,
        -3 => error.Denied,
        -4 => error.Invalid,
        -5 => error.NoMessage,
        -6 => error.Unavailable,
        -7 => error.TooLarge,
        -8 => error.RateLimited,
        -9 => error.Timeout,
        -10 => error.Connect,
        -11 => error.Limit,
        -12 => error.Conflict,
        -13 => error.Unsupported,
        else => error.Unknown,
    };
}

/// The raw ABI: host functions of module "qrun" (ABI.md section 4). A
/// null pointer is address 0, valid with length 0.
pub const sys = struct {
    pub extern "qrun" fn log(level: i32, ptr: ?[*]const u8, len: i32) i32;
    pub extern "qrun" fn msg_field(field: i32, buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn msg_attempt() i32;
    pub extern "qrun" fn msg_enqueued_at() i64;
    pub extern "qrun" fn msg_attr(key: ?[*]const u8, key_len: i32, buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn msg_attr_key(index: i32, buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn config_get(key: ?[*]const u8, key_len: i32, buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn publish(queue: ?[*]const u8, queue_len: i32, body: ?[*]const u8, body_len: i32, attrs: ?[*]const u8, attrs_len: i32) i32;
    pub extern "qrun" fn set_delay(millis: i64) i32;
    pub extern "qrun" fn extend_lease(millis: i64) i32;
    pub extern "qrun" fn now() i64;
    pub extern "qrun" fn set_reason(reason: ?[*]const u8, len: i32) i32;
    pub extern "qrun" fn http_request(method: ?[*]const u8, method_len: i32, url: ?[*]const u8, url_len: i32, headers: ?[*]const u8, headers_len: i32, body: ?[*]const u8, body_len: i32) i32;
    pub extern "qrun" fn http_response_header(name: ?[*]const u8, name_len: i32, buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn http_response_headers(buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn http_response_body(buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn kv_get(store: ?[*]const u8, store_len: i32, key: ?[*]const u8, key_len: i32, buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn kv_version(store: ?[*]const u8, store_len: i32, key: ?[*]const u8, key_len: i32) i64;
    pub extern "qrun" fn kv_set(store: ?[*]const u8, store_len: i32, key: ?[*]const u8, key_len: i32, val: ?[*]const u8, val_len: i32, ttl_ms: i64) i32;
    pub extern "qrun" fn kv_cas(store: ?[*]const u8, store_len: i32, key: ?[*]const u8, key_len: i32, version: i64, val: ?[*]const u8, val_len: i32, ttl_ms: i64) i32;
    pub extern "qrun" fn kv_delete(store: ?[*]const u8, store_len: i32, key: ?[*]const u8, key_len: i32) i32;
    pub extern "qrun" fn kv_incr(store: ?[*]const u8, store_len: i32, key: ?[*]const u8, key_len: i32, delta: i64, result: *i64) i32;
    pub extern "qrun" fn kv_add(store: ?[*]const u8, store_len: i32, key: ?[*]const u8, key_len: i32, delta: i64) i32;
    pub extern "qrun" fn state_get(buf: [*]u8, cap: i32) i32;
    pub extern "qrun" fn state_set(value: ?[*]const u8, len: i32) i32;
};

fn len32(s: []const u8) i32 {
    return @intCast(s.len);
}

/// ptr passes a slice's address, or 0 for an empty slice: Zig gives those
/// an undefined address (0xffffffff from the allocator), which the host
/// would rightly reject as outside memory.
fn ptr(s: []const u8) ?[*]const u8 {
    if (s.len == 0) return null;
    return s.ptr;
}

const Reader = struct {
    kind: enum { field, attr, attr_key, config, http_header, http_body, kv_get, state },
    n: i32 = 0,
    key: []const u8 = "",
    store: []const u8 = "",

    fn call(r: Reader, buf: []u8) i32 {
        const p = buf.ptr;
        const c = len32(buf);
        return switch (r.kind) {
            .field => sys.msg_field(r.n, p, c),
            .attr => sys.msg_attr(ptr(r.key), len32(r.key), p, c),
            .attr_key => sys.msg_attr_key(r.n, p, c),
            .config => sys.config_get(ptr(r.key), len32(r.key), p, c),
            .http_header => sys.http_response_header(ptr(r.key), len32(r.key), p, c),
            .http_body => sys.http_response_body(p, c),
            .kv_get => sys.kv_get(ptr(r.store), len32(r.store), ptr(r.key), len32(r.key), p, c),
            .state => sys.state_get(p, c),
        };
    }
};

/// read runs a host call that writes a value into a buffer. The ABI writes
/// nothing when the value does not fit and returns its full length, so the
/// call is repeated with a buffer that size; a loop covers a value that
/// changed in between. The caller owns the result.
fn read(a: std.mem.Allocator, r: Reader) (Error || std.mem.Allocator.Error)![]u8 {
    var buf = try a.alloc(u8, 128);
    while (true) {
        const n = r.call(buf);
        if (n < 0) {
            a.free(buf);
            return codeError(n);
        }
        const size: usize = @intCast(n);
        if (size <= buf.len) {
            // shrink in place or copy: either way the caller frees exactly it.
            if (a.resize(buf, size)) return buf[0..size];
            const out = try a.dupe(u8, buf[0..size]);
            a.free(buf);
            return out;
        }
        a.free(buf);
        buf = try a.alloc(u8, size);
    }
}

/// Like read, but null for NotFound.
fn readOptional(a: std.mem.Allocator, r: Reader) (Error || std.mem.Allocator.Error)!?[]u8 {
    return read(a, r) catch |e| switch (e) {
        error.NotFound => null,
        else => e,
    };
}

/// The delivery being handled; valid only during the handler call: body is
/// the host's buffer, reused for the next message.
pub const Message = struct {
    body: []const u8,

    /// Message fields.
    pub const Field = enum(i32) { id = 0, queue = 1, content_type = 2, correlation_id = 3, ordering_key = 4 };

    /// A field of the message ("" when empty); the caller frees it.
    pub fn field(_: *const Message, a: std.mem.Allocator, f: Field) ![]u8 {
        return read(a, .{ .kind = .field, .n = @intFromEnum(f) });
    }

    /// The message id; the caller frees it.
    pub fn id(m: *const Message, a: std.mem.Allocator) ![]u8 {
        return m.field(a, .id);
    }

    /// The delivery attempt, starting at 1.
    pub fn attempt(_: *const Message) u32 {
        const n = sys.msg_attempt();
        return if (n < 0) 0 else @intCast(n);
    }

    /// When the message was first enqueued, Unix nanoseconds.
    pub fn enqueuedAt(_: *const Message) i64 {
        return sys.msg_enqueued_at();
    }

    /// The value of attribute key, or null; the caller frees it.
    pub fn attr(_: *const Message, a: std.mem.Allocator, key: []const u8) !?[]u8 {
        return readOptional(a, .{ .kind = .attr, .key = key });
    }

    /// The name of the attribute at index in sorted order, or null past the
    /// last; the caller frees it.
    pub fn attrKey(_: *const Message, a: std.mem.Allocator, index: i32) !?[]u8 {
        return readOptional(a, .{ .kind = .attr_key, .n = index });
    }

    /// The message's per-message state: what a handler stored with setState
    /// during this or an earlier delivery of the same message, or null; the
    /// caller frees it. error.Unsupported when the queue's engine keeps none
    /// (only memory, disk and postgres do).
    pub fn state(_: *const Message, a: std.mem.Allocator) !?[]u8 {
        return readOptional(a, .{ .kind = .state });
    }

    /// Replaces the message's state (at most 1 MiB). It is written through
    /// at once, so it survives a nack, a trap, a timeout and a crash of qrun,
    /// and the engine deletes it when the message is acked or dead-lettered.
    pub fn setState(_: *const Message, value: []const u8) Error!void {
        const r = sys.state_set(ptr(value), len32(value));
        if (r < 0) return codeError(r);
    }

    /// Every attribute, sorted by key; free the result with freeAttrs. Two
    /// host calls per attribute: prefer attr for keys you know.
    pub fn attrs(m: *const Message, a: std.mem.Allocator) ![]Attr {
        var list = std.ArrayList(Attr).init(a);
        errdefer freeAttrs(a, list.items);
        var i: i32 = 0;
        while (try m.attrKey(a, i)) |key| : (i += 1) {
            const value = (try m.attr(a, key)) orelse try a.alloc(u8, 0);
            list.append(.{ .key = key, .value = value }) catch |e| {
                a.free(key);
                a.free(value);
                return e;
            };
        }
        return list.toOwnedSlice();
    }
};

/// Frees what Message.attrs returned.
pub fn freeAttrs(a: std.mem.Allocator, attrs: []const Attr) void {
    for (attrs) |at| {
        a.free(at.key);
        a.free(at.value);
    }
    a.free(attrs);
}

/// A key-value store the consumer is granted (its kv list). On an engine with
/// transactions, when the store lives in the same engine as the consumer's
/// queue, writes happen together with the ack or not at all, and reads see
/// the delivery's own writes (docs/state.md). error.Denied for a store not
/// granted, error.Invalid for a key that is empty or over 512 bytes,
/// error.NoMessage outside a handler call:
///
///     const n = try qrun.store("counters").incr("orders", 1);
pub const Store = struct {
    name: []const u8,

    /// The value of key, or null when absent (or expired); the caller frees it.
    pub fn get(s: Store, a: std.mem.Allocator, key: []const u8) !?[]u8 {
        return readOptional(a, .{ .kind = .kv_get, .store = s.name, .key = key });
    }

    /// The key's version as this delivery sees it, 0 when absent: what cas
    /// compares against.
    pub fn version(s: Store, key: []const u8) Error!u64 {
        const v = sys.kv_version(ptr(s.name), len32(s.name), ptr(key), len32(key));
        if (v < 0) return codeError(@intCast(v));
        return @intCast(v);
    }

    /// Stores value under key, expiring ttl_ms later (0: never; negative:
    /// error.Invalid). error.TooLarge over the store's max_value_size.
    pub fn set(s: Store, key: []const u8, value: []const u8, ttl_ms: i64) Error!void {
        const r = sys.kv_set(ptr(s.name), len32(s.name), ptr(key), len32(key), ptr(value), len32(value), ttl_ms);
        if (r < 0) return codeError(r);
    }

    /// set only if the key's version is still ver (0: only if absent);
    /// error.Conflict otherwise, and nothing is written.
    pub fn cas(s: Store, key: []const u8, ver: u64, value: []const u8, ttl_ms: i64) Error!void {
        const r = sys.kv_cas(ptr(s.name), len32(s.name), ptr(key), len32(key), @bitCast(ver), ptr(value), len32(value), ttl_ms);
        if (r < 0) return codeError(r);
    }

    /// Removes key; removing an absent key is not an error.
    pub fn delete(s: Store, key: []const u8) Error!void {
        const r = sys.kv_delete(ptr(s.name), len32(s.name), ptr(key), len32(key));
        if (r < 0) return codeError(r);
    }

    /// Adds delta to the decimal integer under key (absent counts as 0),
    /// stores the sum as decimal text and returns it; error.Invalid when the
    /// value is not a decimal i64 or the sum overflows.
    pub fn incr(s: Store, key: []const u8, delta: i64) Error!i64 {
        var n: i64 = 0;
        const r = sys.kv_incr(ptr(s.name), len32(s.name), ptr(key), len32(key), delta, &n);
        if (r < 0) return codeError(r);
        return n;
    }

    /// Adds delta to the decimal integer under key (absent counts as 0)
    /// without returning the sum and without reading the key: the counter a
    /// handler does not need to read (incr when it needs the sum). On a
    /// transactional store (same engine as the queue: memory, disk,
    /// postgres) the add is held and applied at commit to whatever value the
    /// key has then, so deliveries adding to one key never conflict and the
    /// call costs no round trip to the store; if at commit the value is not a
    /// decimal i64 or the sum overflows, nothing of the delivery is applied
    /// and the delivery fails. A later read of the key in the same delivery
    /// sees the value with its adds applied. error.Invalid when the value is
    /// known at the call (on an immediate store always, on a transactional
    /// one once the delivery read or wrote the key) and is not a decimal i64
    /// or the sum overflows, error.TooLarge when the sum would exceed the
    /// store's max_value_size.
    pub fn add(s: Store, key: []const u8, delta: i64) Error!void {
        const r = sys.kv_add(ptr(s.name), len32(s.name), ptr(key), len32(key), delta);
        if (r < 0) return codeError(r);
    }
};

/// The store called name; no host call is made until one of its methods.
pub fn store(name: []const u8) Store {
    return .{ .name = name };
}

/// The value of key in the consumer's config map, or null; the caller frees
/// it. Works in init too.
pub fn config(a: std.mem.Allocator, key: []const u8) !?[]u8 {
    return readOptional(a, .{ .kind = .config, .key = key });
}

/// Writes msg to qrun's log; the host adds consumer, queue, message id and
/// attempt. Dropped lines (rate limit) are counted by the host.
pub fn log(level: Level, msg: []const u8) void {
    _ = sys.log(@intFromEnum(level), ptr(msg), len32(msg));
}

/// log with std.fmt formatting; lines are cut at 1 KiB.
pub fn logf(level: Level, comptime fmt: []const u8, args: anytype) void {
    var buf: [1024]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, fmt, args) catch buf[0..];
    log(level, line);
}

/// An attribute for publish.
pub const Attr = struct { key: []const u8, value: []const u8 };

/// encode writes attrs in the ABI's pair encoding; the caller frees it.
fn encode(a: std.mem.Allocator, attrs: []const Attr) ![]u8 {
    var size: usize = 0;
    for (attrs) |at| size += 8 + at.key.len + at.value.len;
    const enc = try a.alloc(u8, size);
    var p: usize = 0;
    for (attrs) |at| {
        for ([_][]const u8{ at.key, at.value }) |s| {
            std.mem.writeIntLittle(u32, enc[p..][0..4], @as(u32, @intCast(s.len)));
            @memcpy(enc[p + 4 ..][0..s.len], s);
            p += 4 + s.len;
        }
    }
    return enc;
}

/// Enqueues body with attrs to queue, which must be in the consumer's
/// publish list. Not transactional: downstream must tolerate duplicates.
pub fn publish(queue: []const u8, body: []const u8, attrs: []const Attr) !void {
    const enc = try encode(allocator, attrs);
    defer allocator.free(enc);
    const r = sys.publish(ptr(queue), len32(queue), ptr(body), len32(body), ptr(enc), len32(enc));
    if (r < 0) return codeError(r);
}

/// An outbound HTTP request (ABI.md section 4, "Outbound HTTP"); the
/// consumer's http block decides where it may go.
pub const Request = struct {
    method: []const u8 = "GET",
    url: []const u8,
    /// Headers, one pair each; a name may repeat.
    headers: []const Attr = &.{},
    body: []const u8 = "",
};

/// A complete response; free it with deinit. A 404 or a 503 is a
/// Response, not an error.
pub const Response = struct {
    status: i32,
    body: []u8,

    pub fn deinit(r: *Response, a: std.mem.Allocator) void {
        a.free(r.body);
        r.body = &.{};
    }
};

/// Sends req and reads the whole response; the caller frees it with
/// Response.deinit. Errors: Denied (not allowed), Timeout, Connect,
/// TooLarge (response over max_response_size), Limit, Invalid, NoMessage.
pub fn fetch(a: std.mem.Allocator, req: Request) !Response {
    const enc = try encode(a, req.headers);
    defer a.free(enc);
    const method = if (req.method.len == 0) "GET" else req.method;
    const status = sys.http_request(ptr(method), len32(method), ptr(req.url), len32(req.url), ptr(enc), len32(enc), ptr(req.body), len32(req.body));
    if (status < 0) return codeError(status);
    // The body is read from the response the host holds: not sent again.
    const body = try read(a, .{ .kind = .http_body });
    return .{ .status = status, .body = body };
}

/// The value of header name of the last response (several values joined
/// with ", "), or null; the caller frees it.
pub fn header(a: std.mem.Allocator, name: []const u8) !?[]u8 {
    return readOptional(a, .{ .kind = .http_header, .key = name });
}

/// daysFromCivil is the number of days from 1970-01-01 to y-m-d (Howard
/// Hinnant's algorithm).
fn daysFromCivil(year: i64, m: i64, d: i64) i64 {
    const y = if (m <= 2) year - 1 else year;
    const era = @divFloor(y, 400);
    const yoe = y - era * 400;
    const mp = if (m > 2) m - 3 else m + 9;
    const doy = @divFloor(153 * mp + 2, 5) + d - 1;
    const doe = yoe * 365 + @divFloor(yoe, 4) - @divFloor(yoe, 100) + doy;
    return era * 146097 + doe - 719468;
}

/// How long the last response asks the client to wait, in milliseconds:
/// its Retry-After, in seconds or as an HTTP date ("Sun, 06 Nov 1994
/// 08:49:37 GMT", relative to now; a past date is 0), when status is 429
/// or 503. null when the response does not say.
pub fn retryAfterMs(status: i32) ?i64 {
    if (status != 429 and status != 503) return null;
    const v = (header(allocator, "Retry-After") catch return null) orelse return null;
    defer allocator.free(v);
    const t = std.mem.trim(u8, v, " ");
    if (std.fmt.parseInt(i64, t, 10)) |secs| {
        if (secs < 0) return null;
        return @min(secs, 604800) * 1000;
    } else |_| {}
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    if (t.len != 29 or !std.mem.eql(u8, t[25..], " GMT")) return null;
    const months = "JanFebMarAprMayJunJulAugSepOctNovDec";
    const mi = std.mem.indexOf(u8, months, t[8..11]) orelse return null;
    if (mi % 3 != 0) return null;
    const d = std.fmt.parseInt(i64, t[5..7], 10) catch return null;
    const y = std.fmt.parseInt(i64, t[12..16], 10) catch return null;
    const hh = std.fmt.parseInt(i64, t[17..19], 10) catch return null;
    const mm = std.fmt.parseInt(i64, t[20..22], 10) catch return null;
    const ss = std.fmt.parseInt(i64, t[23..25], 10) catch return null;
    const secs = daysFromCivil(y, @as(i64, @intCast(mi / 3)) + 1, d) * 86400 + hh * 3600 + mm * 60 + ss;
    return @max(secs * 1000 - @divFloor(now(), 1000000), 0);
}

/// For a response worth retrying (429, 5xx): sets the retry delay from its
/// Retry-After when it has one and returns nack, which counts an attempt,
/// so a receiver that never recovers still dead-letters the message. Call
/// it right after fetch, before another request.
pub fn retryLater(status: i32) Verdict {
    if (retryAfterMs(status)) |ms| setDelay(ms) catch {};
    return .nack;
}

/// Delay before the current message is visible again after nack or requeue.
pub fn setDelay(millis: i64) Error!void {
    const r = sys.set_delay(millis);
    if (r < 0) return codeError(r);
}

/// The most of a reason, in bytes, that qrun keeps; setReason's text is cut
/// at a UTF-8 boundary beyond it.
pub const max_reason = 1024;

/// Records why the current message is nacked or dead-lettered: with a nack
/// or dead_letter verdict the reason is logged with the verdict and becomes
/// the dead letter's reason, as given (what `qrun dlq show` shows). Ignored
/// for ack and requeue; a later call replaces it, "" clears it.
/// error.Invalid for text that is not UTF-8, error.NoMessage outside a
/// handler call.
pub fn setReason(reason: []const u8) Error!void {
    const r = sys.set_reason(ptr(reason), len32(reason));
    if (r < 0) return codeError(r);
}

/// Records reason (see setReason) and returns .dead_letter:
/// `return qrun.deadLetterWith("webhook: 404 Not Found");`
pub fn deadLetterWith(reason: []const u8) Verdict {
    setReason(reason) catch {};
    return .dead_letter;
}

/// Records reason (see setReason) and returns .nack.
pub fn nackWith(reason: []const u8) Verdict {
    setReason(reason) catch {};
    return .nack;
}

/// Extends the current delivery's lease to now + millis (a heartbeat).
pub fn extendLease(millis: i64) Error!void {
    const r = sys.extend_lease(millis);
    if (r < 0) return codeError(r);
}

/// The host's wall clock, Unix nanoseconds.
pub fn now() i64 {
    return sys.now();
}

/// A panic handler that logs the message and traps (the host counts the
/// trap as a nack and replaces the instance). Re-export it from the root:
/// `pub const panic = qrun.panic;`.
pub fn panic(msg: []const u8, _: ?*std.builtin.StackTrace, _: ?usize) noreturn {
    log(.err, msg);
    @trap();
}

/// Exports the ABI's functions around root's `handle` (and `init`, if
/// declared): call it as `comptime { qrun.exportAbi(@This()); }` in the root.
pub fn exportAbi(comptime root: type) void {
    const E = struct {
        fn abiV1() callconv(.C) void {}

        fn alloc(size: i32) callconv(.C) ?[*]u8 {
            // The host never asks for 0, but 0 would read as out of memory.
            const n: usize = if (size > 0) @intCast(size) else 1;
            const b = allocator.alloc(u8, n) catch return null;
            return b.ptr;
        }

        fn free(region: [*]u8, size: i32) callconv(.C) void {
            const n: usize = if (size > 0) @intCast(size) else 1;
            allocator.free(region[0..n]);
        }

        fn init() callconv(.C) i32 {
            if (@hasDecl(root, "init")) return if (root.init()) 0 else 1;
            return 0;
        }

        fn handle(body_ptr: [*]const u8, len: i32) callconv(.C) i32 {
            // For an empty body the ABI leaves the pointer unspecified: not read.
            const body: []const u8 = if (len > 0) body_ptr[0..@intCast(len)] else &[_]u8{};
            const m = Message{ .body = body };
            return @intFromEnum(root.handle(&m));
        }
    };
    @export(E.abiV1, .{ .name = "qrun_abi_v1" });
    @export(E.alloc, .{ .name = "qrun_alloc" });
    @export(E.free, .{ .name = "qrun_free" });
    @export(E.init, .{ .name = "qrun_init" });
    @export(E.handle, .{ .name = "qrun_handle" });
}
