//! Guest SDK for qrun message handlers written in Rust.
//!
//! qrun hands every delivery to a WebAssembly module through a small ABI
//! (`abi/ABI.md`). This crate hides that ABI: a handler is a plain function
//! from a [`Message`] to a [`Verdict`], registered with [`handler!`], which
//! generates the exports the host looks for (`qrun_abi_v1`, `qrun_alloc`,
//! `qrun_free`, `qrun_init`, `qrun_handle`).
//!
//! ```ignore
//! fn handle(m: &qrun::Message) -> qrun::Verdict {
//!     qrun::info(&format!("got {} bytes", m.body.len()));
//!     qrun::Verdict::Ack
//! }
//! qrun::handler!(handle);
//! ```
//!
//! Build a `cdylib` crate for `wasm32-wasi` with Debian's Rust 1.63 (no
//! crates besides this one, so it builds offline):
//!
//! ```text
//! RUSTC=/usr/bin/rustc /usr/bin/cargo build --release --target wasm32-wasi
//! ```
//!
//! wasm32-wasi rather than wasm32-unknown-unknown because a panic message
//! then reaches qrun's log through stderr; a panic aborts the call, which
//! the host counts as a nack and answers by replacing the instance.
//!
//! An instance serves one message at a time and many over its life, so
//! `static` state (a `thread_local!` `RefCell`, say) persists between
//! messages; the host may discard an instance between any two messages, so
//! such state can only be a cache.
//!
//! Outside wasm32 the crate still compiles (host functions answer as a host
//! with no message and a failed engine would), so handler logic can be unit
//! tested with `cargo test` on the build machine.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to do with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Done: the message is removed.
    Ack,
    /// A failure: retried after the retry delay, dead-lettered once it
    /// reached the queue's max_attempts.
    Nack,
    /// Visible again after the delay set with [`set_delay`] (0 if none);
    /// no failure is counted.
    Requeue,
    /// Moved to the dead-letter queue now: no retry can fix it.
    DeadLetter,
    /// A raw verdict code, for verdicts a newer host may add and for tests:
    /// any value outside 0..=3 counts as a failure (nack) and replaces the
    /// instance.
    Code(i32),
}

impl Verdict {
    /// The ABI's number for the verdict.
    pub fn code(self) -> i32 {
        match self {
            Verdict::Ack => 0,
            Verdict::Nack => 1,
            Verdict::Requeue => 2,
            Verdict::DeadLetter => 3,
            Verdict::Code(c) => c,
        }
    }
}

/// A host function's error, one variant per ABI error code, so that a
/// handler can tell whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// -2: no such field, attribute, config key or index.
    NotFound,
    /// -3: publish to a queue not in the consumer's `publish` list, or a
    /// request to a URL its `http` block does not allow; a configuration
    /// mistake that retrying does not fix.
    Denied,
    /// -4: an argument the host rejected (negative duration, bad encoding).
    Invalid,
    /// -5: a message function called outside a handler call.
    NoMessage,
    /// -6: the engine failed or refused; a later retry may succeed.
    Unavailable,
    /// -7: the message exceeds the target queue's size limit, or an HTTP
    /// response the consumer's `max_response_size`.
    TooLarge,
    /// -8: a log line dropped by the rate limit.
    RateLimited,
    /// -9: an HTTP request ran out of time; a later retry may succeed.
    Timeout,
    /// -10: an HTTP connection could not be made or failed; a later retry
    /// may succeed.
    Connect,
    /// -11: the delivery already made the consumer's `max_requests`.
    Limit,
    /// -12: [`Store::compare_and_set`] found another version of the key.
    Conflict,
    /// -13: per-message state on an engine that keeps none.
    Unsupported,
    /// A code this SDK does not know (from a newer host).
    Other(i32),
}

