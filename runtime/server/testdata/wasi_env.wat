;; Acks when WASI shows exactly the environment "A=1" and a preopened
;; directory "/data" at fd 3; dead-letters otherwise. The server test uses
;; it to see that a consumer's wasi block reaches the guest.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param i32 i32) (result i32)
    (drop (call $sizes (i32.const 0x100) (i32.const 0x104)))
    (if (i32.or (i32.ne (i32.load (i32.const 0x100)) (i32.const 1))
                (i32.ne (i32.load (i32.const 0x104)) (i32.const 4)))
      (then (return (i32.const 3))))
    ;; a preopened directory whose name has 5 bytes: "/data"
    (if (i32.ne (call $prestat (i32.const 3) (i32.const 0x110)) (i32.const 0))
      (then (return (i32.const 3))))
    (if (i32.ne (i32.load (i32.const 0x114)) (i32.const 5))
      (then (return (i32.const 3))))
    (i32.const 0)))
