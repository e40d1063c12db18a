;; many_problems: several independent mistakes, all of which must be reported
;; at once: an unknown qrun import, a wrong signature, a foreign import
;; module, no qrun_alloc and a qrun_handle with the wrong signature.
(module
  (import "qrun" "nope" (func))
  (import "qrun" "now" (func (result i32)))
  (import "env" "abort" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_handle") (param i32) (result i32) (i32.const 0)))
