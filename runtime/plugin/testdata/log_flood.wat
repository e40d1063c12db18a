;; log_flood: every qrun_handle logs 1000 lines.
(module
  (import "qrun" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "flood")
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param i32 i32) (result i32)
    (local $i i32)
    (loop $again
      (drop (call $log (i32.const 1) (i32.const 16) (i32.const 5)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 1000))))
    (i32.const 0)))
