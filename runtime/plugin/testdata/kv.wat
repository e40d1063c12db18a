;; kv: runs a script of key-value and state calls given as the message body,
;; for the kv_* and state_* tests. The body is a sequence of commands, each
;;   op u8, store_len u8, key_len u8, val_len u8, store, key, val
;; ops: g kv_get, v kv_version, s kv_set (ttl 0), t kv_set (ttl -1),
;; c kv_cas (val = version i64 LE, then the value), d kv_delete,
;; i kv_incr (val = delta i64 LE), a kv_add (val = delta i64 LE),
;; S state_set(val), G state_get,
;; p publish(queue = store, body = val), N return nack, X trap.
;; Command n leaves its i32 result at 0x100+4n, an i64 result (version,
;; incremented value) at 0x200+8n and the bytes read (get, state_get, cap
;; 0x40) at 0x1000+0x40n. The handler acks after the last command.
(module
  (import "qrun" "kv_get" (func $kv_get (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "qrun" "kv_version" (func $kv_version (param i32 i32 i32 i32) (result i64)))
  (import "qrun" "kv_set" (func $kv_set (param i32 i32 i32 i32 i32 i32 i64) (result i32)))
  (import "qrun" "kv_cas" (func $kv_cas (param i32 i32 i32 i32 i64 i32 i32 i64) (result i32)))
  (import "qrun" "kv_delete" (func $kv_delete (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "kv_incr" (func $kv_incr (param i32 i32 i32 i32 i64 i32) (result i32)))
  (import "qrun" "kv_add" (func $kv_add (param i32 i32 i32 i32 i64) (result i32)))
  (import "qrun" "state_get" (func $state_get (param i32 i32) (result i32)))
  (import "qrun" "state_set" (func $state_set (param i32 i32) (result i32)))
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "qrun_abi_v1"))
  (func (export "qrun_alloc") (param i32) (result i32) (i32.const 0x10000))
  (func (export "qrun_handle") (param $p i32) (param $len i32) (result i32)
    (local $end i32) (local $n i32) (local $op i32)
    (local $s i32) (local $sl i32) (local $k i32) (local $kl i32) (local $v i32) (local $vl i32)
    (local $r i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $op (i32.load8_u (local.get $p)))
        (local.set $sl (i32.load8_u offset=1 (local.get $p)))
        (local.set $kl (i32.load8_u offset=2 (local.get $p)))
        (local.set $vl (i32.load8_u offset=3 (local.get $p)))
        (local.set $s (i32.add (local.get $p) (i32.const 4)))
        (local.set $k (i32.add (local.get $s) (local.get $sl)))
        (local.set $v (i32.add (local.get $k) (local.get $kl)))
        (local.set $p (i32.add (local.get $v) (local.get $vl)))
        (local.set $r (i32.const 0))
        (if (i32.eq (local.get $op) (i32.const 0x4e)) (then (return (i32.const 1))))   ;; N
        (if (i32.eq (local.get $op) (i32.const 0x58)) (then unreachable))              ;; X
        (if (i32.eq (local.get $op) (i32.const 0x67))                                  ;; g
          (then (local.set $r (call $kv_get (local.get $s) (local.get $sl) (local.get $k) (local.get $kl)
            (i32.add (i32.const 0x1000) (i32.mul (local.get $n) (i32.const 0x40))) (i32.const 0x40)))))
        (if (i32.eq (local.get $op) (i32.const 0x76))                                  ;; v
          (then (i64.store (i32.add (i32.const 0x200) (i32.mul (local.get $n) (i32.const 8)))
            (call $kv_version (local.get $s) (local.get $sl) (local.get $k) (local.get $kl)))))
        (if (i32.eq (local.get $op) (i32.const 0x73))                                  ;; s
          (then (local.set $r (call $kv_set (local.get $s) (local.get $sl) (local.get $k) (local.get $kl)
            (local.get $v) (local.get $vl) (i64.const 0)))))
        (if (i32.eq (local.get $op) (i32.const 0x74))                                  ;; t
          (then (local.set $r (call $kv_set (local.get $s) (local.get $sl) (local.get $k) (local.get $kl)
            (local.get $v) (local.get $vl) (i64.const -1)))))
        (if (i32.eq (local.get $op) (i32.const 0x63))                                  ;; c
          (then (local.set $r (call $kv_cas (local.get $s) (local.get $sl) (local.get $k) (local.get $kl)
            (i64.load (local.get $v)) (i32.add (local.get $v) (i32.const 8)) (i32.sub (local.get $vl) (i32.const 8)) (i64.const 0)))))
        (if (i32.eq (local.get $op) (i32.const 0x64))                                  ;; d
          (then (local.set $r (call $kv_delete (local.get $s) (local.get $sl) (local.get $k) (local.get $kl)))))
        (if (i32.eq (local.get $op) (i32.const 0x69))                                  ;; i
          (then (local.set $r (call $kv_incr (local.get $s) (local.get $sl) (local.get $k) (local.get $kl)
            (i64.load (local.get $v)) (i32.add (i32.const 0x200) (i32.mul (local.get $n) (i32.const 8)))))))
        (if (i32.eq (local.get $op) (i32.const 0x61))                                  ;; a
          (then (local.set $r (call $kv_add (local.get $s) (local.get $sl) (local.get $k) (local.get $kl)
            (i64.load (local.get $v))))))
        (if (i32.eq (local.get $op) (i32.const 0x53))                                  ;; S
          (then (local.set $r (call $state_set (local.get $v) (local.get $vl)))))
        (if (i32.eq (local.get $op) (i32.const 0x47))                                  ;; G
          (then (local.set $r (call $state_get
            (i32.add (i32.const 0x1000) (i32.mul (local.get $n) (i32.const 0x40))) (i32.const 0x40)))))
        (if (i32.eq (local.get $op) (i32.const 0x70))                                  ;; p
          (then (local.set $r (call $publish (local.get $s) (local.get $sl) (local.get $v) (local.get $vl)
            (i32.const 0) (i32.const 0)))))
        (i32.store (i32.add (i32.const 0x100) (i32.mul (local.get $n) (i32.const 4))) (local.get $r))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.const 0)))
