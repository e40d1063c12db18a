;; ack.wat: the smallest useful qrun handler, by hand against abi/ABI.md:
;; it acknowledges every message and does nothing else. Use it to drain a
;; queue, or as the starting point of a handler written in WAT.
;;
;; Build: wat2wasm ack.wat -o ack.wasm
(module
  (memory (export "memory") 1)

  ;; "This module speaks ABI v1." Never called.
  (func (export "qrun_abi_v1"))

  ;; The host holds one body region at a time and gives it back (qrun_free)
  ;; before asking for a bigger one, so every region can start at 1024; memory
  ;; grows to fit, and 0 (out of memory) is returned past the memory_limit.
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (local $need i64)
    (local.set $need (i64.sub (i64.add (i64.const 1024) (i64.extend_i32_u (local.get $size)))
                              (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16))))
    (if (i64.gt_s (local.get $need) (i64.const 0))
      (then
        (if (i32.eq (i32.const -1)
              (memory.grow (i32.wrap_i64 (i64.shr_u (i64.add (local.get $need) (i64.const 65535)) (i64.const 16)))))
          (then (return (i32.const 0))))))
    (i32.const 1024))
  (func (export "qrun_free") (param i32 i32))

  ;; Verdict 0: ack.
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (i32.const 0)))
