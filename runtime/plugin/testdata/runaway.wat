;; runaway: guests that would run (or sleep) far past any timeout, for the
;; tests of the instrumentation (package interrupt) through qrun. The first
;; body byte chooses:
;;   't' a tight loop: no calls, no memory writes, no globals of its own
;;   's' sleep an hour in WASI poll_oneoff
;;   'r' recursion without end
;;   'd' recursion 5000 calls deep, then ack
;;   'c' a 200,000-iteration hashing loop, then ack (BenchmarkLoopGuest)
;;   anything else: ack
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func $recurse (param i32) (result i32)
    (call $recurse (i32.add (local.get 0) (i32.const 1))))
  (func $deep (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (call $deep (i32.sub (local.get 0) (i32.const 1))))))
  (func $count (param i32) (result i32) (local i32)
    (loop $l
      ;; a multiplicative hash over the first KiB of memory, as a handler
      ;; hashing or parsing its message would
      (local.set 1 (i32.add (i32.mul (local.get 1) (i32.const 31))
        (i32.load8_u offset=1024 (i32.and (local.get 0) (i32.const 1023)))))
      (br_if $l (local.tee 0 (i32.sub (local.get 0) (i32.const 1)))))
    (local.get 1))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $op i32)
    (local.set $op (i32.load8_u (local.get $ptr)))
    (if (i32.eq (local.get $op) (i32.const 0x74)) ;; 't'
      (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $op) (i32.const 0x73)) ;; 's'
      (then
        ;; one clock subscription at 0x100: relative, monotonic, one hour
        (i64.store (i32.const 0x100) (i64.const 7))          ;; userdata
        (i32.store8 (i32.const 0x108) (i32.const 0))         ;; tag: clock
        (i32.store (i32.const 0x110) (i32.const 1))          ;; clock id: monotonic
        (i64.store (i32.const 0x118) (i64.const 3600000000000))
        (i64.store (i32.const 0x120) (i64.const 0))          ;; precision
        (i32.store16 (i32.const 0x128) (i32.const 0))        ;; flags: relative
        (drop (call $poll_oneoff (i32.const 0x100) (i32.const 0x200) (i32.const 1) (i32.const 0x300)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $op) (i32.const 0x72)) ;; 'r'
      (then (return (call $recurse (i32.const 0)))))
    (if (i32.eq (local.get $op) (i32.const 0x64)) ;; 'd'
      (then (return (call $deep (i32.const 5000)))))
    (if (i32.eq (local.get $op) (i32.const 0x63)) ;; 'c'
      (then (return (i32.and (call $count (i32.const 200000)) (i32.const 0)))))
    (i32.const 0)))