impl Error {
    /// Maps a negative ABI result to an error.
    pub fn from_code(code: i32) -> Error {
        match code {
            -2 => Error::NotFound,
            -3 => Error::Denied,
            -4 => Error::Invalid,
            -5 => Error::NoMessage,
            -6 => Error::Unavailable,
            -7 => Error::TooLarge,
            -8 => Error::RateLimited,
            -9 => Error::Timeout,
            -10 => Error::Connect,
            -11 => Error::Limit,
            -12 => Error::Conflict,
            -13 => Error::Unsupported,
            c => Error::Other(c),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("qrun: not found"),
            Error::Denied => f.write_str("qrun: denied by the consumer's configuration"),
            Error::Invalid => f.write_str("qrun: invalid argument"),
            Error::NoMessage => f.write_str("qrun: no current message"),
            Error::Unavailable => f.write_str("qrun: unavailable: the engine failed or refused"),
            Error::TooLarge => f.write_str("qrun: too large"),
            Error::RateLimited => f.write_str("qrun: rate limited"),
            Error::Timeout => f.write_str("qrun: timed out"),
            Error::Connect => f.write_str("qrun: connection failed"),
            Error::Limit => f.write_str("qrun: request limit of this delivery reached"),
            Error::Conflict => f.write_str("qrun: version conflict"),
            Error::Unsupported => f.write_str("qrun: not supported by the engine"),
            Error::Other(c) => write!(f, "qrun: host error {}", c),
        }
    }
}

impl std::error::Error for Error {}

fn check(code: i32) -> Result<(), Error> {
    if code < 0 {
        Err(Error::from_code(code))
    } else {
        Ok(())
    }
}

/// The raw host functions of module `qrun` (ABI.md section 4).
#[cfg(target_arch = "wasm32")]
mod sys {
    #[link(wasm_import_module = "qrun")]
    extern "C" {
        pub fn log(level: i32, ptr: *const u8, len: i32) -> i32;
        pub fn msg_field(field: i32, buf: *mut u8, cap: i32) -> i32;
        pub fn msg_attempt() -> i32;
        pub fn msg_enqueued_at() -> i64;
        pub fn msg_attr(key: *const u8, key_len: i32, buf: *mut u8, cap: i32) -> i32;
        pub fn msg_attr_key(index: i32, buf: *mut u8, cap: i32) -> i32;
        pub fn config_get(key: *const u8, key_len: i32, buf: *mut u8, cap: i32) -> i32;
        pub fn publish(
            queue: *const u8,
            queue_len: i32,
            body: *const u8,
            body_len: i32,
            attrs: *const u8,
            attrs_len: i32,
        ) -> i32;
        pub fn set_delay(millis: i64) -> i32;
        pub fn extend_lease(millis: i64) -> i32;
        pub fn now() -> i64;
        pub fn set_reason(ptr: *const u8, len: i32) -> i32;
        pub fn http_request(
            method: *const u8,
            method_len: i32,
            url: *const u8,
            url_len: i32,
            headers: *const u8,
            headers_len: i32,
            body: *const u8,
            body_len: i32,
        ) -> i32;
        pub fn http_response_headers(buf: *mut u8, cap: i32) -> i32;
        pub fn http_response_body(buf: *mut u8, cap: i32) -> i32;
        pub fn kv_get(store: *const u8, store_len: i32, key: *const u8, key_len: i32, buf: *mut u8, cap: i32) -> i32;
        pub fn kv_version(store: *const u8, store_len: i32, key: *const u8, key_len: i32) -> i64;
        pub fn kv_set(
            store: *const u8,
            store_len: i32,
            key: *const u8,
            key_len: i32,
            val: *const u8,
            val_len: i32,
            ttl_ms: i64,
        ) -> i32;
        pub fn kv_cas(
            store: *const u8,
            store_len: i32,
            key: *const u8,
            key_len: i32,
            version: i64,
            val: *const u8,
            val_len: i32,
            ttl_ms: i64,
        ) -> i32;
        pub fn kv_delete(store: *const u8, store_len: i32, key: *const u8, key_len: i32) -> i32;
        pub fn kv_incr(store: *const u8, store_len: i32, key: *const u8, key_len: i32, delta: i64, result: *mut i64) -> i32;
        pub fn kv_add(store: *const u8, store_len: i32, key: *const u8, key_len: i32, delta: i64) -> i32;
        pub fn state_get(buf: *mut u8, cap: i32) -> i32;
        pub fn state_set(ptr: *const u8, len: i32) -> i32;
    }
}

