;; Speaks only an ABI version this qrun does not support.
(module (memory (export "memory") 1)
  (func (export "qrun_abi_v2"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 0)))
