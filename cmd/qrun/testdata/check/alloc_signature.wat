;; qrun_alloc with a 64-bit size.
(module (memory (export "memory") 1)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i64) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 0)))