/// Off wasm32 there is no host: every call answers as a host with no current
/// message, no config and a failed engine, so handler code under `cargo
/// test` takes its error paths instead of failing to link.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc)]
mod sys {
    pub unsafe fn log(_: i32, _: *const u8, _: i32) -> i32 {
        0
    }
    pub unsafe fn msg_field(_: i32, _: *mut u8, _: i32) -> i32 {
        -5
    }
    pub unsafe fn msg_attempt() -> i32 {
        -5
    }
    pub unsafe fn msg_enqueued_at() -> i64 {
        0
    }
    pub unsafe fn msg_attr(_: *const u8, _: i32, _: *mut u8, _: i32) -> i32 {
        -5
    }
    pub unsafe fn msg_attr_key(_: i32, _: *mut u8, _: i32) -> i32 {
        -5
    }
    pub unsafe fn config_get(_: *const u8, _: i32, _: *mut u8, _: i32) -> i32 {
        -2
    }
    pub unsafe fn publish(_: *const u8, _: i32, _: *const u8, _: i32, _: *const u8, _: i32) -> i32 {
        -6
    }
    pub unsafe fn set_delay(_: i64) -> i32 {
        -5
    }
    pub unsafe fn extend_lease(_: i64) -> i32 {
        -5
    }
    pub unsafe fn set_reason(_: *const u8, _: i32) -> i32 {
        -5
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn http_request(
        _: *const u8,
        _: i32,
        _: *const u8,
        _: i32,
        _: *const u8,
        _: i32,
        _: *const u8,
        _: i32,
    ) -> i32 {
        -5
    }
    pub unsafe fn http_response_headers(_: *mut u8, _: i32) -> i32 {
        -2
    }
    pub unsafe fn http_response_body(_: *mut u8, _: i32) -> i32 {
        -2
    }
    pub unsafe fn kv_get(_: *const u8, _: i32, _: *const u8, _: i32, _: *mut u8, _: i32) -> i32 {
        -5
    }
    pub unsafe fn kv_version(_: *const u8, _: i32, _: *const u8, _: i32) -> i64 {
        -5
    }
    pub unsafe fn kv_set(_: *const u8, _: i32, _: *const u8, _: i32, _: *const u8, _: i32, _: i64) -> i32 {
        -5
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kv_cas(_: *const u8, _: i32, _: *const u8, _: i32, _: i64, _: *const u8, _: i32, _: i64) -> i32 {
        -5
    }
    pub unsafe fn kv_delete(_: *const u8, _: i32, _: *const u8, _: i32) -> i32 {
        -5
    }
    pub unsafe fn kv_incr(_: *const u8, _: i32, _: *const u8, _: i32, _: i64, _: *mut i64) -> i32 {
        -5
    }
    pub unsafe fn kv_add(_: *const u8, _: i32, _: *const u8, _: i32, _: i64) -> i32 {
        -5
    }
    pub unsafe fn state_get(_: *mut u8, _: i32) -> i32 {
        -5
    }
    pub unsafe fn state_set(_: *const u8, _: i32) -> i32 {
        -5
    }
    pub unsafe fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// Runs a host call that writes a value into `(buf, cap)`. The ABI writes
/// nothing when the value does not fit and returns its full length instead,
/// so the call is repeated with a buffer that size; a loop, not one retry,
/// covers a value that changed in between.
fn read(mut call: impl FnMut(*mut u8, i32) -> i32) -> Result<Vec<u8>, Error> {
    let mut buf: Vec<u8> = vec![0; 128];
    loop {
        let n = call(buf.as_mut_ptr(), buf.len() as i32);
        if n < 0 {
            return Err(Error::from_code(n));
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf = vec![0; n];
    }
}

fn read_string(call: impl FnMut(*mut u8, i32) -> i32) -> Result<String, Error> {
    read(call).map(|b| {
        String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    })
}

/// The delivery being handled. It lives only for the handler call: `body`
/// points into memory the host reuses for the next message.
pub struct Message<'a> {
    /// The payload; empty for an empty body.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// The message's per-message state: what a handler stored with
    /// [`Message::set_state`] during this or an earlier delivery of the same
    /// message, or `None`. [`Error::Unsupported`] when the queue's engine
    /// keeps none (only memory, disk and postgres do).
    pub fn state(&self) -> Result<Option<Vec<u8>>, Error> {
        match read(|buf, cap| unsafe { sys::state_get(buf, cap) }) {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the message's state (at most 1 MiB). It is written through
    /// at once, so it survives a nack, a trap, a timeout and a crash of qrun,
    /// and the engine deletes it when the message is acked or dead-lettered:
    /// the place for a multi-step handler's progress.
    pub fn set_state(&self, value: impl AsRef<[u8]>) -> Result<(), Error> {
        let v = value.as_ref();
        check(unsafe { sys::state_set(v.as_ptr(), v.len() as i32) })
    }

    fn field(&self, field: i32) -> String {
        read_string(|buf, cap| unsafe { sys::msg_field(field, buf, cap) }).unwrap_or_default()
    }

    /// The message id assigned by the engine.
    pub fn id(&self) -> String {
        self.field(0)
    }

    /// The queue the message was received from.
    pub fn queue(&self) -> String {
        self.field(1)
    }

    /// The content type, empty if none.
    pub fn content_type(&self) -> String {
        self.field(2)
    }

    /// The correlation id, empty if none.
    pub fn correlation_id(&self) -> String {
        self.field(3)
    }

    /// The ordering key, empty if none.
    pub fn ordering_key(&self) -> String {
        self.field(4)
    }

    /// The delivery attempt, starting at 1.
    pub fn attempt(&self) -> u32 {
        let n = unsafe { sys::msg_attempt() };
        if n < 0 {
            0
        } else {
            n as u32
        }
    }

    /// When the message was first enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        let ns = unsafe { sys::msg_enqueued_at() };
        UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
    }

    /// The value of attribute `key`, if the message has it.
    pub fn attr(&self, key: &str) -> Option<String> {
        read_string(|buf, cap| unsafe { sys::msg_attr(key.as_ptr(), key.len() as i32, buf, cap) })
            .ok()
    }

    /// Every attribute, sorted by key. Two host calls per attribute: prefer
    /// [`Message::attr`] for keys you know.
    pub fn attrs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for i in 0.. {
            let key = match read_string(|buf, cap| unsafe { sys::msg_attr_key(i, buf, cap) }) {
                Ok(k) => k,
                Err(_) => break,
            };
            let value = self.attr(&key).unwrap_or_default();
            out.push((key, value));
        }
        out
    }
}

/// A log severity; the values are the ABI's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Debug.
    Debug = 0,
    /// Info.
    Info = 1,
    /// Warn.
    Warn = 2,
    /// Error.
    Error = 3,
}

/// Writes `msg` to qrun's log; the host attaches consumer, queue, message id
/// and attempt. Lines over the consumer's rate limit are dropped and counted
/// by the host, which is why nothing is returned.
pub fn log(level: Level, msg: &str) {
    unsafe { sys::log(level as i32, msg.as_ptr(), msg.len() as i32) };
}

/// Logs at debug level.
pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}

/// Logs at info level.
pub fn info(msg: &str) {
    log(Level::Info, msg)
}

/// Logs at warn level.
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}

