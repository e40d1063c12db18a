package server_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/nats/natstest"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// natsServer starts a throwaway nats-server for one benchmark, or skips
// (fails under QRUN_REQUIRE_TOOLS=1) when the machine has none; a server
// that is there but fails to start fails the benchmark with its error.
func natsServer(b *testing.B) *natstest.Server {
	b.Helper()
	s, err := natstest.Start()
	if errors.Is(err, natstest.ErrNoServer) {
		natstest.Need(b, nil)
	} else if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Stop)
	return s
}

// natsBatch is the batch both sides of the NATS comparison use.
const natsBatch = 256

// natsConfig is the runtime both NATS benchmarks measure: queue "in" on a
// nats engine at s, consumed by the forwarding plugin with conc workers
// fetching natsBatch.
func natsConfig(b *testing.B, s *natstest.Server, conc int) *config.File {
	return parse(b, fmt.Sprintf(`
runtime { admin_listen = "off" }
engine "js" {
  type = "nats"
  url  = %q
}
queue "in" { engine = "js" }
consumer "ack" {
  queue       = "in"
  plugin      = %q
  concurrency = %d
  batch       = %d
}`, s.URL, forwardWasm(b), conc, natsBatch))
}

// rawNATS is the raw side of the NATS comparison: a nats.go connection to
// s, closed when b ends, and a durable pull consumer on a work-queue file
// stream "raw" taking subject "raw.in".
func rawNATS(ctx context.Context, b *testing.B, s *natstest.Server) (jetstream.JetStream, jetstream.Consumer) {
	nc, err := natsgo.Connect(s.URL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "raw", Subjects: []string{"raw.in"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "raw", jetstream.ConsumerConfig{Durable: "raw",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 31 * time.Second, MaxAckPending: 100000})
	if err != nil {
		b.Fatal(err)
	}
	return js, cons
}

// publishRaw publishes n messages of body to "raw.in" asynchronously,
// natsBatch at a time, awaiting each batch's acknowledgements before the
// next; fs is reused between batches.
func publishRaw(b *testing.B, js jetstream.JetStream, body []byte, n int) {
	fs := make([]jetstream.PubAckFuture, 0, natsBatch)
	for sent := 0; sent < n; sent += natsBatch {
		fs = fs[:0]
		for range min(natsBatch, n-sent) {
			f, err := js.PublishMsgAsync(&natsgo.Msg{Subject: "raw.in", Data: body})
			if err != nil {
				b.Fatal(err)
			}
			fs = append(fs, f)
		}
		for _, f := range fs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEndToEndNATS is BenchmarkEndToEnd on the nats engine: 64-byte
// messages enqueued in batches of 256 into a JetStream file stream, workers
// fetch 256, invoke the WAT handler and ack. Its ceiling is
// BenchmarkNATSRaw, nats.go's own publish, Fetch and Ack loop with the
// same batch on the same kind of server.
func BenchmarkEndToEndNATS(b *testing.B) {
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			obs := newCounter(b.N)
			srv := start(b, natsConfig(b, natsServer(b), conc), server.Options{Observer: obs})
			runEndToEnd(b, srv, obs, natsBatch)
		})
	}
}

// BenchmarkNATSRaw is the ceiling of BenchmarkEndToEndNATS: the same
// messages through a work-queue stream with nats.go alone, a producer
// publishing batches of 256 asynchronously and awaiting their
// acknowledgements, and conc consumers each looping Fetch(256) and Ack
// (fire and forget, as most nats.go programs do; the engine's acks are
// confirmed by the server, one wait per batch).
func BenchmarkNATSRaw(b *testing.B) {
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			benchNATSRaw(b, natsServer(b), conc)
		})
	}
}

func benchNATSRaw(b *testing.B, s *natstest.Server, conc int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	js, cons := rawNATS(ctx, b, s)
	var acked atomic.Int64
	progress := make(chan struct{}, 1)
	want := int64(b.N)
	body := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for acked.Load() < want && ctx.Err() == nil {
				batch, err := cons.Fetch(natsBatch, jetstream.FetchMaxWait(100*time.Millisecond))
				if err != nil {
					continue
				}
				for m := range batch.Messages() {
					if err := m.Ack(); err != nil {
						b.Error(err)
					}
					acked.Add(1)
				}
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	for sent := 0; sent < b.N; sent += natsBatch {
		for int64(sent)-acked.Load() > backlog {
			<-progress
		}
		publishRaw(b, js, body, min(natsBatch, b.N-sent))
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}

// BenchmarkNATSVersusRaw is the comparison of BenchmarkEndToEndNATS with
// BenchmarkNATSRaw made robust to a shared machine: one nats-server, one
// qrun runtime on a nats queue and one raw nats.go consumer loop on a
// stream of its own, fed alternately in chunks of 8Ki messages within one
// benchmark, so that whatever else loads the machine falls on both alike.
// Each side's workers wait in a pull while the other runs. It reports each
// side's rate and qrun's as a percentage of the raw loop's.
func BenchmarkNATSVersusRaw(b *testing.B) {
	for _, conc := range []int{1, 2} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) { natsVersusRaw(b, conc) })
	}
}

func natsVersusRaw(b *testing.B, conc int) {
	s := natsServer(b)
	obs := &chunkCounter{reached: make(chan struct{}, 1)}
	srv := start(b, natsConfig(b, s, conc), server.Options{Observer: obs})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, cons := rawNATS(ctx, b, s)
	var rawAcked, rawTarget atomic.Int64
	rawReached := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				batch, err := cons.Fetch(natsBatch, jetstream.FetchMaxWait(500*time.Millisecond))
				if err != nil {
					continue
				}
				for m := range batch.Messages() {
					if err := m.Ack(); err != nil {
						b.Error(err)
					}
					if rawAcked.Add(1) == rawTarget.Load() {
						rawReached <- struct{}{}
					}
				}
			}
		}()
	}
	body := make([]byte, 64)
	publishQrun := func(n int) {
		for sent := 0; sent < n; sent += natsBatch {
			msgs := make([]engines.Message, min(natsBatch, n-sent))
			for i := range msgs {
				msgs[i].Body = body
			}
			if err := srv.Enqueue(ctx, "in", msgs); err != nil {
				b.Fatal(err)
			}
		}
	}
	var qrunWall, rawWall time.Duration
	runQrun := func(n int) {
		start := time.Now()
		obs.target.Store(obs.n.Load() + int64(n))
		publishQrun(n)
		<-obs.reached
		qrunWall += time.Since(start)
	}
	runRaw := func(n int) {
		start := time.Now()
		rawTarget.Store(rawAcked.Load() + int64(n))
		publishRaw(b, js, body, n)
		<-rawReached
		rawWall += time.Since(start)
	}
	const chunk = 8 << 10
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		if (done/chunk)%2 == 0 {
			runQrun(n)
			runRaw(n)
		} else {
			runRaw(n)
			runQrun(n)
		}
	}
	b.StopTimer()
	qrunRate := float64(b.N) / qrunWall.Seconds()
	rawRate := float64(b.N) / rawWall.Seconds()
	b.ReportMetric(qrunRate, "qrun-msgs/s")
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(100*qrunRate/rawRate, "%-of-raw")
}
