;; ok: the main test module. It uses every host function of ABI v1 and
;; chooses what to do from the first byte of the message body:
;;   '0'..'3' return that verdict      'x' bad verdict 7
;;   't' trap (unreachable)            'l' infinite loop
;;   'm' grow memory until refused, then trap
;;   'f'<n> msg_field n -> RES, value at OUT      's' msg_field 0 into a 2-byte buffer
;;   'a'<key> msg_attr -> RES, OUT                'k'<n> msg_attr_key n -> RES, OUT
;;   'c'<key> config_get -> RES, OUT              'n' attempt, enqueued_at, now -> RES, RES+8, RES+16
;;   'p'<queue> publish "payload" with attrs {k: v1, empty: ""}; verdict 0 if it
;;              returned 0, 3 if -3 (denied), 1 otherwise; code -> RES
;;   'q'<queue> publish with a truncated attrs encoding -> RES
;;   'z'<queue> publish an empty body without attrs -> RES
;;   'y'<queue> publish "payload" with attrs {qrun.priority: "9"} -> RES
;;   'Y'<queue> publish "payload" with attrs {qrun.priority: "300"} -> RES
;;   'd' set_delay(1500) -> RES, verdict requeue    'D' set_delay(-1) -> RES, verdict nack
;;   'e' extend_lease(2000) -> RES                  'E' extend_lease(-5) -> RES
;;   'H' set_delay(max i64) -> RES, verdict requeue 'L' extend_lease(max i64) -> RES
;;   'g'<level><text> log -> RES                    'w' write "hello from wasi\n" to stdout -> RES
;;   'r' random_get 16 bytes into OUT -> RES        'X' proc_exit(3)
;; Memory map: RES 0x100, INIT_ATTEMPT 0x118, INIT_CFG 0x11c, INITIALIZED 0x120,
;; ALLOC_CALLS 0x124, INIT_PUBLISH 0x128, OUT 0x200 (256 bytes), INIT_OUT 0x400,
;; heap from 0x10000.
(module
  (import "qrun" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "qrun" "msg_field" (func $msg_field (param i32 i32 i32) (result i32)))
  (import "qrun" "msg_attempt" (func $msg_attempt (result i32)))
  (import "qrun" "msg_enqueued_at" (func $msg_enqueued_at (result i64)))
  (import "qrun" "msg_attr" (func $msg_attr (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "msg_attr_key" (func $msg_attr_key (param i32 i32 i32) (result i32)))
  (import "qrun" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "qrun" "set_delay" (func $set_delay (param i64) (result i32)))
  (import "qrun" "extend_lease" (func $extend_lease (param i64) (result i32)))
  (import "qrun" "now" (func $now (result i64)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x10000))

  (data (i32.const 0x00) "payload")
  ;; {"k": "v1", "empty": ""}
  (data (i32.const 0x10) "\01\00\00\00k\02\00\00\00v1\05\00\00\00empty\00\00\00\00")
  ;; a key length of 5 with one byte of key: truncated
  (data (i32.const 0x30) "\05\00\00\00k")
  (data (i32.const 0x38) "greeting")
  (data (i32.const 0x40) "hello from wasi\n")
  (data (i32.const 0x50) "init ran")
  (data (i32.const 0x60) "\0d\00\00\00qrun.priority\01\00\00\009")
  (data (i32.const 0x80) "\0d\00\00\00qrun.priority\03\00\00\00300")

  (func (export "qrun_abi_v1"))

  (func (export "_initialize")
    (i32.store (i32.const 0x120) (i32.const 1)))

  (func (export "qrun_init") (result i32)
    (i32.store (i32.const 0x118) (call $msg_attempt))
    (i32.store (i32.const 0x11c) (call $config_get (i32.const 0x38) (i32.const 8) (i32.const 0x400) (i32.const 256)))
    (drop (call $log (i32.const 1) (i32.const 0x50) (i32.const 8)))
    ;; publish is refused outside qrun_handle
    (i32.store (i32.const 0x128)
      (call $publish (i32.const 0x38) (i32.const 8) (i32.const 0) (i32.const 7) (i32.const 0) (i32.const 0)))
    ;; refuse to start if the host skipped _initialize
    (i32.eqz (i32.load (i32.const 0x120))))

  ;; bump allocator; grows memory when needed, 0 when it cannot
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (i32.store (i32.const 0x124) (i32.add (i32.load (i32.const 0x124)) (i32.const 1)))
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535)) (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $p))

  (func (export "qrun_free") (param i32 i32))

  (func $arg (param $ptr i32) (result i32)
    (i32.sub (i32.load8_u offset=1 (local.get $ptr)) (i32.const 48)))

  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $c i32) (local $rc i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const 0))))
    (local.set $c (i32.load8_u (local.get $ptr)))
    (if (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 51)))
      (then (return (i32.sub (local.get $c) (i32.const 48)))))
    (if (i32.eq (local.get $c) (i32.const 120)) ;; x
      (then (return (i32.const 7))))
    (if (i32.eq (local.get $c) (i32.const 116)) ;; t
      (then unreachable))
    (if (i32.eq (local.get $c) (i32.const 108)) ;; l
      (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $c) (i32.const 109)) ;; m
      (then
        (block $refused
          (loop $more
            (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
            (br $more)))
        unreachable))
    (if (i32.eq (local.get $c) (i32.const 102)) ;; f
      (then
        (i32.store (i32.const 0x100)
          (call $msg_field (call $arg (local.get $ptr)) (i32.const 0x200) (i32.const 256)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 115)) ;; s
      (then
        (i32.store (i32.const 0x100)
          (call $msg_field (i32.const 0) (i32.const 0x200) (i32.const 2)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 97)) ;; a
      (then
        (i32.store (i32.const 0x100)
          (call $msg_attr
            (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
            (i32.const 0x200) (i32.const 256)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 107)) ;; k
      (then
        (i32.store (i32.const 0x100)
          (call $msg_attr_key (call $arg (local.get $ptr)) (i32.const 0x200) (i32.const 256)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 99)) ;; c
      (then
        (i32.store (i32.const 0x100)
          (call $config_get
            (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
            (i32.const 0x200) (i32.const 256)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 110)) ;; n
      (then
        (i32.store (i32.const 0x100) (call $msg_attempt))
        (i64.store (i32.const 0x108) (call $msg_enqueued_at))
        (i64.store (i32.const 0x110) (call $now))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 112)) ;; p
      (then
        (local.set $rc
          (call $publish
            (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
            (i32.const 0x00) (i32.const 7)
            (i32.const 0x10) (i32.const 24)))
        (i32.store (i32.const 0x100) (local.get $rc))
        (if (i32.eqz (local.get $rc)) (then (return (i32.const 0))))
        (if (i32.eq (local.get $rc) (i32.const -3)) (then (return (i32.const 3))))
        (return (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 113)) ;; q
      (then
        (i32.store (i32.const 0x100)
          (call $publish
            (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
            (i32.const 0x00) (i32.const 7)
            (i32.const 0x30) (i32.const 5)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 121)) ;; y
      (then
        (i32.store (i32.const 0x100)
          (call $publish
            (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
            (i32.const 0x00) (i32.const 7)
            (i32.const 0x60) (i32.const 22)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 89)) ;; Y
      (then
        (i32.store (i32.const 0x100)
          (call $publish
            (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
            (i32.const 0x00) (i32.const 7)
            (i32.const 0x80) (i32.const 24)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 122)) ;; z
      (then
        (i32.store (i32.const 0x100)
          (call $publish
            (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
            (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 100)) ;; d
      (then
        (i32.store (i32.const 0x100) (call $set_delay (i64.const 1500)))
        (return (i32.const 2))))
    (if (i32.eq (local.get $c) (i32.const 68)) ;; D
      (then
        (i32.store (i32.const 0x100) (call $set_delay (i64.const -1)))
        (return (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 101)) ;; e
      (then
        (i32.store (i32.const 0x100) (call $extend_lease (i64.const 2000)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 69)) ;; E
      (then
        (i32.store (i32.const 0x100) (call $extend_lease (i64.const -5)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 72)) ;; H
      (then
        (i32.store (i32.const 0x100) (call $set_delay (i64.const 0x7fffffffffffffff)))
        (return (i32.const 2))))
    (if (i32.eq (local.get $c) (i32.const 76)) ;; L
      (then
        (i32.store (i32.const 0x100) (call $extend_lease (i64.const 0x7fffffffffffffff)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 103)) ;; g
      (then
        (i32.store (i32.const 0x100)
          (call $log (call $arg (local.get $ptr))
            (i32.add (local.get $ptr) (i32.const 2)) (i32.sub (local.get $len) (i32.const 2))))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 119)) ;; w
      (then
        ;; iovec {buf 0x40, len 16} at 0x130, nwritten at 0x138
        (i32.store (i32.const 0x130) (i32.const 0x40))
        (i32.store (i32.const 0x134) (i32.const 16))
        (i32.store (i32.const 0x100)
          (call $fd_write (i32.const 1) (i32.const 0x130) (i32.const 1) (i32.const 0x138)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 114)) ;; r
      (then
        (i32.store (i32.const 0x100) (call $random_get (i32.const 0x200) (i32.const 16)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 88)) ;; X
      (then (call $proc_exit (i32.const 3))))
    (i32.const 0)))