/// Logs at error level.
pub fn error(msg: &str) {
    log(Level::Error, msg)
}

/// The value of `key` in the consumer's `config` map. Works in the init
/// function too, the place to read values once per instance.
pub fn config(key: &str) -> Option<String> {
    read_string(|buf, cap| unsafe { sys::config_get(key.as_ptr(), key.len() as i32, buf, cap) })
        .ok()
}

/// Encodes attributes in the ABI's pair encoding (u32 length, bytes, for
/// the key and then the value of each pair).
pub fn encode_attrs<K: AsRef<str>, V: AsRef<str>>(attrs: &[(K, V)]) -> Vec<u8> {
    let size = attrs
        .iter()
        .map(|(k, v)| 8 + k.as_ref().len() + v.as_ref().len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for (k, v) in attrs {
        for s in [k.as_ref(), v.as_ref()] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// Enqueues `body` with `attrs` to `queue`, which must be listed in the
/// consumer's `publish` list. Not transactional: a message published before
/// a nack stays published, so downstream must tolerate duplicates.
pub fn publish<K: AsRef<str>, V: AsRef<str>>(
    queue: &str,
    body: &[u8],
    attrs: &[(K, V)],
) -> Result<(), Error> {
    let enc = encode_attrs(attrs);
    check(unsafe {
        sys::publish(
            queue.as_ptr(),
            queue.len() as i32,
            body.as_ptr(),
            body.len() as i32,
            enc.as_ptr(),
            enc.len() as i32,
        )
    })
}

/// Milliseconds for the ABI, rounded up so that a small positive duration
/// never becomes "no delay".
fn millis(d: Duration) -> i64 {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
    ms.min(i64::MAX as u128) as i64
}

/// Sets how long the current message stays invisible after a Nack or
/// Requeue verdict, replacing the retry policy's delay for this delivery.
pub fn set_delay(d: Duration) -> Result<(), Error> {
    check(unsafe { sys::set_delay(millis(d)) })
}

/// The most of a reason, in bytes, that qrun keeps; [`set_reason`] cuts a
/// longer one at a UTF-8 boundary.
pub const MAX_REASON: usize = 1024;

/// Records why the current message is nacked or dead-lettered: with a
/// [`Verdict::Nack`] or [`Verdict::DeadLetter`] the reason is logged with the
/// verdict and becomes the dead letter's reason, as given (what `qrun dlq
/// show` shows). Ignored for ack and requeue; a later call replaces it, ""
/// clears it, at most [`MAX_REASON`] bytes are kept. `Error::NoMessage`
/// outside a handler call.
pub fn set_reason(reason: &str) -> Result<(), Error> {
    check(unsafe { sys::set_reason(reason.as_ptr(), reason.len() as i32) })
}

/// Records `reason` (see [`set_reason`]) and returns [`Verdict::DeadLetter`]:
/// `return qrun::dead_letter_with("webhook: 404 Not Found");`
pub fn dead_letter_with(reason: &str) -> Verdict {
    let _ = set_reason(reason); // a &str is UTF-8: only "no message" can fail
    Verdict::DeadLetter
}

/// Records `reason` (see [`set_reason`]) and returns [`Verdict::Nack`].
pub fn nack_with(reason: &str) -> Verdict {
    let _ = set_reason(reason);
    Verdict::Nack
}

/// Extends the current delivery's lease to now + `d`: a heartbeat for work
/// that may outlast the visibility timeout.
pub fn extend_lease(d: Duration) -> Result<(), Error> {
    check(unsafe { sys::extend_lease(millis(d)) })
}

/// The host's wall clock.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unsafe { sys::now() }.max(0) as u64)
}

/// A key-value store the consumer is granted (its `kv` list). On an engine
/// with transactions, when the store lives in the same engine as the
/// consumer's queue, writes happen together with the ack or not at all (a
/// nack, a trap or a timeout drops them) and reads see the delivery's own
/// writes; see docs/state.md. Every method belongs to a delivery
/// ([`Error::NoMessage`] outside a handler call); a store the consumer is
/// not granted gives [`Error::Denied`], a key that is empty or longer than
/// 512 bytes [`Error::Invalid`].
///
/// ```ignore
/// let seen = qrun::store("dedup");
/// if seen.get(m.id())?.is_some() { return Verdict::Ack; }
/// seen.set_ttl(m.id(), b"1", Duration::from_secs(86400))?;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Store<'a> {
    name: &'a str,
}

/// The store called `name`; no host call is made until one of its methods.
pub fn store(name: &str) -> Store<'_> {
    Store { name }
}

