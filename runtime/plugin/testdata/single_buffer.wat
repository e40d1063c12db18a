;; single_buffer: an allocator with room for exactly one buffer, which ABI.md
;; "Buffers" allows: the host frees the region it holds before asking for a
;; larger one. qrun_alloc returns 0 while the slot is taken (or for more than
;; 64 KiB); qrun_free traps unless given the region and size it handed out.
;; qrun_handle acks if the last body byte is 'z', and nacks otherwise.
(module
  (memory (export "memory") 2)
  (global $taken (mut i32) (i32.const 0))
  (global $size (mut i32) (i32.const 0))
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (if (i32.or (global.get $taken) (i32.gt_u (local.get $size) (i32.const 65536)))
      (then (return (i32.const 0))))
    (global.set $taken (i32.const 1))
    (global.set $size (local.get $size))
    (i32.const 65536))
  (func (export "qrun_free") (param $ptr i32) (param $size i32)
    (if (i32.or
          (i32.or (i32.eqz (global.get $taken)) (i32.ne (local.get $ptr) (i32.const 65536)))
          (i32.ne (local.get $size) (global.get $size)))
      (then unreachable))
    (global.set $taken (i32.const 0)))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
    (if (result i32)
      (i32.eq (i32.load8_u (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const 1))) (i32.const 122))
      (then (i32.const 0)) (else (i32.const 1)))))
