//go:build linux

package shm_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/engines/shm"
)

const benchBody = 64

// BenchmarkConformance runs the shared engine benchmarks; the capacity
// holds the suite's largest backlog (10,000) so a producer never waits.
func BenchmarkConformance(b *testing.B) {
	enginetest.Bench(b, harness(shm.Options{SlotSize: 128, Capacity: 16384}))
}

// BenchmarkEngine is the engine alone, as the dispatcher drives it: one
// producer goroutine enqueues batches of 100 64-byte messages, one consumer
// goroutine receives up to 100 at a time and acks each. Compare msgs/s
// with BenchmarkRawSPSC, run by the same `make bench`.
func BenchmarkEngine(b *testing.B) {
	for _, mode := range []string{"blocking", "cyclic"} {
		b.Run(mode, func(b *testing.B) {
			opts := shm.Options{SlotSize: 128, Capacity: 4096}
			if mode == "cyclic" {
				opts.Mode = 1
			}
			e := newEngine(b, opts)
			defer e.Close()
			q := open(b, e, engines.QueueSpec{Name: "bench"})
			ctx := context.Background()
			body := make([]byte, benchBody)
			total := b.N * 100
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				msgs := make([]engines.Message, 100)
				for range b.N {
					for j := range msgs {
						msgs[j] = engines.Message{Body: body}
					}
					if err := q.Enqueue(ctx, msgs...); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			buf := make([]engines.Delivery, 100)
			got := 0
			// Cyclic mode may overwrite what the consumer has not reached:
			// it stops when the producer is done and the ring is empty.
			for got < total {
				n, err := q.Receive(ctx, buf)
				if err != nil {
					b.Fatal(err)
				}
				for i := range buf[:n] {
					if err := buf[i].Ack(ctx); err != nil {
						b.Fatal(err)
					}
				}
				got += n
				if mode == "cyclic" {
					if rs, _ := q.(*shm.Queue).RingStats(); got+int(rs.Overwritten) >= total {
						break
					}
				}
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// spsc is the raw ceiling: the least a shared-memory queue can do, a
// single-producer single-consumer ring of 64-byte records in a /dev/shm
// mapping, with each side caching the other's index so it touches the
// shared line only when it must. No IDs, no leases, no waiting.
type spsc struct {
	mem  []byte
	head *atomic.Uint64 // consumer's position, its own cache line
	tail *atomic.Uint64 // producer's position, its own cache line
	data []byte
	mask uint64
}

func newSPSC(b *testing.B, slots int) *spsc {
	path := fmt.Sprintf("/dev/shm/qrun-bench-spsc-%d-%d", os.Getpid(), prefixSeq.Add(1))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(path)
	defer f.Close()
	size := 128 + slots*benchBody
	if err := f.Truncate(int64(size)); err != nil {
		b.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = unix.Munmap(mem) })
	return &spsc{
		mem:  mem,
		head: (*atomic.Uint64)(unsafe.Pointer(&mem[0])),
		tail: (*atomic.Uint64)(unsafe.Pointer(&mem[64])),
		data: mem[128:],
		mask: uint64(slots - 1),
	}
}

// BenchmarkRawSPSC moves b.N*100 64-byte records from a producer goroutine
// to a consumer goroutine through the raw ring, copying each in and out.
func BenchmarkRawSPSC(b *testing.B) {
	r := newSPSC(b, 4096)
	total := uint64(b.N) * 100
	src := make([]byte, benchBody)
	dst := make([]byte, benchBody)
	b.ResetTimer()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var head uint64
		for t := uint64(0); t < total; t++ {
			for t-head > r.mask {
				head = r.head.Load()
				if t-head > r.mask {
					runtime.Gosched()
				}
			}
			off := (t & r.mask) * benchBody
			copy(r.data[off:off+benchBody], src)
			r.tail.Store(t + 1)
		}
	}()
	var tail uint64
	for h := uint64(0); h < total; h++ {
		for h == tail {
			tail = r.tail.Load()
			if h == tail {
				runtime.Gosched()
			}
		}
		off := (h & r.mask) * benchBody
		copy(dst, r.data[off:off+benchBody])
		r.head.Store(h + 1)
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkEngineVsRaw alternates chunks of the BenchmarkEngine pipeline and
// the BenchmarkRawSPSC transfer, so both see the same machine (this one is
// shared and its load moves by the second), and reports the ratio of their
// rates directly: engine-msgs/s ÷ raw-msgs/s.
func BenchmarkEngineVsRaw(b *testing.B) {
	e := newEngine(b, shm.Options{SlotSize: 128, Capacity: 4096})
	defer e.Close()
	q := open(b, e, engines.QueueSpec{Name: "vs"})
	raw := newSPSC(b, 4096)
	ctx := context.Background()
	body := make([]byte, benchBody)
	const chunk = 20_000 // messages per turn
	var rawTime, engTime time.Duration
	msgs := make([]engines.Message, 100)
	buf := make([]engines.Delivery, 100)
	src, dst := make([]byte, benchBody), make([]byte, benchBody)
	var rawPos uint64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		rawTransfer(raw, &rawPos, chunk, src, dst)
		rawTime += time.Since(start)

		start = time.Now()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent := 0; sent < chunk; sent += len(msgs) {
				for j := range msgs {
					msgs[j] = engines.Message{Body: body}
				}
				if err := q.Enqueue(ctx, msgs...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
		for got := 0; got < chunk; {
			n, err := q.Receive(ctx, buf)
			if err != nil {
				b.Fatal(err)
			}
			for i := range buf[:n] {
				if err := buf[i].Ack(ctx); err != nil {
					b.Fatal(err)
				}
			}
			got += n
		}
		wg.Wait()
		engTime += time.Since(start)
	}
	b.StopTimer()
	rawRate := float64(b.N*chunk) / rawTime.Seconds()
	engRate := float64(b.N*chunk) / engTime.Seconds()
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(engRate, "engine-msgs/s")
	b.ReportMetric(engRate/rawRate, "ratio")
}

// rawTransfer moves n records through r from a producer goroutine to the
// caller, as BenchmarkRawSPSC does.
func rawTransfer(r *spsc, pos *uint64, n int, src, dst []byte) {
	begin, end := *pos, *pos+uint64(n)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		head := r.head.Load()
		for t := begin; t < end; t++ {
			for t-head > r.mask {
				if head = r.head.Load(); t-head > r.mask {
					runtime.Gosched()
				}
			}
			off := (t & r.mask) * benchBody
			copy(r.data[off:off+benchBody], src)
			r.tail.Store(t + 1)
		}
	}()
	tail := begin
	for h := begin; h < end; h++ {
		for h == tail {
			if tail = r.tail.Load(); h == tail {
				runtime.Gosched()
			}
		}
		off := (h & r.mask) * benchBody
		copy(dst, r.data[off:off+benchBody])
		r.head.Store(h + 1)
	}
	wg.Wait()
	*pos = end
}