impl<'a> Store<'a> {
    /// The store's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The value of `key`, or `None` when it is absent (or expired).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        let (s, k) = (self.name.as_bytes(), key.as_ref());
        match read(|buf, cap| unsafe { sys::kv_get(s.as_ptr(), s.len() as i32, k.as_ptr(), k.len() as i32, buf, cap) })
        {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The key's version as this delivery sees it, 0 when absent: what
    /// [`Store::compare_and_set`] compares against.
    pub fn version(&self, key: impl AsRef<[u8]>) -> Result<u64, Error> {
        let (s, k) = (self.name.as_bytes(), key.as_ref());
        let v = unsafe { sys::kv_version(s.as_ptr(), s.len() as i32, k.as_ptr(), k.len() as i32) };
        if v < 0 {
            return Err(Error::from_code(v as i32));
        }
        Ok(v as u64)
    }

    /// Stores `value` under `key`, with no expiry.
    pub fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), Error> {
        self.set_ttl(key, value, Duration::ZERO)
    }

    /// Stores `value` under `key`; the key disappears `ttl` later (zero:
    /// never). [`Error::TooLarge`] over the store's `max_value_size`.
    pub fn set_ttl(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, ttl: Duration) -> Result<(), Error> {
        let (s, k, v) = (self.name.as_bytes(), key.as_ref(), value.as_ref());
        check(unsafe {
            sys::kv_set(s.as_ptr(), s.len() as i32, k.as_ptr(), k.len() as i32, v.as_ptr(), v.len() as i32, millis(ttl))
        })
    }

