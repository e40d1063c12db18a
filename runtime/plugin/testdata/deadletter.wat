;; deadletter: dead-letters every message (verdict 3). The "broken" handler
;; version of the redrive test in runtime/server; ack.wat is the fixed one.
(module
  (memory (export "memory") 1)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 3)))
