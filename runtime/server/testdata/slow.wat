;; slow: a test handler for graceful shutdown. It sleeps 50 ms on each
;; message (WASI poll_oneoff on a relative clock: no CPU spent, so a test
;; can run several at once without starving the machine), then publishes
;; the body, unchanged, to queue "out" and acks when that worked (nack
;; otherwise).
(module
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "out")
  ;; One clock subscription at 64 (48 bytes): userdata 0, tag 0 (clock),
  ;; clock id 1 (monotonic) at +16, timeout 50 ms at +24, precision 0,
  ;; flags 0 (relative). The event (32 bytes) goes to 128, nevents to 160.
  (data (i32.const 80) "\01\00\00\00")
  (data (i32.const 88) "\80\f0\fa\02\00\00\00\00")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "qrun_abi_v1"))
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
    (if (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 160))
      (then (return (i32.const 1))))
    (i32.ne
      (call $publish (i32.const 16) (i32.const 3)
        (select (local.get $ptr) (i32.const 0) (local.get $len)) (local.get $len)
        (i32.const 0) (i32.const 0))
      (i32.const 0))))
