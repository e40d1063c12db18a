;; exactly_once: the handler of the ExactlyOnce tests and of the kv
;; benchmark. For each message it adds 1 to key "total" of store "counts"
;; with kv_incr (a read: concurrent deliveries conflict on it) and 1 to key
;; "id:<message id>" with kv_add (no read), and publishes the message id to
;; queue "out"; then it nacks (one time in five), traps (one in five) or
;; acks, chosen from the clock, after its effects were made. Exactly-once
;; effects mean: after every message was acked, total is the number of
;; messages, every id:<id> is 1 and out holds each id once.
;; With config chaos = "off" it leaves total alone and always acks: one
;; increment and one publish per delivery, the kv benchmark's handler;
;; config count = "incr" makes that increment a kv_incr (which reads the
;; key) rather than a kv_add.
(module
  (import "qrun" "msg_field" (func $field (param i32 i32 i32) (result i32)))
  (import "qrun" "kv_incr" (func $incr (param i32 i32 i32 i32 i64 i32) (result i32)))
  (import "qrun" "kv_add" (func $add (param i32 i32 i32 i32 i64) (result i32)))
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "qrun" "config_get" (func $config (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "now" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "counts")
  (data (i32.const 16) "total")
  (data (i32.const 32) "out")
  (data (i32.const 40) "chaos")
  (data (i32.const 48) "id:")
  (data (i32.const 700) "count")
  (global $calm (mut i32) (i32.const 0))
  (global $read (mut i32) (i32.const 0))
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_init") (result i32)
    ;; chaos = "off" (3 bytes, read to 600)
    (if (i32.eq (call $config (i32.const 40) (i32.const 5) (i32.const 600) (i32.const 8)) (i32.const 3))
      (then (global.set $calm (i32.const 1))))
    ;; count = "incr" (4 bytes, read to 610)
    (if (i32.eq (call $config (i32.const 700) (i32.const 5) (i32.const 610) (i32.const 8)) (i32.const 4))
      (then (global.set $read (i32.const 1))))
    (i32.const 0))
  (func (export "qrun_handle") (param i32 i32) (result i32)
    (local $n i32) (local $r i64)
    (local.set $n (call $field (i32.const 0) (i32.const 51) (i32.const 200)))
    (if (i32.or (i32.lt_s (local.get $n) (i32.const 1)) (i32.gt_s (local.get $n) (i32.const 200)))
      (then unreachable))
    (if (i32.eqz (global.get $calm))
      (then (if (call $incr (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 5) (i64.const 1) (i32.const 512))
        (then (return (i32.const 1))))))
    (if (global.get $read)
      (then (if (call $incr (i32.const 0) (i32.const 6) (i32.const 48) (i32.add (local.get $n) (i32.const 3)) (i64.const 1) (i32.const 520))
        (then (return (i32.const 1)))))
      (else (if (call $add (i32.const 0) (i32.const 6) (i32.const 48) (i32.add (local.get $n) (i32.const 3)) (i64.const 1))
        (then (return (i32.const 1))))))
    (if (call $publish (i32.const 32) (i32.const 3) (i32.const 51) (local.get $n) (i32.const 0) (i32.const 0))
      (then (return (i32.const 1))))
    (if (global.get $calm) (then (return (i32.const 0))))
    (local.set $r (call $now))
    (local.set $r (i64.rem_u (i64.xor (local.get $r) (i64.shr_u (local.get $r) (i64.const 17))) (i64.const 5)))
    (if (i64.eqz (local.get $r)) (then (return (i32.const 1))))
    (if (i64.eq (local.get $r) (i64.const 1)) (then unreachable))
    (i32.const 0)))
