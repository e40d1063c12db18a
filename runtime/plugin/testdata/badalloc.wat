;; badalloc: qrun_alloc returns 0 (out of memory) for sizes up to 256 and a
;; region running past the end of its one page for anything larger.
(module
  (memory (export "memory") 1)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (if (result i32) (i32.le_u (local.get $size) (i32.const 256))
      (then (i32.const 0))
      (else (i32.const 0xfff0))))
  (func (export "qrun_handle") (param i32 i32) (result i32) (i32.const 0)))
