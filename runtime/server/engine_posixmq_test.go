//go:build linux

package server_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines/posixmq/mq"
	"github.com/qrun-dev/qrun/engines/posixmq/mqtest"
	"github.com/qrun-dev/qrun/runtime/server"
)

var mqSeq atomic.Uint64

// mqPrefix returns a kernel-name prefix unique to this test, and unlinks
// the named queues when the test ends (after the server stopped, since
// cleanups run last-in first-out and the server is started later).
func mqPrefix(tb testing.TB, queues ...string) string {
	prefix := fmt.Sprintf("qrs%d_%d.", os.Getpid(), mqSeq.Add(1))
	tb.Cleanup(func() {
		for _, q := range queues {
			_ = mq.Unlink("/" + prefix + q)
		}
	})
	return prefix
}

// TestPosixmqPluginInterop runs the whole path between two plain C
// programs: C sends to a posixmq queue, a WebAssembly handler republishes
// every body to a raw-format posixmq queue, and C receives exactly the bytes
// it sent, in the kernel's priority order and with its kernel priority (a
// published message inherits the handled one's; above qrun's 255 it is
// 255). Republished messages used to carry priority 0 (issue 12 item 17).
func TestPosixmqPluginInterop(t *testing.T) {
	t.Parallel()
	client := mqtest.Client(t)
	prefix := mqPrefix(t, "in", "out")
	cfg := parse(t, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "ipc" {
  type         = "posixmq"
  prefix       = %[1]q
  message_size = 1024
}
engine "craw" {
  type         = "posixmq"
  format       = "raw"
  prefix       = %[1]q
  message_size = 1024
}
queue "in"  { engine = "ipc" }
queue "out" { engine = "craw" }
consumer "fwd" {
  queue       = "in"
  plugin      = %[2]q
  concurrency = 1
  config      = { forward_to = "out" }
  publish     = ["out"]
}`, prefix, forwardWasm(t)))

	sent := []mqtest.Msg{
		{Prio: 1, Body: []byte("hello from C")},
		{Prio: 9, Body: []byte{0, 1, 2, 0xf1, 'q', 'r', 'n', 0xff}},
		{Prio: 1, Body: nil},
		{Prio: 1000, Body: bytes.Repeat([]byte("x"), 1024)},
	}
	// Sent before qrun starts, so they wait in the kernel and the single
	// worker takes them in priority order.
	if q, err := mq.Open("/"+prefix+"in", os.O_RDWR|os.O_CREATE, 0o600, &mq.Attr{MaxMsg: 10, MsgSize: 1024}); err != nil {
		t.Fatal(err)
	} else {
		_ = q.Close()
	}
	mqtest.Send(t, client, "/"+prefix+"in", sent...)
	obs := newCounter(len(sent))
	srv := start(t, cfg, server.Options{Observer: obs})
	select {
	case <-obs.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("handled %d of %d messages", obs.n.Load(), len(sent))
	}
	got := mqtest.Recv(t, client, "/"+prefix+"out", len(sent))
	want := []mqtest.Msg{{Prio: 255, Body: sent[3].Body}, {Prio: 9, Body: sent[1].Body}, {Prio: 1, Body: sent[0].Body}, {Prio: 1, Body: nil}}
	for i := range want {
		if i >= len(got) || !bytes.Equal(got[i].Body, want[i].Body) || got[i].Prio != want[i].Prio {
			t.Fatalf("C received %v\nwant bodies %v", got, want)
		}
	}
	qs, err := srv.Queues(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Depth != 0 || (q.Name == "in" && q.Stats.AckedTotal != int64(len(sent))) {
			t.Fatalf("queue %s: depth %d, stats %+v", q.Name, q.Depth, q.Stats)
		}
	}
}

// BenchmarkEndToEndPosixMQ is BenchmarkEndToEnd on a posixmq queue 10 deep
// (this machine's msg_max) of 1 KiB messages, with no spill: the producer
// waits for room as a plain mq_send would. Compare with
// BenchmarkPosixMQRaw below, the same mechanism with no qrun in between.
func BenchmarkEndToEndPosixMQ(b *testing.B) {
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			prefix := mqPrefix(b, "in")
			cfg := parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "ipc" {
  type         = "posixmq"
  prefix       = %q
  max_messages = 10
  message_size = 1024
}
queue "in" { engine = "ipc" }
consumer "ack" {
  queue       = "in"
  plugin      = %q
  concurrency = %d
  batch       = 64
}`, prefix, forwardWasm(b), conc))
			obs := newCounter(b.N)
			srv := start(b, cfg, server.Options{Observer: obs})
			runEndToEnd(b, srv, obs, 64)
		})
	}
}

// BenchmarkPosixMQRaw is the ceiling BenchmarkEndToEndPosixMQ is measured
// against: 64-byte messages between two goroutines through the same kind of
// queue with plain mq_timedsend and mq_timedreceive, blocking in the kernel
// ("blocking") or waiting in Go's poller as the engine does ("polled").
func BenchmarkPosixMQRaw(b *testing.B) {
	b.Run("blocking", func(b *testing.B) { mqtest.BenchRaw(b, 10, 1024, 64) })
	b.Run("polled", func(b *testing.B) { mqtest.BenchRawPolled(b, 10, 1024, 64) })
}