    /// Stores `value` under `key` (expiring after `ttl`, zero: never) only
    /// if the key's version is still `version` as [`Store::version`]
    /// reported it (0: only if absent); otherwise [`Error::Conflict`] and
    /// nothing is written.
    pub fn compare_and_set(
        &self,
        key: impl AsRef<[u8]>,
        version: u64,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let (s, k, v) = (self.name.as_bytes(), key.as_ref(), value.as_ref());
        check(unsafe {
            sys::kv_cas(
                s.as_ptr(),
                s.len() as i32,
                k.as_ptr(),
                k.len() as i32,
                version as i64,
                v.as_ptr(),
                v.len() as i32,
                millis(ttl),
            )
        })
    }

    /// Removes `key`; removing an absent key is not an error.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        let (s, k) = (self.name.as_bytes(), key.as_ref());
        check(unsafe { sys::kv_delete(s.as_ptr(), s.len() as i32, k.as_ptr(), k.len() as i32) })
    }

    /// Adds `delta` to the decimal integer under `key` (absent counts as 0),
    /// stores the sum as decimal text and returns it; [`Error::Invalid`] when
    /// the value is not a decimal i64 or the sum overflows.
    pub fn incr(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64, Error> {
        let (s, k) = (self.name.as_bytes(), key.as_ref());
        let mut n: i64 = 0;
        check(unsafe { sys::kv_incr(s.as_ptr(), s.len() as i32, k.as_ptr(), k.len() as i32, delta, &mut n) })?;
        Ok(n)
    }

    /// Adds `delta` to the decimal integer under `key` (absent counts as 0)
    /// without returning the sum and without reading the key: the counter a
    /// handler does not need to read (use [`Store::incr`] when it needs the
    /// sum). On a transactional store (same engine as the queue: memory,
    /// disk, postgres) the add is held and applied at commit to whatever
    /// value the key has then, so deliveries adding to one key never
    /// conflict and the call costs no round trip to the store; if at commit
    /// the value is not a decimal i64 or the sum overflows, nothing of the
    /// delivery is applied and the delivery fails. A later read of the key in
    /// the same delivery sees the value with its adds applied.
    /// [`Error::Invalid`] when the value is known at the call (on an
    /// immediate store always, on a transactional one once the delivery
    /// read or wrote the key) and is not a decimal i64 or the sum overflows,
    /// [`Error::TooLarge`] when the sum would exceed the store's
    /// `max_value_size`.
    pub fn add(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<(), Error> {
        let (s, k) = (self.name.as_bytes(), key.as_ref());
        check(unsafe { sys::kv_add(s.as_ptr(), s.len() as i32, k.as_ptr(), k.len() as i32, delta) })
    }
}

/// An outbound HTTP request (ABI.md section 4, "Outbound HTTP"); the
/// consumer's `http` block decides where it may go.
///
/// ```ignore
/// let resp = qrun::Request::new("POST", &url).header("Content-Type", "application/json").body(m.body).send()?;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A request with no headers and no body; an empty method is GET.
    pub fn new(method: &str, url: &str) -> Request {
        Request { method: method.to_string(), url: url.to_string(), ..Request::default() }
    }

    /// Adds a header; a name may be given more than once.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sends the request and reads the whole response. A 404 or a 503 is a
    /// [`Response`]; the errors are [`Error::Denied`] (not allowed),
    /// [`Error::Timeout`], [`Error::Connect`], [`Error::TooLarge`] (response
    /// over `max_response_size`), [`Error::Limit`], [`Error::Invalid`] and
    /// [`Error::NoMessage`].
    pub fn send(&self) -> Result<Response, Error> {
        let method = if self.method.is_empty() { "GET" } else { self.method.as_str() };
        let enc = encode_attrs(&self.headers);
        let status = unsafe {
            sys::http_request(
                method.as_ptr(),
                method.len() as i32,
                self.url.as_ptr(),
                self.url.len() as i32,
                enc.as_ptr(),
                enc.len() as i32,
                self.body.as_ptr(),
                self.body.len() as i32,
            )
        };
        check(status)?;
        // Read from the response the host holds: the request is not sent again.
        let body = read(|buf, cap| unsafe { sys::http_response_body(buf, cap) })?;
        let headers = decode_pairs(&read(|buf, cap| unsafe { sys::http_response_headers(buf, cap) })?);
        Ok(Response { status: status as u16, headers, body })
    }
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Headers in canonical form (`Content-Type`), sorted, one pair per value.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// How long the response asks the client to wait: its `Retry-After`, in
    /// seconds or as an HTTP date (relative to [`now`]; a past date is 0),
    /// when the status is 429 or 503. `None` when it does not say.
    pub fn retry_after(&self) -> Option<Duration> {
        if self.status != 429 && self.status != 503 {
            return None;
        }
        parse_retry_after(self.header("Retry-After")?, now())
    }
}

