;; http_request from qrun_init, outside any delivery: leaves its result at
;; 0x100 (the ABI says -5, no message) and lets the instance start.
(module
  (import "qrun" "http_request" (func $req (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "http://127.0.0.1:1/")
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_init") (result i32)
    (i32.store (i32.const 0x100) (call $req (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 19)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
    (i32.const 0))
  (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 0)))
