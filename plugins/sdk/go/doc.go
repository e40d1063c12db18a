// Package qrun is the Go guest SDK for qrun message handlers.
//
// A handler is a WebAssembly module built from an ordinary Go main package
// with GOOS=wasip1 GOARCH=wasm and -buildmode=c-shared. The package hides qrun's
// guest ABI (abi/ABI.md): importing it adds the exports the host looks for
// (qrun_abi_v1, qrun_alloc, qrun_free, qrun_init, qrun_handle), so the user
// only registers a handler:
//
//	package main
//
//	import qrun "github.com/qrun-dev/qrun/plugins/sdk/go"
//
//	func init() {
//		qrun.Handle(func(m *qrun.Message) qrun.Verdict {
//			qrun.Infof("got %d bytes", len(m.Body))
//			return qrun.Ack
//		})
//	}
//
//	func main() {}
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -ldflags=-s -o handler.wasm .
//
// main is never run: c-shared builds a WASI reactor whose _initialize runs the
// package init functions, which is where the handler must be registered.
//
// An instance serves one message at a time and many messages over its life, so
// package-level state persists between messages; the host may still discard
// an instance between any two messages, so that state can only be a cache.
// A panic is not recovered: it ends the instance, which the host counts as a
// nack and replaces, and the panic text reaches qrun's log through stderr.
//
// Outside wasip1 the package still compiles, so that handler code can be vetted
// and unit-tested on the build machine, but there is no host: host functions
// report ErrUnavailable, Config finds nothing and Now reads the local clock.
package qrun
