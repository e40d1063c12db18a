;; Outbound HTTP (abi/ABI.md section 4): POSTs "ping" with header
;; X-Guest: yes to the URL in the body and leaves what it saw at 0x100:
;;   0x100 http_request's result (status or error code)
;;   0x104 http_response_body with a 4-byte buffer (the full length)
;;   0x108 http_response_body with a 1 KiB buffer at 0x200
;;   0x10c http_response_header "X-Reply" into 0x600 (64 bytes)
;;   0x110 http_response_headers into 0x700 (256 bytes)
;; and acks, or nacks when the request failed. An empty body passes an
;; out-of-range URL pointer instead, which must trap. The body "?" makes no
;; request and leaves http_response_body's result at 0x100.
(module
  (import "qrun" "http_request" (func $req (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "qrun" "http_response_header" (func $hdr (param i32 i32 i32 i32) (result i32)))
  (import "qrun" "http_response_headers" (func $hdrs (param i32 i32) (result i32)))
  (import "qrun" "http_response_body" (func $body (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "POST")
  (data (i32.const 32) "\07\00\00\00X-Guest\03\00\00\00yes")
  (data (i32.const 64) "ping")
  (data (i32.const 80) "X-Reply")
  (func (export "qrun_abi_v1"))
  ;; Bodies live in the second page.
  (func (export "qrun_alloc") (param $size i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $size) (i32.const 65536))
      (then (i32.const 0)) (else (i32.const 65536))))
  (func (export "qrun_handle") (param $ptr i32) (param $len i32) (result i32)
    (local $s i32)
    (if (i32.eqz (local.get $len))
      (then (drop (call $req (i32.const 16) (i32.const 4) (i32.const 0xfffffff0) (i32.const 100)
        (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))))
    (if (i32.and (i32.eq (local.get $len) (i32.const 1)) (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 63)))
      (then
        (i32.store (i32.const 0x100) (call $body (i32.const 0x200) (i32.const 0x400)))
        (return (i32.const 0))))
    (local.set $s (call $req (i32.const 16) (i32.const 4) (local.get $ptr) (local.get $len)
      (i32.const 32) (i32.const 18) (i32.const 64) (i32.const 4)))
    (i32.store (i32.const 0x100) (local.get $s))
    (if (i32.lt_s (local.get $s) (i32.const 0)) (then (return (i32.const 1))))
    (i32.store (i32.const 0x104) (call $body (i32.const 0x200) (i32.const 4)))
    (i32.store (i32.const 0x108) (call $body (i32.const 0x200) (i32.const 0x400)))
    (i32.store (i32.const 0x10c) (call $hdr (i32.const 80) (i32.const 7) (i32.const 0x600) (i32.const 64)))
    (i32.store (i32.const 0x110) (call $hdrs (i32.const 0x700) (i32.const 0x100)))
    (i32.const 0)))
