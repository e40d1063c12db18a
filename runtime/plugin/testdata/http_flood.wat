;; A hostile guest: 10,000 GET requests to the URL in the body in one
;; delivery. Leaves at 0x100 the first result, at 0x104 the last, at 0x108
;; how many were refused with -11 (max_requests reached); acks.
(module
  (import "qrun" "http_request" (func $req (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $size) (i32.const 65536))
      (then (i32.const 0)) (else (i32.const 65536))))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $i i32) (local $s i32)
    (i32.store (i32.const 0x108) (i32.const 0))
    (loop $again
      (local.set $s (call $req (i32.const 0) (i32.const 0) (local.get $ptr) (local.get $len)
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
      (if (i32.eqz (local.get $i)) (then (i32.store (i32.const 0x100) (local.get $s))))
      (if (i32.eq (local.get $s) (i32.const -11))
        (then (i32.store (i32.const 0x108) (i32.add (i32.load (i32.const 0x108)) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 10000))))
    (i32.store (i32.const 0x104) (local.get $s))
    (i32.const 0)))
