;; verdict: answers the verdict named by the first byte of the body, so one
;; test workload can produce every verdict in known numbers:
;;   "0..." ack, "1..." nack, "3..." dead-letter,
;;   "2..." requeue on the first attempt and ack on the next,
;;   anything else (and an empty body) ack.
;; Used by the metrics test in runtime/server.
(module
  (import "qrun" "msg_attempt" (func $attempt (result i32)))
  (memory (export "memory") 1)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $v i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const 0))))
    (local.set $v (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48)))
    ;; Not a digit 0-3: ack.
    (if (i32.gt_u (local.get $v) (i32.const 3)) (then (return (i32.const 0))))
    ;; Requeue once only, so the workload ends.
    (if (i32.and (i32.eq (local.get $v) (i32.const 2))
                 (i32.gt_s (call $attempt) (i32.const 1)))
      (then (return (i32.const 0))))
    (local.get $v)))
