;; reason: set_reason. The body is <verdict digit><mode><text>:
;;   mode 's' set_reason(text) -> RES        'S' set_reason("init"), then as 's'
;;   mode 'b' set_reason with a range past the end of memory (traps)
;;   mode 't' set_reason(text), then trap    'n' no call
;; and qrun_handle returns the verdict digit. qrun_init stores what
;; set_reason returns outside qrun_handle at INIT_RES.
;; Memory map: INIT_RES 0x100, RES 0x104, body region from 1024.
(module
  (import "qrun" "set_reason" (func $set_reason (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "init")
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $size) (i32.const 64512))
      (then (i32.const 0)) (else (i32.const 1024))))
  (func (export "qrun_init") (result i32)
    (i32.store (i32.const 0x100) (call $set_reason (i32.const 16) (i32.const 4)))
    (i32.const 0))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $mode i32)
    (local.set $mode (i32.load8_u (i32.add (local.get $ptr) (i32.const 1))))
    (if (i32.eq (local.get $mode) (i32.const 83)) ;; S
      (then
        (drop (call $set_reason (i32.const 16) (i32.const 4)))
        (local.set $mode (i32.const 115))))
    (if (i32.or (i32.eq (local.get $mode) (i32.const 115)) (i32.eq (local.get $mode) (i32.const 116))) ;; s t
      (then
        (i32.store (i32.const 0x104)
          (call $set_reason (i32.add (local.get $ptr) (i32.const 2)) (i32.sub (local.get $len) (i32.const 2))))))
    (if (i32.eq (local.get $mode) (i32.const 116)) (then unreachable)) ;; t
    (if (i32.eq (local.get $mode) (i32.const 98)) ;; b
      (then (drop (call $set_reason (i32.const 0xfff0) (i32.const 0x100)))))
    (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48))))
