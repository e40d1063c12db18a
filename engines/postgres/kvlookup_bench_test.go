package postgres_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
)

// BenchmarkKVLookup is the read of a key that a transactional kv_incr
// makes, by 4 readers at once as BenchmarkEndToEndKV's 4 workers do, each
// key new (absent), against the raw ceiling: the same point query on a
// pool connection of the same engine, from 4 goroutines.
func BenchmarkKVLookup(b *testing.B) {
	for _, c := range []string{"qrun", "raw"} {
		b.Run(c, func(b *testing.B) {
			e := benchEngine(b, "")
			ctx := context.Background()
			kv, err := e.OpenKV(ctx, engines.KVSpec{Name: "s"})
			if err != nil {
				b.Fatal(err)
			}
			l := kv.(kvLooker)
			get := postgres.KVGetStatement(e)
			var n atomic.Int64
			b.SetParallelism(2) // 4 readers on this machine's 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					key := []byte("id:" + strconv.FormatInt(n.Add(1), 10))
					if c == "qrun" {
						if _, found, err := l.Lookup(ctx, key); err != nil || found {
							b.Errorf("Lookup = %v, %v", found, err)
							return
						}
						continue
					}
					var v []byte
					if err := e.Pool().QueryRow(ctx, get, "s", key).Scan(&v); !errors.Is(err, pgx.ErrNoRows) {
						b.Errorf("raw get: %v", err)
						return
					}
				}
			})
		})
	}
}
