;; WASI grants (abi/ABI.md section 6). Leaves at 0x100:
;;   0x100 environ_sizes_get's errno, 0x104 variable count, 0x108 bytes
;;   0x10c fd_prestat_dir_name(3)'s errno (length from fd_prestat_get), the name at 0x600
;;   0x110 path_open(3, "new.txt", O_CREAT, FD_WRITE)'s errno
;;   0x118 path_symlink("/etc" -> 3:"ln")'s errno
;;   0x11c path_open(3, "../escape.txt", O_CREAT, FD_WRITE)'s errno
;; and the environment "K=V\0..." at 0x400. Acks.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $dirname (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0x720) "/etc")
  (data (i32.const 0x730) "ln")
  (data (i32.const 0x740) "../escape.txt")
  (data (i32.const 0x700) "new.txt")
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $size) (i32.const 65536))
      (then (i32.const 0)) (else (i32.const 65536))))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0x100) (call $sizes (i32.const 0x104) (i32.const 0x108)))
    (drop (call $environ (i32.const 0x200) (i32.const 0x400)))
    (drop (call $prestat (i32.const 3) (i32.const 0x680)))
    (i32.store (i32.const 0x10c) (call $dirname (i32.const 3) (i32.const 0x600) (i32.load (i32.const 0x684))))
    (i32.store (i32.const 0x110) (call $open (i32.const 3) (i32.const 0) (i32.const 0x700) (i32.const 7)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 0x114)))
    (i32.store (i32.const 0x118) (call $symlink (i32.const 0x720) (i32.const 4) (i32.const 3) (i32.const 0x730) (i32.const 2)))
    (i32.store (i32.const 0x11c) (call $open (i32.const 3) (i32.const 0) (i32.const 0x740) (i32.const 13)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 0x114)))
    (i32.const 0)))
