package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// qrun bench runs the runtime described by a config in this process and
// measures it: it enqueues N messages to a queue, waits until each has its
// final verdict and reports throughput and latency percentiles.
//
// Why in-process: the latency that matters is enqueue to verdict, and the
// verdict is only observable inside the runtime (the dispatcher's Observer
// sees each settlement as it happens). Against a running qrun a client could
// time its enqueues but would have to poll queue counters for the other end,
// which measures the polling. In-process, both ends read the same clock.
//
// Each message carries the run's id and the time just before its Enqueue
// call in two attributes, so the latency includes the enqueue itself and
// does not depend on how precisely an engine stores its own enqueue time,
// and messages that were already in the queue are not counted.

// maxBenchMessages bounds -n: every message's latency is kept for exact
// percentiles, 8 bytes each.
const maxBenchMessages = 100_000_000

// Attributes a bench message carries.
const (
	benchRunAttr  = "qrun.bench.run"
	benchSentAttr = "qrun.bench.sent" // Unix nanoseconds before Enqueue
)

// benchResult is what qrun bench reports (--json prints it as is).
type benchResult struct {
	Queue      string  `json:"queue"`
	Engine     string  `json:"engine"`
	EngineType string  `json:"engine_type"`
	Messages   int     `json:"messages"`
	Size       int     `json:"size"`
	Producers  int     `json:"producers"`
	Batch      int     `json:"batch"`
	Rate       float64 `json:"rate"` // requested msgs/s; 0 = unlimited
	// EnqueueSeconds is the time the producers took to enqueue everything,
	// ElapsedSeconds the time from the first enqueue to the last verdict.
	EnqueueSeconds float64 `json:"enqueue_seconds"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// Throughput is Messages / ElapsedSeconds.
	Throughput float64 `json:"throughput_per_second"`
	// Latency percentiles, enqueue to final verdict, in seconds.
	Latency  benchLatency     `json:"latency_seconds"`
	Verdicts map[string]int64 `json:"verdicts"`
}

type benchLatency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func cmdBench(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	path := fs.StringP("config", "c", "", "config `FILE` describing the runtime to measure")
	queue := fs.StringP("queue", "q", "", "`QUEUE` to load; one of its consumers must handle it")
	n := fs.IntP("messages", "n", 10000, "number of `messages`")
	size := fs.Int("size", 64, "body size in `bytes`")
	producers := fs.Int("producers", 1, "concurrent `producers`")
	batch := fs.Int("batch", 1, "messages per Enqueue `call`")
	rate := fs.Float64("rate", 0, "total enqueue rate in `msgs/s` (0: as fast as possible)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this `duration`")
	dataDir := fs.String("data-dir", "", "data `directory` for the engines (default: a new temporary one, removed after)")
	level := fs.String("log-level", "warn", "runtime log `level` (to stderr)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usagef("bench takes no arguments, got %q", pos)
	case *queue == "":
		return usagef("missing -q QUEUE")
	case *n < 1 || *n > maxBenchMessages:
		return usagef("-n %d: want at least 1 message and at most %d (each costs 8 bytes of latency record)", *n, maxBenchMessages)
	case *size < 0:
		return usagef("--size %d: want 0 or more bytes", *size)
	case *producers < 1:
		return usagef("--producers %d: want at least 1", *producers)
	case *batch < 1:
		return usagef("--batch %d: want at least 1", *batch)
	case *rate < 0 || math.IsNaN(*rate) || math.IsInf(*rate, 0):
		return usagef("--rate %v: want a positive number of msgs/s, or 0 for unlimited", *rate)
	}
	cfg, err := loadConfig(*path, pluginsStarted, stderr)
	if err != nil {
		return err
	}
	qc, err := benchQueue(cfg, *queue)
	if err != nil {
		return err
	}
	log, err := newLogger("", *level, stderr)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()

	// Isolate the run: no admin listener to clash with a running qrun, and
	// by default fresh engine files rather than the configured ones.
	cfg.Runtime.AdminListen = "off"
	if *dataDir == "" {
		tmp, err := os.MkdirTemp("", "qrun-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*dataDir = tmp
	}
	cfg.Runtime.DataDir = *dataDir

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// Ctrl-C ends the run early (with an error); a second one exits at once.
	_, stop := signalContext(func(os.Signal) { cancel() }, func(os.Signal) { os.Exit(exitRuntime) })
	defer stop()

	obs := newBenchObserver(*queue, newRunID(), *n, qc.MaxAttempts)
	srv, err := server.New(ctx, cfg, server.Options{Logger: log, Observer: obs})
	if err != nil {
		return fmt.Errorf("starting the runtime: %w", err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(runCtx) }()
	defer func() {
		stopRun()
		if err := <-runErr; err != nil {
			log.Warn("runtime stopped with an error", zap.Error(err))
		}
	}()
	// Consumers start in Run; wait for them so the figures do not include
	// start-up. There is no event for this; poll briefly.
	for !srv.Ready() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("runtime did not become ready: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}

	prog := newProgress(stderr, *n, obs)
	go prog.run(ctx)
	start := time.Now()
	enqDur, err := produce(ctx, srv, obs, *queue, *n, *size, *producers, *batch, *rate)
	if err != nil {
		prog.stop()
		return err
	}
	select {
	case <-obs.done:
	case <-ctx.Done():
		prog.stop()
		return fmt.Errorf("%d of %d messages reached a final verdict before %w", obs.finished.Load(), *n, ctx.Err())
	}
	prog.stop()
	elapsed := time.Duration(obs.last.Load() - start.UnixNano())

	res := benchResult{
		Queue: *queue, Engine: qc.Engine, EngineType: engineType(cfg, qc.Engine), Messages: *n, Size: *size,
		Producers: *producers, Batch: *batch, Rate: *rate,
		EnqueueSeconds: enqDur.Seconds(), ElapsedSeconds: elapsed.Seconds(),
		Throughput: float64(*n) / elapsed.Seconds(),
		Latency:    obs.latency(), Verdicts: obs.verdicts(),
	}
	if *asJSON {
		return writeJSONTo(stdout, res)
	}
	printBench(stdout, res)
	return nil
}

func benchQueue(cfg *config.File, name string) (*config.Queue, error) {
	for i := range cfg.Queues {
		if cfg.Queues[i].Name != name {
			continue
		}
		for _, c := range cfg.Consumers {
			if c.Queue == name {
				return &cfg.Queues[i], nil
			}
		}
		return nil, usagef("no consumer reads queue %q: qrun bench measures enqueue to verdict, so the queue needs one", name)
	}
	return nil, usagef("queue %q is not in the config", name)
}

func engineType(cfg *config.File, name string) string {
	for _, e := range cfg.Engines {
		if e.Name == name {
			return e.Type
		}
	}
	return ""
}

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// produce enqueues n messages from p producers, in batches, at the given
// total rate (0: unlimited), and returns how long it took.
func produce(ctx context.Context, srv *server.Server, obs *benchObserver, queue string, n, size, p, batch int, rate float64) (time.Duration, error) {
	body := make([]byte, size)
	_, _ = rand.Read(body) // engines keep a reference; nobody writes it after
	start := time.Now()
	errs := make(chan error, p)
	var wg sync.WaitGroup
	for i := range p {
		share := n / p
		if i < n%p {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- producer(ctx, srv, obs, queue, share, body, batch, rate/float64(p))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func producer(ctx context.Context, srv *server.Server, obs *benchObserver, queue string, n int, body []byte, batch int, rate float64) error {
	start := time.Now()
	msgs := make([]engines.Message, 0, batch)
	for sent := 0; sent < n; {
		if rate > 0 {
			// Pace by schedule, not by sleeping a fixed gap, so the rate
			// holds however long each Enqueue takes.
			if wait := time.Until(start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		k := min(batch, n-sent)
		if rate > 0 {
			k = 1 // a paced producer sends one at a time so each is on time
		}
		now := time.Now()
		// One attribute map per call, shared by its messages: engines only read it.
		attrs := map[string]string{benchRunAttr: obs.run, benchSentAttr: strconv.FormatInt(now.UnixNano(), 10)}
		msgs = msgs[:0]
		for range k {
			msgs = append(msgs, engines.Message{Body: body, Attributes: attrs})
		}
		if err := srv.Enqueue(ctx, queue, msgs); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		sent += k
	}
	return nil
}

// benchObserver sees every settlement and records, for the run's messages,
// the latency of their final verdict.
type benchObserver struct {
	queue, run  string
	maxAttempts int
	want        int64

	lat      []int64 // nanoseconds, one slot per finished message
	finished atomic.Int64
	last     atomic.Int64 // Unix nanoseconds of the latest final verdict
	counts   [4]atomic.Int64
	other    atomic.Int64
	done     chan struct{}
	once     sync.Once
}

func newBenchObserver(queue, run string, n, maxAttempts int) *benchObserver {
	return &benchObserver{queue: queue, run: run, maxAttempts: maxAttempts, want: int64(n),
		lat: make([]int64, n), done: make(chan struct{})}
}

// Settled implements server.Observer.
func (o *benchObserver) Settled(d *engines.Delivery, v engines.Verdict, _ time.Duration) {
	if d.Queue != o.queue || d.Attributes[benchRunAttr] != o.run {
		return
	}
	now := time.Now()
	if int(v) < len(o.counts) {
		o.counts[v].Add(1)
	} else {
		o.other.Add(1)
	}
	// Requeues come back; a nack comes back unless it was the last attempt.
	final := v == engines.Ack || v == engines.DeadLetter ||
		v == engines.Nack && o.maxAttempts > 0 && d.Failures+1 >= o.maxAttempts
	if !final {
		return
	}
	sent, _ := strconv.ParseInt(d.Attributes[benchSentAttr], 10, 64)
	i := o.finished.Add(1) - 1
	if i >= o.want { // a redelivery after a lost lease: counted once only
		return
	}
	o.lat[i] = now.UnixNano() - sent
	for {
		last := o.last.Load()
		if now.UnixNano() <= last || o.last.CompareAndSwap(last, now.UnixNano()) {
			break
		}
	}
	if i == o.want-1 {
		o.once.Do(func() { close(o.done) })
	}
}

func (o *benchObserver) latency() benchLatency {
	lat := slices.Clone(o.lat[:min(o.finished.Load(), o.want)])
	if len(lat) == 0 {
		return benchLatency{}
	}
	slices.Sort(lat)
	// Nearest rank: the smallest value with at least q of the samples at
	// or below it.
	pct := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(lat)))) - 1
		return time.Duration(lat[max(i, 0)]).Seconds()
	}
	var sum float64
	for _, l := range lat {
		sum += float64(l)
	}
	return benchLatency{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: pct(1),
		Mean: time.Duration(sum / float64(len(lat))).Seconds()}
}

func (o *benchObserver) verdicts() map[string]int64 {
	out := map[string]int64{}
	for v := range o.counts {
		if n := o.counts[v].Load(); n > 0 {
			out[engines.Verdict(v).String()] = n
		}
	}
	if n := o.other.Load(); n > 0 {
		out["other"] = n
	}
	return out
}

func printBench(w io.Writer, r benchResult) {
	rate := "unlimited"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%.0f msgs/s", r.Rate)
	}
	fmt.Fprintf(w, "qrun bench: %d messages of %d B to %q (engine %q, %s), %d producer(s), batch %d, rate %s\n",
		r.Messages, r.Size, r.Queue, r.Engine, r.EngineType, r.Producers, r.Batch, rate)
	fmt.Fprintf(w, "enqueued   %d in %v (%s msgs/s)\n", r.Messages, seconds(r.EnqueueSeconds), thousands(float64(r.Messages)/r.EnqueueSeconds))
	fmt.Fprintf(w, "handled    %d in %v (%s msgs/s)\n", r.Messages, seconds(r.ElapsedSeconds), thousands(r.Throughput))
	l := r.Latency
	fmt.Fprintf(w, "latency    enqueue -> verdict: p50 %v  p90 %v  p99 %v  max %v  (mean %v)\n",
		seconds(l.P50), seconds(l.P90), seconds(l.P99), seconds(l.Max), seconds(l.Mean))
	keys := make([]string, 0, len(r.Verdicts))
	for k := range r.Verdicts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, r.Verdicts[k])
	}
	fmt.Fprintf(w, "verdicts   %s\n", strings.Join(parts, ", "))
}

// seconds prints a duration with about four significant digits.
func seconds(s float64) time.Duration {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Microsecond)
	}
	return d.Round(10 * time.Nanosecond)
}

// thousands formats a rate with thousands separators.
func thousands(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return "-"
	}
	s := strconv.FormatInt(int64(math.Round(f)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// progress shows how far the run is: a bar redrawn in place on a terminal,
// a plain line every second otherwise (logs, CI).
type progress struct {
	w     io.Writer
	tty   bool
	n     int
	obs   *benchObserver
	quit  chan struct{}
	ended chan struct{}
}

func newProgress(w io.Writer, n int, obs *benchObserver) *progress {
	return &progress{w: w, tty: isTerminal(w), n: n, obs: obs, quit: make(chan struct{}), ended: make(chan struct{})}
}

func (p *progress) run(ctx context.Context) {
	defer close(p.ended)
	every := time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-p.quit:
			if p.tty {
				fmt.Fprint(p.w, "\r\x1b[K") // clear the bar
			}
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		done := min(int(p.obs.finished.Load()), p.n)
		rate := float64(done) / time.Since(start).Seconds()
		if !p.tty {
			fmt.Fprintf(p.w, "bench: %d/%d handled (%s msgs/s)\n", done, p.n, thousands(rate))
			continue
		}
		const width = 30
		filled := done * width / p.n
		bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
		if filled < width {
			bar = bar[:filled] + ">" + bar[filled+1:]
		}
		fmt.Fprintf(p.w, "\r[%s] %3d%%  %d/%d  %s msgs/s\x1b[K", bar, done*100/p.n, done, p.n, thousands(rate))
	}
}

func (p *progress) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.ended
}
