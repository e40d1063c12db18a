;; stdout_flood: qrun_handle writes 16 MiB of 'x' to stdout in one fd_write,
;; ending in a newline if the body is "n" (one huge line in one write) and
;; without one otherwise (a huge incomplete line). The host must deal with
;; it in time linear in the size, within a short timeout.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 258)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    ;; 16 MiB from 0x10000
    (memory.fill (i32.const 0x10000) (i32.const 120) (i32.const 0x1000000))
    (if (i32.and (i32.eq (local.get $len) (i32.const 1))
                 (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 110)))
      (then (i32.store8 (i32.const 0x100ffff) (i32.const 10))))
    ;; iovec {0x10000, 16 MiB} at 0x100, nwritten at 0x108
    (i32.store (i32.const 0x100) (i32.const 0x10000))
    (i32.store (i32.const 0x104) (i32.const 0x1000000))
    (if (call $fd_write (i32.const 1) (i32.const 0x100) (i32.const 1) (i32.const 0x108))
      (then unreachable))
    (i32.const 0)))
