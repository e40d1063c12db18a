;; __NAME__: a qrun message handler written by hand in WebAssembly text,
;; against the guest ABI v1 (abi/ABI.md), no SDK.
;;
;; It greets each message in the log and, when config "forward_to" names a
;; queue, publishes the body there with attribute greeted_by=__NAME__. An
;; empty body is dead-lettered: no retry can give it content.
;;
;; Memory map (one 64 KiB page to start, grown for large bodies):
;;      0 ..   15  unused, so that no valid data lives at address 0
;;     16 ..   25  "forward_to", the config key
;;     32 ..  127  the publish attributes, already in the ABI's encoding
;;    128 ..  155  "empty body: nothing to greet"
;;    256 ..  511  the "forward_to" value, read once in qrun_init
;;   1017 .. 1023  "hello, ", right before the body so one log call says both
;;   1024 ..       the body region: the host holds one region at a time and
;;                 frees it before asking for a bigger one, so a single
;;                 buffer that grows with memory is a complete allocator
(module
  ;; Host functions, with the exact ABI signatures (a mismatch is refused
  ;; at load). Import only what you use.
  (import "qrun" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "qrun" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  (data (i32.const 16) "forward_to")
  ;; Attributes: key_len u32, key, value_len u32, value (little-endian).
  (data (i32.const 32) "\0a\00\00\00greeted_by\__NAMELENHEX__\00\00\00__NAME__")
  (data (i32.const 128) "empty body: nothing to greet")
  (data (i32.const 1017) "hello, ")

  ;; Length of the queue name at 256; 0: do not forward. Globals live as
  ;; long as the instance, which serves many messages.
  (global $fwd_len (mut i32) (i32.const 0))

  ;; The version marker: "this module speaks ABI v1". Never called.
  (func (export "qrun_abi_v1"))

  ;; qrun_alloc(size) -> ptr: always 1024, with memory grown to fit; 0 (out
  ;; of memory) when memory cannot grow past the consumer's memory_limit.
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (local $need i64)
    (local.set $need (i64.sub
      (i64.add (i64.const 1024) (i64.extend_i32_u (local.get $size)))
      (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16))))
    (if (i64.gt_s (local.get $need) (i64.const 0))
      (then
        (if (i32.eq (i32.const -1)
              (memory.grow (i32.wrap_i64 (i64.shr_u (i64.add (local.get $need) (i64.const 65535)) (i64.const 16)))))
          (then (return (i32.const 0))))))
    (i32.const 1024))

  ;; qrun_free: exported so the host hands the region back before it asks
  ;; for a bigger one; there is nothing to do.
  (func (export "qrun_free") (param $ptr i32) (param $size i32))

  ;; qrun_init() -> status: once per instance; non-zero refuses it.
  (func (export "qrun_init") (result i32)
    (local $n i32)
    (local.set $n (call $config_get (i32.const 16) (i32.const 10) (i32.const 256) (i32.const 256)))
    (if (i32.eq (local.get $n) (i32.const -2)) (then (return (i32.const 0)))) ;; not set
    ;; Another error, or a name over 256 bytes (not written): refuse.
    (if (i32.gt_u (local.get $n) (i32.const 256)) (then (return (i32.const 1))))
    (global.set $fwd_len (local.get $n))
    (i32.const 0))

  ;; qrun_handle(ptr, len) -> verdict: 0 ack, 1 nack, 2 requeue, 3 dead-letter.
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (if (i32.eqz (local.get $len))
      (then
        (drop (call $log (i32.const 2) (i32.const 128) (i32.const 28)))
        (return (i32.const 3))))
    ;; "hello, " + body: the prefix sits right before the body region.
    (drop (call $log (i32.const 1) (i32.const 1017) (i32.add (i32.const 7) (local.get $len))))
    (if (i32.eqz (global.get $fwd_len)) (then (return (i32.const 0))))
    ;; publish returns 0 on success, so "result != 0" is 0 ack / 1 nack.
    (i32.ne
      (call $publish (i32.const 256) (global.get $fwd_len)
                     (local.get $ptr) (local.get $len)
                     (i32.const 32) (i32.const __ATTRSLEN__))
      (i32.const 0)))
)
