;; runaway: guests that never finish on their own (TestStopsRunaways,
;; TestDepthBound). Each endless one calls
;; env.started once it is under way.
(module
  (import "env" "started" (func $started))
  ;; a tight loop: no calls, no memory, no globals of its own
  (func (export "spin")
    (call $started)
    (loop $l (br $l)))
  ;; tail-call recursion: no loop instruction at all
  (func $tail (export "tail")
    (call $started)
    (return_call $tail_rest))
  (func $tail_rest (return_call $tail_rest))
  (func (export "mutual_tail") (call $started) (return_call $a))
  (func $a (return_call $b))
  (func $b (return_call $a))
  ;; unbounded and bounded recursion
  (func $recurse (export "recurse") (param i32) (result i32)
    (call $recurse (i32.add (local.get 0) (i32.const 1))))
  (func $recurse_to (export "recurse_to") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (call $recurse_to (i32.sub (local.get 0) (i32.const 1)))))))
