;; log_loop: a message whose body starts with 'l' makes qrun_handle log one
;; line and then loop forever; any other is acked. The log line tells a test
;; that the guest call is running, so it can stop the call knowing it is
;; inside the guest rather than hoping a sleep was long enough.
(module
  (import "qrun" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "looping")
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const 0))))
    (if (i32.ne (i32.load8_u (local.get $ptr)) (i32.const 108)) ;; l
      (then (return (i32.const 0))))
    (drop (call $log (i32.const 1) (i32.const 16) (i32.const 7)))
    (loop $forever (br $forever))
    (i32.const 0)))
