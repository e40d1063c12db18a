;; Imports env.abort, as AssemblyScript does by default.
(module
  (import "env" "abort" (func (param i32 i32 i32 i32)))
  (memory (export "memory") 1) (func (export "qrun_abi_v1")) (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024)) (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 0)))
