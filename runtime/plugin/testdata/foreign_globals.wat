;; foreign_globals: otherwise valid, but imports a global and a table, which
;; no module qrun instantiates provides, so every instantiation would fail.
(module
  (import "env" "g" (global i32))
  (import "env" "t" (table 1 funcref))
  (memory (export "memory") 1)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 0)))
