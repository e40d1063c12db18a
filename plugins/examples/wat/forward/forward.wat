;; forward.wat: a qrun handler written by hand, with no SDK (guest ABI v1,
;; abi/ABI.md). It republishes every message body, unchanged and without
;; attributes, to the queue named by the consumer's config key "forward_to",
;; and acks when the publish succeeded, nacks when it did not (so qrun
;; retries). Without "forward_to" it acks everything.
;;
;; It doubles as the handler of qrun's throughput benchmark, so the per-message
;; path is one branch and one host call: the config is read once per instance
;; in qrun_init and kept in memory.
;;
;; Build: wat2wasm forward.wat -o forward.wasm
;;
;; Memory map (one 64 KiB page to start, grown on demand):
;;      0 ..   15  unused, so that no valid data lives at address 0
;;     16 ..   25  "forward_to", the config key
;;     32 ..  130  log messages
;;    242 ..  255  "forwarding to ", placed so that the queue name read into
;;                 the config buffer right after it completes the log line
;;    256 ..  511  config buffer: the "forward_to" value (at most 256 bytes)
;;   1024 ..       heap for qrun_alloc (message bodies)
(module
  ;; Host functions, imported from module "qrun" with the exact ABI
  ;; signatures; a mismatch makes qrun refuse the module at load.
  ;; log(level, ptr, len) -> status
  (import "qrun" "log" (func $log (param i32 i32 i32) (result i32)))
  ;; config_get(key, key_len, buf, cap) -> full length of the value | error
  (import "qrun" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
  ;; publish(queue, queue_len, body, body_len, attrs, attrs_len) -> 0 | error
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  (data (i32.const 16) "forward_to")
  (data (i32.const 32) "forward_to not set: messages are acked, not forwarded") ;; 53 bytes
  (data (i32.const 96) "forward_to is longer than 256 bytes") ;; 35 bytes
  (data (i32.const 242) "forwarding to ")                      ;; 14 bytes

  ;; Length of the queue name at offset 256; 0 means "do not forward".
  ;; Globals live as long as the instance, which serves many messages.
  (global $fwd_len (mut i32) (i32.const 0))

  ;; Start of free memory for qrun_alloc.
  (global $heap (mut i32) (i32.const 1024))

  ;; The version marker: its presence says "I speak ABI v1"; never called.
  (func (export "qrun_abi_v1"))

  ;; qrun_alloc(size) -> ptr: a bump allocator. The host usually asks once and
  ;; reuses the region for every body that fits, so this is rarely called.
  ;; Memory grows when the region would not fit; 0 tells the host we are out
  ;; of memory (memory.grow fails past the consumer's memory_limit).
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local $end i64)
    (local.set $ptr (global.get $heap))
    ;; 64-bit arithmetic so that a huge size cannot wrap around.
    (local.set $end (i64.add (i64.extend_i32_u (local.get $ptr))
                             (i64.extend_i32_u (local.get $size))))
    (if (i64.gt_u (local.get $end)
                  (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
      (then
        ;; Grow by enough 64 KiB pages to cover the shortfall.
        (if (i32.eq (i32.const -1)
              (memory.grow
                (i32.wrap_i64
                  (i64.shr_u
                    (i64.add
                      (i64.sub (local.get $end)
                               (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
                      (i64.const 65535))
                    (i64.const 16)))))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.wrap_i64 (local.get $end)))
    (local.get $ptr))

  ;; qrun_free(ptr, size): only the most recent region can be given back
  ;; (stack order). That is all a host that allocates and frees around each
  ;; delivery needs for memory not to grow; other frees are ignored.
  (func (export "qrun_free") (param $ptr i32) (param $size i32)
    (if (i32.eq (i32.add (local.get $ptr) (local.get $size)) (global.get $heap))
      (then (global.set $heap (local.get $ptr)))))

  ;; qrun_init() -> status: runs once per instance; non-zero refuses it.
  (func (export "qrun_init") (result i32)
    (local $n i32)
    ;; Read "forward_to" into the 256-byte buffer at 256.
    (local.set $n
      (call $config_get (i32.const 16) (i32.const 10) (i32.const 256) (i32.const 256)))
    ;; -2: not configured. Say so once, then ack every message.
    (if (i32.eq (local.get $n) (i32.const -2))
      (then
        (drop (call $log (i32.const 0) (i32.const 32) (i32.const 53)))
        (return (i32.const 0))))
    ;; Any other error is unexpected: refuse the instance.
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (return (i32.const 1))))
    ;; A value longer than the buffer was not written (the ABI writes nothing
    ;; when it does not fit). Refuse rather than forward to a cut-off name.
    (if (i32.gt_u (local.get $n) (i32.const 256))
      (then
        (drop (call $log (i32.const 3) (i32.const 96) (i32.const 35)))
        (return (i32.const 1))))
    (global.set $fwd_len (local.get $n))
    ;; Logs "forwarding to <queue>": the prefix at 242 runs into the buffer.
    (drop (call $log (i32.const 0) (i32.const 242) (i32.add (i32.const 14) (local.get $n))))
    (i32.const 0))

  ;; qrun_handle(ptr, len) -> verdict: 0 ack, 1 nack.
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    ;; Not configured: ack.
    (if (i32.eqz (global.get $fwd_len))
      (then (return (i32.const 0))))
    ;; Publish the body as is, no attributes (attrs ptr 0, len 0). For an
    ;; empty body the host's ptr is unspecified and might lie outside memory,
    ;; which publish would treat as a guest error, so 0 is passed instead.
    ;; publish returns 0 on success: "result != 0" is exactly 0 ack / 1 nack.
    (i32.ne
      (call $publish
        (i32.const 256) (global.get $fwd_len)
        (select (local.get $ptr) (i32.const 0) (local.get $len)) (local.get $len)
        (i32.const 0) (i32.const 0))
      (i32.const 0)))
)
