package disk_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/engines/enginetest"
	"github.com/qrun-dev/qrun/internal/testenv"
)

// BenchmarkRawFsync is the ceiling of one commit per message: write 64
// bytes and fdatasync, in a loop, in the file system the benchmarks use.
// "append" grows the file, so each sync also writes the inode; "overwrite"
// rewrites the same block of a preallocated file, as bbolt does most of
// the time, and is the higher of the two. (A bbolt commit costs two syncs.)
func BenchmarkRawFsync(b *testing.B) {
	for _, mode := range []string{"append", "overwrite"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 64)
			if mode == "overwrite" {
				if err := f.Truncate(1 << 20); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				if mode == "overwrite" {
					_, err = f.WriteAt(buf, 0)
				} else {
					_, err = f.Write(buf)
				}
				if err != nil {
					b.Fatal(err)
				}
				if err := testenv.Datasync(f); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
		})
	}
}

// BenchmarkConformance runs the shared engine benchmarks (batches of 100)
// with sync = "batch". (With "always" every ack waits for its own commit
// and the shared benchmark, which acks one message at a time from one
// goroutine, would measure little but the disk's commit latency; that is
// BenchmarkReceiveAck/sync=always.)
func BenchmarkConformance(b *testing.B) { enginetest.Bench(b, harness(disk.SyncBatch)) }

// BenchmarkEnqueue: P producers each enqueueing one message per call, so
// every call needs its own durable commit and only group commit lets them
// share fsyncs. msgs/s against BenchmarkRawFsync's fsyncs/s is the gain.
func BenchmarkEnqueue(b *testing.B) {
	for _, producers := range []int{1, 8} {
		for _, size := range []int{64, 4096} {
			b.Run(fmt.Sprintf("producers=%d/size=%d", producers, size), func(b *testing.B) {
				e, err := disk.Open(context.Background(), disk.Options{Dir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				defer e.Close()
				q, err := e.Open(context.Background(), engines.QueueSpec{Name: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				body := make([]byte, size)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for range producers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if err := q.Enqueue(context.Background(), engines.Message{Body: body}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkReceiveAck: consumers receive batches of up to 64 and ack each
// message, in both sync modes, from a prefilled backlog.
func BenchmarkReceiveAck(b *testing.B) {
	for _, mode := range []disk.SyncMode{disk.SyncAlways, disk.SyncBatch} {
		for _, consumers := range []int{1, 8} {
			b.Run(fmt.Sprintf("sync=%s/consumers=%d", mode, consumers), func(b *testing.B) {
				ctx := context.Background()
				e, err := disk.Open(ctx, disk.Options{Dir: b.TempDir(), Sync: mode})
				if err != nil {
					b.Fatal(err)
				}
				defer e.Close()
				q, err := e.Open(ctx, engines.QueueSpec{Name: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				body := make([]byte, 64)
				for left := b.N; left > 0; left -= 1000 {
					msgs := make([]engines.Message, min(left, 1000))
					for i := range msgs {
						msgs[i].Body = body
					}
					if err := q.Enqueue(ctx, msgs...); err != nil {
						b.Fatal(err)
					}
				}
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				b.ReportAllocs()
				b.ResetTimer()
				for range consumers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						buf := make([]engines.Delivery, 64)
						for {
							want := min(int64(len(buf)), left.Add(-int64(len(buf)))+int64(len(buf)))
							if want <= 0 {
								return
							}
							for got := int64(0); got < want; {
								n, err := q.Receive(ctx, buf[:want-got])
								if err != nil {
									b.Error(err)
									return
								}
								for i := range buf[:n] {
									if err := buf[i].Ack(ctx); err != nil {
										b.Error(err)
										return
									}
								}
								got += int64(n)
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkBoltBatch is the alternative to the engine's committer: bbolt's
// own DB.Batch, which coalesces concurrent callers into one transaction
// after waiting up to MaxBatchDelay (10ms) for company. Compare with
// BenchmarkEnqueue/producers=8/size=64, which stores more per message.
func BenchmarkBoltBatch(b *testing.B) {
	for _, producers := range []int{1, 8} {
		b.Run(fmt.Sprintf("producers=%d/size=64", producers), func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "b.db"), 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("m")); return err }); err != nil {
				b.Fatal(err)
			}
			val := make([]byte, 64)
			var next atomic.Uint64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						n := next.Add(1)
						if n > uint64(b.N) {
							return
						}
						key := binary.BigEndian.AppendUint64(nil, n)
						if err := db.Batch(func(tx *bolt.Tx) error { return tx.Bucket([]byte("m")).Put(key, val) }); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkTx compares acking with SettleTx (one publish and one increment
// with each ack, in the same group commit) under both sync modes; see
// enginetest.BenchTx. Issue 16's target: the second at least half the
// first.
func BenchmarkTx(b *testing.B) {
	b.Run("sync=always", func(b *testing.B) { enginetest.BenchTx(b, harness(disk.SyncAlways)) })
	b.Run("sync=batch", func(b *testing.B) { enginetest.BenchTx(b, harness(disk.SyncBatch)) })
}
