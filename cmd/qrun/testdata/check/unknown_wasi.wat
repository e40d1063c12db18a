;; Imports a function WASI preview 1 does not define.
(module
  (import "wasi_snapshot_preview1" "teleport" (func (param i32) (result i32)))
  (memory (export "memory") 1) (func (export "qrun_abi_v1")) (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024)) (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 0)))
