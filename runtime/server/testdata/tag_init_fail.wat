;; tag_init_fail: a test handler for hot reload. It publishes each body, unchanged, to
;; queue "seen_bad" and acks when that worked (nack otherwise), so a test can tell
;; which version handled which message. Its qrun_init fails, so qrun must refuse it.
(module
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "qrun" "now" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 16) "seen_bad")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "qrun_abi_v1"))
  (func (export "qrun_init") (result i32) (i32.const 1))
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1))) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func (export "qrun_free") (param $ptr i32) (param $size i32)
    (if (i32.eq (i32.add (local.get $ptr) (local.get $size)) (global.get $heap))
      (then (global.set $heap (local.get $ptr)))))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $until i64)
    ;; no wait (the slow variant waits here)
    (local.set $until (i64.add (call $now) (i64.const 0)))
    (block $done (loop $wait
      (br_if $done (i64.ge_s (call $now) (local.get $until)))
      (br $wait)))
    (i32.ne
      (call $publish (i32.const 16) (i32.const 8)
        (select (local.get $ptr) (i32.const 0) (local.get $len)) (local.get $len)
        (i32.const 0) (i32.const 0))
      (i32.const 0))))
