;; badptr: qrun_handle passes an out-of-range (ptr, len) to the host function
;; selected by the first body byte; '0' acks. Memory is one page (0x10000).
;;   'l' log message ptr          'L' log with a negative length
;;   'f' msg_field buf            'F' msg_field buf straddling the end of memory
;;   'a' msg_attr key             'A' msg_attr buf
;;   'k' msg_attr_key buf
;;   'c' config_get key           'C' config_get buf with a negative cap
;;   'p' publish queue            'b' publish body          'P' publish attrs
(module
  (import "qrun" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "qrun" "msg_field" (func $msg_field (param i32 i32 i32) (result i32)))
  (import "qrun" "msg_attr" (func $msg_attr (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "msg_attr_key" (func $msg_attr_key (param i32 i32 i32) (result i32)))
  (import "qrun" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "audit")
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $c i32)
    (local.set $c (i32.load8_u (local.get $ptr)))
    (if (i32.eq (local.get $c) (i32.const 108)) ;; l
      (then (drop (call $log (i32.const 1) (i32.const 0xfffffff0) (i32.const 32)))))
    (if (i32.eq (local.get $c) (i32.const 76)) ;; L
      (then (drop (call $log (i32.const 1) (i32.const 0) (i32.const -1)))))
    (if (i32.eq (local.get $c) (i32.const 102)) ;; f
      (then (drop (call $msg_field (i32.const 0) (i32.const 0xfffffff0) (i32.const 32)))))
    (if (i32.eq (local.get $c) (i32.const 70)) ;; F
      (then (drop (call $msg_field (i32.const 0) (i32.const 0xfff0) (i32.const 0x100)))))
    (if (i32.eq (local.get $c) (i32.const 97)) ;; a
      (then (drop (call $msg_attr (i32.const 0xfffffff0) (i32.const 4) (i32.const 0x200) (i32.const 16)))))
    (if (i32.eq (local.get $c) (i32.const 65)) ;; A
      (then (drop (call $msg_attr (i32.const 0) (i32.const 1) (i32.const 0xffffff00) (i32.const 16)))))
    (if (i32.eq (local.get $c) (i32.const 107)) ;; k
      (then (drop (call $msg_attr_key (i32.const 0) (i32.const 0xffffff00) (i32.const 16)))))
    (if (i32.eq (local.get $c) (i32.const 99)) ;; c
      (then (drop (call $config_get (i32.const 0xfffffff0) (i32.const 4) (i32.const 0x200) (i32.const 16)))))
    (if (i32.eq (local.get $c) (i32.const 67)) ;; C
      (then (drop (call $config_get (i32.const 0) (i32.const 1) (i32.const 0x200) (i32.const -1)))))
    (if (i32.eq (local.get $c) (i32.const 112)) ;; p
      (then (drop (call $publish (i32.const 0xfffffff0) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))))
    (if (i32.eq (local.get $c) (i32.const 98)) ;; b
      (then (drop (call $publish (i32.const 0) (i32.const 5) (i32.const 0x10000) (i32.const 1) (i32.const 0) (i32.const 0)))))
    (if (i32.eq (local.get $c) (i32.const 80)) ;; P
      (then (drop (call $publish (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0xfffffff0) (i32.const 8)))))
    (i32.const 0)))
