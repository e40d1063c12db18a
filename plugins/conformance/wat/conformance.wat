;; The WAT module of qrun's ABI conformance suite: the scripted behaviour of
;; plugins/conformance/README.md, by hand against abi/ABI.md with no SDK.
;;
;; Memory map (4 pages to start):
;;        0 ..    15  unused, so that no valid data lives at address 0
;;       16 ..   511  string constants
;;     1024 ..  1055  decimal formatting scratch (digits end at 1056)
;;     1064 ..  1071  kv_incr's result (an i64)
;;    65504 .. 65535  "init failed: refused by config: ", so that a config
;;                    value read into VBUF right after it completes the line
;;    65536 .. 131071 VBUF: values read from the host (64 KiB)
;;   131072 .. 196607 EBUF: attribute encoding for "echo" (64 KiB)
;;   196608 ..        heap for qrun_alloc (message bodies), grown on demand
(module
  (import "qrun" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "qrun" "msg_field" (func $msg_field (param i32 i32 i32) (result i32)))
  (import "qrun" "msg_attempt" (func $msg_attempt (result i32)))
  (import "qrun" "msg_attr" (func $msg_attr (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "msg_attr_key" (func $msg_attr_key (param i32 i32 i32) (result i32)))
  (import "qrun" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "publish" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "qrun" "set_delay" (func $set_delay (param i64) (result i32)))
  (import "qrun" "set_reason" (func $set_reason (param i32 i32) (result i32)))
  (import "qrun" "extend_lease" (func $extend_lease (param i64) (result i32)))
  (import "qrun" "http_request" (func $http_request (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "qrun" "http_response_body" (func $http_response_body (param i32 i32) (result i32)))
  (import "qrun" "http_response_header" (func $http_response_header (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "kv_get" (func $kv_get (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "qrun" "kv_version" (func $kv_version (param i32 i32 i32 i32) (result i64)))
  (import "qrun" "kv_set" (func $kv_set (param i32 i32 i32 i32 i32 i32 i64) (result i32)))
  (import "qrun" "kv_cas" (func $kv_cas (param i32 i32 i32 i32 i64 i32 i32 i64) (result i32)))
  (import "qrun" "kv_delete" (func $kv_delete (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "kv_incr" (func $kv_incr (param i32 i32 i32 i32 i64 i32) (result i32)))
  (import "qrun" "kv_add" (func $kv_add (param i32 i32 i32 i32 i64) (result i32)))
  (import "qrun" "state_get" (func $state_get (param i32 i32) (result i32)))
  (import "qrun" "state_set" (func $state_set (param i32 i32) (result i32)))

  (memory (export "memory") 4)

  (data (i32.const 16) "verdict")    ;; 7
  (data (i32.const 24) "trap")       ;; 4
  (data (i32.const 32) "echo")       ;; 4
  (data (i32.const 40) "attr")       ;; 4
  (data (i32.const 48) "config")     ;; 6
  (data (i32.const 56) "id")         ;; 2
  (data (i32.const 64) "attempt")    ;; 7
  (data (i32.const 72) "delay")      ;; 5
  (data (i32.const 80) "pub")        ;; 3
  (data (i32.const 88) "log")        ;; 3
  (data (i32.const 96) "count")      ;; 5
  (data (i32.const 104) "out")       ;; 3
  (data (i32.const 112) "<absent>")  ;; 8
  (data (i32.const 120) "ok")        ;; 2
  (data (i32.const 128) "denied")    ;; 6
  (data (i32.const 136) "error")     ;; 5
  (data (i32.const 144) "refuse")    ;; 6
  (data (i32.const 152) "x")         ;; 1
  (data (i32.const 160) "extend")    ;; 6
  (data (i32.const 168) "http")      ;; 4
  (data (i32.const 176) "httpmany")  ;; 8
  (data (i32.const 184) "toolarge")  ;; 8
  (data (i32.const 192) "timeout")   ;; 7
  (data (i32.const 200) "connect")   ;; 7
  (data (i32.const 208) "limit")     ;; 5
  (data (i32.const 216) "POST")      ;; 4
  ;; one header in the pair encoding: X-Guest: yes
  (data (i32.const 224) "\07\00\00\00X-Guest\03\00\00\00yes") ;; 18
  (data (i32.const 248) "ping")      ;; 4
  (data (i32.const 256) "retry")     ;; 5
  (data (i32.const 264) "Retry-After") ;; 11
  (data (i32.const 280) "deadreason") ;; 10
  (data (i32.const 296) "nackreason") ;; 10
  (data (i32.const 312) "kvget")     ;; 5
  (data (i32.const 320) "kvset")     ;; 5
  (data (i32.const 328) "kvttl")     ;; 5
  (data (i32.const 336) "kvver")     ;; 5
  (data (i32.const 344) "kvcas")     ;; 5
  (data (i32.const 352) "kvdel")     ;; 5
  (data (i32.const 360) "kvincr")    ;; 6
  (data (i32.const 368) "kvrw")      ;; 4
  (data (i32.const 376) "kvother")   ;; 7
  (data (i32.const 384) "state")     ;; 5
  (data (i32.const 392) "kv")        ;; 2: the store the consumer is granted
  (data (i32.const 396) "k")         ;; 1: the key the commands use
  (data (i32.const 400) "t")         ;; 1
  (data (i32.const 404) "cas")       ;; 3
  (data (i32.const 408) "other")     ;; 5: a store the consumer is not granted
  (data (i32.const 416) "invalid")   ;; 7
  (data (i32.const 424) "conflict")  ;; 8
  (data (i32.const 432) "unsupported") ;; 11
  (data (i32.const 448) "kvadd")     ;; 5
  (data (i32.const 456) "kvaddget")  ;; 8
  (data (i32.const 65504) "init failed: refused by config: ") ;; 32

  (global $count (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 196608))

  (func (export "qrun_abi_v1"))

  ;; Bump allocator with growth, as in plugins/examples/wat/forward.
  (func $alloc (export "qrun_alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i64) (local $have i64)
    (local.set $ptr (global.get $heap))
    (local.set $end (i64.add (i64.extend_i32_u (local.get $ptr)) (i64.extend_i32_u (local.get $size))))
    (local.set $have (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
    (if (i64.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq (i32.const -1)
              (memory.grow (i32.wrap_i64
                (i64.shr_u (i64.add (i64.sub (local.get $end) (local.get $have)) (i64.const 65535))
                           (i64.const 16)))))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.wrap_i64 (local.get $end)))
    (local.get $ptr))

  ;; Only the most recent region can be given back (stack order).
  (func $free (export "qrun_free") (param $ptr i32) (param $size i32)
    (if (i32.eq (i32.add (local.get $ptr) (local.get $size)) (global.get $heap))
      (then (global.set $heap (local.get $ptr)))))

  ;; Config "refuse" set: log why and refuse the instance.
  (func (export "qrun_init") (result i32)
    (local $n i32)
    (local.set $n (call $config_get (i32.const 144) (i32.const 6) (i32.const 65536) (i32.const 65536)))
    (if (i32.eq (local.get $n) (i32.const -2)) (then (return (i32.const 0))))
    (if (i32.gt_u (local.get $n) (i32.const 65536)) (then (return (i32.const 1))))
    (drop (call $log (i32.const 3) (i32.const 65504) (i32.add (i32.const 32) (local.get $n))))
    (i32.const 1))

  ;; $eq: do [a, a+al) and [b, b+bl) hold the same bytes?
  (func $eq (param $a i32) (param $al i32) (param $b i32) (param $bl i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $al) (local.get $bl)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $al)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; $parse_ok is set by $parse_int: 1 if [p, p+l) was an optionally
  ;; negative decimal of at most 18 digits.
  (global $parse_ok (mut i32) (i32.const 0))
  (func $parse_int (param $p i32) (param $l i32) (result i64)
    (local $i i32) (local $neg i32) (local $v i64) (local $c i32)
    (global.set $parse_ok (i32.const 0))
    (if (i32.and (i32.gt_u (local.get $l) (i32.const 1))
                 (i32.eq (i32.load8_u (local.get $p)) (i32.const 45)))
      (then (local.set $neg (i32.const 1)) (local.set $i (i32.const 1))))
    (if (i32.or (i32.ge_u (local.get $i) (local.get $l))
                (i32.gt_u (i32.sub (local.get $l) (local.get $i)) (i32.const 18)))
      (then (return (i64.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $l)))
        (local.set $c (i32.sub (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 48)))
        (if (i32.gt_u (local.get $c) (i32.const 9)) (then (return (i64.const 0))))
        (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10)) (i64.extend_i32_u (local.get $c))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (global.set $parse_ok (i32.const 1))
    (select (i64.sub (i64.const 0) (local.get $v)) (local.get $v) (local.get $neg)))

  ;; $fmt writes v in decimal so that it ends at 1056 and returns where it
  ;; starts; the length is 1056 minus that.
  (func $fmt (param $v i32) (result i32)
    (local $p i32)
    (local.set $p (i32.const 1056))
    (loop $next
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $next (i32.ne (local.get $v) (i32.const 0))))
    (local.get $p))

  ;; $out publishes [p, p+l) to queue "out": ack, or nack if that failed.
  (func $out (param $p i32) (param $l i32) (result i32)
    (i32.ne (call $publish (i32.const 104) (i32.const 3) (local.get $p) (local.get $l) (i32.const 0) (i32.const 0))
            (i32.const 0)))

  (func $out_num (param $v i32) (result i32)
    (local $p i32)
    (local.set $p (call $fmt (local.get $v)))
    (call $out (local.get $p) (i32.sub (i32.const 1056) (local.get $p))))

  ;; $out_value publishes the value a host call left in VBUF (n bytes), or
  ;; "<absent>" for -2; nack for other errors or a value over 64 KiB.
  (func $out_value (param $n i32) (result i32)
    (if (i32.eq (local.get $n) (i32.const -2))
      (then (return (call $out (i32.const 112) (i32.const 8)))))
    (if (i32.gt_u (local.get $n) (i32.const 65536)) (then (return (i32.const 1))))
    (call $out (i32.const 65536) (local.get $n)))

  ;; $echo publishes [p, p+l) to "out" with every attribute of the message,
  ;; encoded straight into EBUF by the host calls.
  (func $echo (param $p i32) (param $l i32) (result i32)
    (local $i i32) (local $at i32) (local $n i32) (local $key i32)
    (local.set $at (i32.const 131072))
    (block $done
      (loop $next
        ;; key: written after its 4-byte length slot
        (local.set $n (call $msg_attr_key (local.get $i) (i32.add (local.get $at) (i32.const 4))
                        (i32.sub (i32.const 196604) (local.get $at))))
        (br_if $done (i32.eq (local.get $n) (i32.const -2)))
        (if (i32.gt_u (local.get $n) (i32.sub (i32.const 196604) (local.get $at)))
          (then (return (i32.const 1))))
        (i32.store (local.get $at) (local.get $n))
        (local.set $key (i32.add (local.get $at) (i32.const 4)))
        (local.set $at (i32.add (local.get $key) (local.get $n)))
        ;; value
        (local.set $n (call $msg_attr (local.get $key) (i32.load (i32.sub (local.get $key) (i32.const 4)))
                        (i32.add (local.get $at) (i32.const 4)) (i32.sub (i32.const 196604) (local.get $at))))
        (if (i32.gt_u (local.get $n) (i32.sub (i32.const 196604) (local.get $at)))
          (then (return (i32.const 1))))
        (i32.store (local.get $at) (local.get $n))
        (local.set $at (i32.add (local.get $at) (i32.add (i32.const 4) (local.get $n))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.ne (call $publish (i32.const 104) (i32.const 3) (local.get $p) (local.get $l)
                           (i32.const 131072) (i32.sub (local.get $at) (i32.const 131072)))
            (i32.const 0)))

  ;; $out_err publishes the script's word for a failed http_request.
  (func $out_err (param $r i32) (result i32)
    (if (i32.eq (local.get $r) (i32.const -3)) (then (return (call $out (i32.const 128) (i32.const 6)))))
    (if (i32.eq (local.get $r) (i32.const -7)) (then (return (call $out (i32.const 184) (i32.const 8)))))
    (if (i32.eq (local.get $r) (i32.const -9)) (then (return (call $out (i32.const 192) (i32.const 7)))))
    (if (i32.eq (local.get $r) (i32.const -10)) (then (return (call $out (i32.const 200) (i32.const 7)))))
    (if (i32.eq (local.get $r) (i32.const -11)) (then (return (call $out (i32.const 208) (i32.const 5)))))
    (call $out (i32.const 136) (i32.const 5)))

  ;; $http POSTs "ping" with X-Guest: yes to the URL [p, p+l) and publishes
  ;; the status, then the body. The body's length comes from a call with an
  ;; empty buffer; a region of that size from the heap then receives it
  ;; (the request is not sent again), and goes back to the heap after.
  (func $http (param $p i32) (param $l i32) (result i32)
    (local $s i32) (local $n i32) (local $buf i32) (local $v i32)
    (local.set $s (call $http_request (i32.const 216) (i32.const 4) (local.get $p) (local.get $l)
                                      (i32.const 224) (i32.const 18) (i32.const 248) (i32.const 4)))
    (if (i32.lt_s (local.get $s) (i32.const 0)) (then (return (call $out_err (local.get $s)))))
    (if (call $out_num (local.get $s)) (then (return (i32.const 1))))
    (local.set $n (call $http_response_body (i32.const 0) (i32.const 0)))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i32.const 1))))
    (local.set $buf (call $alloc (local.get $n)))
    (if (i32.eqz (local.get $buf)) (then (return (i32.const 1))))
    (drop (call $http_response_body (local.get $buf) (local.get $n)))
    (local.set $v (call $out (local.get $buf) (local.get $n)))
    (call $free (local.get $buf) (local.get $n))
    (local.get $v))

;; $retry GETs the URL: ack on 2xx, otherwise nack, after a Retry-After
  ;; of seconds when the response has one (ABI.md section 10's recipe).
  (func $retry (param $p i32) (param $l i32) (result i32)
    (local $s i32) (local $n i32) (local $i i32) (local $d i32) (local $secs i64)
    (local.set $s (call $http_request (i32.const 0) (i32.const 0) (local.get $p) (local.get $l)
                                      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
    (if (i32.lt_s (local.get $s) (i32.const 0)) (then (return (i32.const 1))))
    (if (i32.lt_u (i32.sub (local.get $s) (i32.const 200)) (i32.const 100)) (then (return (i32.const 0))))
    (if (i32.and (i32.ne (local.get $s) (i32.const 429)) (i32.ne (local.get $s) (i32.const 503)))
      (then (return (i32.const 1))))
    (local.set $n (call $http_response_header (i32.const 264) (i32.const 11) (i32.const 1024) (i32.const 32)))
    (if (i32.and (i32.gt_s (local.get $n) (i32.const 0)) (i32.le_s (local.get $n) (i32.const 9)))
      (then
        (block $bad
          (loop $digit
            (local.set $d (i32.sub (i32.load8_u (i32.add (i32.const 1024) (local.get $i))) (i32.const 48)))
            (br_if $bad (i32.gt_u (local.get $d) (i32.const 9)))
            (local.set $secs (i64.add (i64.mul (local.get $secs) (i64.const 10)) (i64.extend_i32_u (local.get $d))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $digit (i32.lt_u (local.get $i) (local.get $n))))
          (drop (call $set_delay (i64.mul (local.get $secs) (i64.const 1000)))))))
    (i32.const 1))

  ;; $httpmany GETs the URL until a request fails, then publishes how many
  ;; succeeded and the failure's word.
  (func $httpmany (param $p i32) (param $l i32) (result i32)
    (local $n i32) (local $s i32)
    (block $done
      (loop $next
        (local.set $s (call $http_request (i32.const 0) (i32.const 0) (local.get $p) (local.get $l)
                                          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
        (br_if $done (i32.lt_s (local.get $s) (i32.const 0)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (if (call $out_num (local.get $n)) (then (return (i32.const 1))))
    (call $out_err (local.get $s)))

  ;; $fmt64 is $fmt for a signed i64.
  (func $fmt64 (param $v i64) (result i32)
    (local $p i32) (local $neg i32) (local $u i64)
    (local.set $neg (i64.lt_s (local.get $v) (i64.const 0)))
    (local.set $u (select (i64.sub (i64.const 0) (local.get $v)) (local.get $v) (local.get $neg)))
    (local.set $p (i32.const 1056))
    (loop $next
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $u) (i64.const 10))))
      (local.set $u (i64.div_u (local.get $u) (i64.const 10)))
      (br_if $next (i64.ne (local.get $u) (i64.const 0))))
    (if (local.get $neg)
      (then
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (i32.store8 (local.get $p) (i32.const 45))))
    (local.get $p))

  (func $out_num64 (param $v i64) (result i32)
    (local $p i32)
    (local.set $p (call $fmt64 (local.get $v)))
    (call $out (local.get $p) (i32.sub (i32.const 1056) (local.get $p))))

  ;; $out_kv_err publishes the script's word for a failed store or state call.
  (func $out_kv_err (param $r i32) (result i32)
    (if (i32.eq (local.get $r) (i32.const -3)) (then (return (call $out (i32.const 128) (i32.const 6)))))
    (if (i32.eq (local.get $r) (i32.const -4)) (then (return (call $out (i32.const 416) (i32.const 7)))))
    (if (i32.eq (local.get $r) (i32.const -7)) (then (return (call $out (i32.const 184) (i32.const 8)))))
    (if (i32.eq (local.get $r) (i32.const -12)) (then (return (call $out (i32.const 424) (i32.const 8)))))
    (if (i32.eq (local.get $r) (i32.const -13)) (then (return (call $out (i32.const 432) (i32.const 11)))))
    (call $out (i32.const 136) (i32.const 5)))

  ;; $out_ok publishes "ok" for 0, else the word.
  (func $out_ok (param $r i32) (result i32)
    (if (i32.eqz (local.get $r)) (then (return (call $out (i32.const 120) (i32.const 2)))))
    (call $out_kv_err (local.get $r)))

  ;; $out_read publishes a value kv_get or state_get left in VBUF (n bytes),
  ;; "<absent>" for -2, or the word of another error.
  (func $out_read (param $n i32) (result i32)
    (if (i32.lt_s (local.get $n) (i32.const -2)) (then (return (call $out_kv_err (local.get $n)))))
    (call $out_value (local.get $n)))

  ;; $kv runs the store and state commands on cmd [c, c+cl) and arg
  ;; [p, p+l); -1 for any other command.
  (func $kv (param $c i32) (param $cl i32) (param $p i32) (param $l i32) (result i32)
    (local $v i64) (local $r i32)
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 312) (i32.const 5))
      (then (return (call $out_read
        (call $kv_get (i32.const 392) (i32.const 2) (local.get $p) (local.get $l) (i32.const 65536) (i32.const 65536))))))
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 320) (i32.const 5))
      (then (return (call $out_ok
        (call $kv_set (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (local.get $p) (local.get $l) (i64.const 0))))))
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 328) (i32.const 5))
      (then
        (local.set $v (call $parse_int (local.get $p) (local.get $l)))
        (if (i32.eqz (global.get $parse_ok)) (then (return (i32.const 3))))
        (return (call $out_ok
          (call $kv_set (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (i32.const 400) (i32.const 1) (local.get $v))))))
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 336) (i32.const 5))
      (then
        (local.set $v (call $kv_version (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1)))
        (if (i64.lt_s (local.get $v) (i64.const 0))
          (then (return (call $out_kv_err (i32.wrap_i64 (local.get $v))))))
        (return (call $out_num64 (local.get $v)))))
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 344) (i32.const 5))
      (then
        (local.set $v (call $parse_int (local.get $p) (local.get $l)))
        (if (i32.eqz (global.get $parse_ok)) (then (return (i32.const 3))))
        (return (call $out_ok
          (call $kv_cas (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (local.get $v)
                        (i32.const 404) (i32.const 3) (i64.const 0))))))
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 352) (i32.const 5))
      (then (return (call $out_ok
        (call $kv_delete (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1))))))
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 360) (i32.const 6))
      (then
        (local.set $v (call $parse_int (local.get $p) (local.get $l)))
        (if (i32.eqz (global.get $parse_ok)) (then (return (i32.const 3))))
        (local.set $r (call $kv_incr (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (local.get $v) (i32.const 1064)))
        (if (i32.lt_s (local.get $r) (i32.const 0)) (then (return (call $out_kv_err (local.get $r)))))
        (return (call $out_num64 (i64.load (i32.const 1064))))))
    ;; kvadd:DELTA adds, publishing "ok" or the word.
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 448) (i32.const 5))
      (then
        (local.set $v (call $parse_int (local.get $p) (local.get $l)))
        (if (i32.eqz (global.get $parse_ok)) (then (return (i32.const 3))))
        (return (call $out_ok
          (call $kv_add (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (local.get $v))))))
    ;; kvaddget:DELTA adds as kvadd does, then publishes what reading k returns.
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 456) (i32.const 8))
      (then
        (local.set $v (call $parse_int (local.get $p) (local.get $l)))
        (if (i32.eqz (global.get $parse_ok)) (then (return (i32.const 3))))
        (local.set $r (call $out_ok
          (call $kv_add (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (local.get $v))))
        (if (local.get $r) (then (return (local.get $r))))
        (return (call $out_read
          (call $kv_get (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (i32.const 65536) (i32.const 65536))))))
    ;; kvrw: a write, then a read that must see it.
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 368) (i32.const 4))
      (then
        (local.set $r (call $kv_set (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (local.get $p) (local.get $l) (i64.const 0)))
        (if (i32.lt_s (local.get $r) (i32.const 0)) (then (return (call $out_kv_err (local.get $r)))))
        (return (call $out_read
          (call $kv_get (i32.const 392) (i32.const 2) (i32.const 396) (i32.const 1) (i32.const 65536) (i32.const 65536))))))
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 376) (i32.const 7))
      (then (return (call $out_read
        (call $kv_get (i32.const 408) (i32.const 5) (i32.const 396) (i32.const 1) (i32.const 65536) (i32.const 65536))))))
    ;; state:TEXT publishes the state, replaces it with TEXT, and nacks.
    (if (call $eq (local.get $c) (local.get $cl) (i32.const 384) (i32.const 5))
      (then
        (if (i32.eqz (call $out_read (call $state_get (i32.const 65536) (i32.const 65536))))
          (then (drop (call $out_ok (call $state_set (local.get $p) (local.get $l))))))
        (return (i32.const 1))))
    (i32.const -1))

  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $i i32) (local $cl i32) (local $arg i32) (local $al i32) (local $v i64) (local $r i32)
    ;; cmd = [ptr, ptr+cl), arg = [arg, arg+al): split at the first ':'.
    (local.set $cl (local.get $len))
    (local.set $arg (i32.add (local.get $ptr) (local.get $len)))
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eq (i32.load8_u (i32.add (local.get $ptr) (local.get $i))) (i32.const 58))
          (then
            (local.set $cl (local.get $i))
            (local.set $arg (i32.add (i32.add (local.get $ptr) (local.get $i)) (i32.const 1)))
            (local.set $al (i32.sub (i32.sub (local.get $len) (local.get $i)) (i32.const 1)))
            (br $found)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))

    ;; verdict:N returns N, bad verdicts included.
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 16) (i32.const 7))
      (then
        (local.set $v (call $parse_int (local.get $arg) (local.get $al)))
        (if (i32.eqz (global.get $parse_ok)) (then (return (i32.const 3))))
        (return (i32.wrap_i64 (local.get $v)))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 24) (i32.const 4))
      (then unreachable))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 32) (i32.const 4))
      (then (return (call $echo (local.get $arg) (local.get $al)))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 40) (i32.const 4))
      (then (return (call $out_value
        (call $msg_attr (local.get $arg) (local.get $al) (i32.const 65536) (i32.const 65536))))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 48) (i32.const 6))
      (then (return (call $out_value
        (call $config_get (local.get $arg) (local.get $al) (i32.const 65536) (i32.const 65536))))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 56) (i32.const 2))
      (then (return (call $out_value
        (call $msg_field (i32.const 0) (i32.const 65536) (i32.const 65536))))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 64) (i32.const 7))
      (then (return (call $out_num (call $msg_attempt)))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 72) (i32.const 5))
      (then
        (local.set $v (call $parse_int (local.get $arg) (local.get $al)))
        (if (i32.eqz (global.get $parse_ok)) (then (return (i32.const 3))))
        (drop (call $set_delay (local.get $v)))
        (return (i32.const 1))))
    ;; deadreason:TEXT and nackreason:TEXT: the reason, then the verdict.
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 280) (i32.const 10))
      (then
        (drop (call $set_reason (local.get $arg) (local.get $al)))
        (return (i32.const 3))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 296) (i32.const 10))
      (then
        (drop (call $set_reason (local.get $arg) (local.get $al)))
        (return (i32.const 1))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 80) (i32.const 3))
      (then
        (local.set $r (call $publish (local.get $arg) (local.get $al) (i32.const 152) (i32.const 1)
                                     (i32.const 0) (i32.const 0)))
        (if (i32.eqz (local.get $r)) (then (return (call $out (i32.const 120) (i32.const 2)))))
        (if (i32.eq (local.get $r) (i32.const -3)) (then (return (call $out (i32.const 128) (i32.const 6)))))
        (return (call $out (i32.const 136) (i32.const 5)))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 160) (i32.const 6))
      (then
        (local.set $v (call $parse_int (local.get $arg) (local.get $al)))
        (if (i32.eqz (global.get $parse_ok)) (then (return (i32.const 3))))
        (if (i32.eqz (call $extend_lease (local.get $v)))
          (then (return (call $out (i32.const 120) (i32.const 2)))))
        (return (call $out (i32.const 136) (i32.const 5)))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 88) (i32.const 3))
      (then
        (drop (call $log (i32.const 1) (local.get $arg) (local.get $al)))
        (return (i32.const 0))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 96) (i32.const 5))
      (then
        (global.set $count (i32.add (global.get $count) (i32.const 1)))
        (return (call $out_num (global.get $count)))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 168) (i32.const 4))
      (then (return (call $http (local.get $arg) (local.get $al)))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 256) (i32.const 5))
      (then (return (call $retry (local.get $arg) (local.get $al)))))
    (if (call $eq (local.get $ptr) (local.get $cl) (i32.const 176) (i32.const 8))
      (then (return (call $httpmany (local.get $arg) (local.get $al)))))
    (local.set $r (call $kv (local.get $ptr) (local.get $cl) (local.get $arg) (local.get $al)))
    (select (i32.const 3) (local.get $r) (i32.lt_s (local.get $r) (i32.const 0))))
)