/// For a response worth retrying (429, 5xx): sets the retry delay from its
/// `Retry-After` when it has one and returns [`Verdict::Nack`], which counts
/// an attempt, so a receiver that never recovers still dead-letters the
/// message.
pub fn retry_later(resp: &Response) -> Verdict {
    if let Some(d) = resp.retry_after() {
        let _ = set_delay(d);
    }
    Verdict::Nack
}

/// Decodes the ABI's pair encoding; names may repeat.
fn decode_pairs(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let next = |b: &mut &[u8]| -> Option<String> {
        if b.len() < 4 {
            return None;
        }
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if n > b.len() - 4 {
            return None;
        }
        let s = String::from_utf8_lossy(&b[4..4 + n]).into_owned();
        *b = &b[4 + n..];
        Some(s)
    };
    while !b.is_empty() {
        match (next(&mut b), next(&mut b)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => break,
        }
    }
    out
}

/// Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses a Retry-After value: seconds (capped at the 7 days `set_delay`
/// allows) or an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT") relative to
/// `now`.
fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) {
        let secs = v.parse::<u64>().unwrap_or(u64::MAX).min(604_800);
        return Some(Duration::from_secs(secs));
    }
    if v.len() != 29 || !v.is_ascii() || &v[25..] != " GMT" {
        return None;
    }
    let month = "JanFebMarAprMayJunJulAugSepOctNovDec".find(&v[8..11]).filter(|i| i % 3 == 0)? as i64 / 3 + 1;
    let num = |r: std::ops::Range<usize>| v[r].parse::<i64>().ok();
    let secs = days_from_civil(num(12..16)?, month, num(5..7)?) * 86400
        + num(17..19)? * 3600
        + num(20..22)? * 60
        + num(23..25)?;
    let at = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Support for [`handler!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::alloc::{alloc, dealloc, Layout};

    pub fn alloc_region(size: i32) -> *mut u8 {
        // The host never asks for 0 bytes, but 0 would read as "out of
        // memory", so such a request still gets a real region.
        let size = (size.max(1)) as usize;
        match Layout::from_size_align(size, 8) {
            Ok(l) => unsafe { alloc(l) },
            Err(_) => std::ptr::null_mut(),
        }
    }

    pub fn free_region(ptr: *mut u8, size: i32) {
        if ptr.is_null() {
            return;
        }
        if let Ok(l) = Layout::from_size_align(size.max(1) as usize, 8) {
            unsafe { dealloc(ptr, l) }
        }
    }

    pub fn init(f: Option<fn() -> Result<(), String>>) -> i32 {
        match f {
            None => 0,
            Some(f) => match f() {
                Ok(()) => 0,
                Err(e) => {
                    log(Level::Error, &format!("init failed: {}", e));
                    1
                }
            },
        }
    }

    pub fn handle(ptr: *const u8, len: i32, h: fn(&Message) -> Verdict) -> i32 {
        // For an empty body the ABI leaves ptr unspecified: never read it.
        let body: &[u8] = if len > 0 {
            unsafe { std::slice::from_raw_parts(ptr, len as usize) }
        } else {
            &[]
        };
        h(&Message { body }).code()
    }
}

/// Generates the module's ABI exports around a handler function
/// `fn(&Message) -> Verdict`, and optionally an init function
/// `fn() -> Result<(), String>` run once per instance (an `Err` refuses the
/// instance, after logging it). Use it once, at the crate root:
///
/// ```ignore
/// qrun::handler!(handle);
/// qrun::handler!(handle, init = setup);
/// ```
#[macro_export]
macro_rules! handler {
    ($handle:path) => {
        $crate::handler!(@exports $handle, None);
    };
    ($handle:path, init = $init:path) => {
        $crate::handler!(@exports $handle, Some($init as fn() -> Result<(), String>));
    };
    (@exports $handle:path, $init:expr) => {
        #[no_mangle]
        pub extern "C" fn qrun_abi_v1() {}

        #[no_mangle]
        pub extern "C" fn qrun_alloc(size: i32) -> *mut u8 {
            $crate::__private::alloc_region(size)
        }

        #[no_mangle]
        pub extern "C" fn qrun_free(ptr: *mut u8, size: i32) {
            $crate::__private::free_region(ptr, size)
        }

        #[no_mangle]
        pub extern "C" fn qrun_init() -> i32 {
            $crate::__private::init($init)
        }

        #[no_mangle]
        pub extern "C" fn qrun_handle(ptr: *const u8, len: i32) -> i32 {
            $crate::__private::handle(ptr, len, $handle)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_attributes_as_the_abi_says() {
        let enc = encode_attrs(&[("a", "xy"), ("", "")]);
        assert_eq!(enc, b"\x01\0\0\0a\x02\0\0\0xy\0\0\0\0\0\0\0\0");
        let none: &[(&str, &str)] = &[];
        assert!(encode_attrs(none).is_empty());
    }

    #[test]
    fn reason_helpers_keep_their_verdict() {
        // No host off wasm32: the reason is refused, the verdict stands.
        assert_eq!(set_reason("x"), Err(Error::NoMessage));
        assert!(matches!(dead_letter_with("gone"), Verdict::DeadLetter));
        assert!(matches!(nack_with("busy"), Verdict::Nack));
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_nanos(1_000_001)), 2);
        assert_eq!(millis(Duration::ZERO), 0);
    }

    #[test]
    fn error_codes_map_both_ways() {
        assert_eq!(Error::from_code(-3), Error::Denied);
        assert_eq!(Error::from_code(-99), Error::Other(-99));
        assert!(check(0).is_ok());
        assert_eq!(check(-6), Err(Error::Unavailable));
    }

    #[test]
    fn read_retries_with_the_full_length() {
        // A host value of 300 bytes: the first call (128-byte buffer) only
        // learns the length, the second gets the value.
        let value = vec![b'v'; 300];
        let mut calls = 0;
        let got = read(|buf, cap| {
            calls += 1;
            if cap as usize >= value.len() {
                unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), buf, value.len()) };
            }
            value.len() as i32
        })
        .unwrap();
        assert_eq!((got, calls), (value.clone(), 2));
        assert_eq!(read(|_, _| -2), Err(Error::NotFound));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("99999999999999999999", now), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("Sun, 06 Xyz 1994 08:50:37 GMT", now), None);
    }

    #[test]
    fn response_headers_and_retry_after() {
        let pairs = encode_attrs(&[("Retry-After", "7"), ("X-A", "1"), ("X-A", "2")]);
        let headers = decode_pairs(&pairs);
        assert_eq!(headers.len(), 3);
        let r = Response { status: 503, headers, body: vec![] };
        assert_eq!(r.header("x-a"), Some("1"));
        assert_eq!(r.retry_after(), Some(Duration::from_secs(7)));
        let ok = Response { status: 500, ..r.clone() };
        assert_eq!(ok.retry_after(), None);
        assert_eq!(Request::new("GET", "http://x").send().err(), Some(Error::NoMessage));
    }

    #[test]
    fn stores_and_state_off_wasm() {
        // No host off wasm32: every store and state call is outside a delivery.
        let s = store("kv");
        assert_eq!(s.name(), "kv");
        assert_eq!(s.get("k"), Err(Error::NoMessage));
        assert_eq!(s.version("k"), Err(Error::NoMessage));
        assert_eq!(s.set_ttl("k", b"v", Duration::from_millis(5)), Err(Error::NoMessage));
        assert_eq!(s.compare_and_set("k", 0, "v", Duration::ZERO), Err(Error::NoMessage));
        assert_eq!(s.incr("k", 1), Err(Error::NoMessage));
        assert_eq!(s.add("k", 1), Err(Error::NoMessage));
        let m = Message { body: b"" };
        assert_eq!(m.state(), Err(Error::NoMessage));
        assert_eq!(m.set_state("x"), Err(Error::NoMessage));
        assert_eq!(Error::from_code(-12), Error::Conflict);
        assert_eq!(Error::from_code(-13), Error::Unsupported);
    }

    #[test]
    fn verdict_codes() {
        assert_eq!(Verdict::DeadLetter.code(), 3);
        assert_eq!(Verdict::Code(7).code(), 7);
    }

    #[test]
    fn no_host_off_wasm() {
        // Handler logic unit-tested off wasm takes the error paths.
        assert_eq!(config("x"), None);
        assert_eq!(publish("q", b"", &[("k", "v")]), Err(Error::Unavailable));
    }
}
