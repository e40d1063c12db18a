package redis_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/qrun-dev/qrun/engines/redis/redistest"
)

// BenchmarkServerCPU measures what decides throughput once the Redis
// server is the bottleneck (4 workers keep its one thread busy): the
// server's CPU time per batch of 100, for qrun end to end and for the raw
// XREADGROUP + XACK loop, alternately on a private redis-server so that no
// other test's calls count. CPU time is the server's used_cpu_user +
// used_cpu_sys (INFO cpu) over each round's timed part, which a loaded
// machine disturbs far less than wall-clock throughput. With -v it logs
// each side's INFO commandstats per batch (calls and µs, those run inside
// scripts included), to show where qrun's extra time goes. b.N counts
// batches.
func BenchmarkServerCPU(b *testing.B) {
	for _, conc := range []int{1, 4} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			s, err := redistest.Start()
			if errors.Is(err, redistest.ErrNoServer) {
				b.Skip(err)
			}
			if err != nil {
				b.Fatal(err)
			}
			defer s.Stop()
			qm, rm := newMeter(b, s), newMeter(b, s)
			const chunk = 20000
			total := b.N * benchBatch
			for done, round := 0, 0; done < total; round++ {
				n := min(chunk, total-done)
				if round%2 == 0 {
					qrunRound(b, s, conc, n, qm)
					rawRound(b, s, conc, n, rm)
				} else {
					rawRound(b, s, conc, n, rm)
					qrunRound(b, s, conc, n, qm)
				}
				done += n
			}
			batches := float64(b.N)
			b.ReportMetric(qm.cpu/batches, "qrun-server-µs/batch")
			b.ReportMetric(rm.cpu/batches, "raw-server-µs/batch")
			b.ReportMetric(100*rm.cpu/qm.cpu, "cpu-ratio-%")
			b.Logf("qrun per batch:\n%s", qm.table(batches))
			b.Logf("raw per batch:\n%s", rm.table(batches))
		})
	}
}

// meter adds up a server's CPU time and command statistics over the parts
// of rounds between begin and end. A nil meter measures nothing.
type meter struct {
	c    *goredis.Client
	cpu  float64 // µs
	at   float64 // used_cpu_user + used_cpu_sys at begin, µs
	cmds map[string]*cmdStat
}

// cmdStat is one command's share of INFO commandstats.
type cmdStat struct {
	calls int64
	usec  float64
}

func newMeter(b *testing.B, s *redistest.Server) *meter {
	opt, err := goredis.ParseURL(s.URL)
	if err != nil {
		b.Fatal(err)
	}
	c := goredis.NewClient(opt)
	b.Cleanup(func() { _ = c.Close() })
	return &meter{c: c, cmds: map[string]*cmdStat{}}
}

// begin resets the server's command statistics and reads its CPU time.
func (m *meter) begin(b *testing.B) {
	if m == nil {
		return
	}
	ctx := context.Background()
	if err := m.c.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	m.at = m.usedCPU(b)
}

// end adds the CPU time and command statistics since begin.
func (m *meter) end(b *testing.B) {
	if m == nil {
		return
	}
	m.cpu += m.usedCPU(b) - m.at
	info, err := m.c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	// cmdstat_xack:calls=2,usec=30,usec_per_call=15.00,rejected_calls=0,failed_calls=0
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		st := m.cmds[name[len("cmdstat_"):]]
		if st == nil {
			st = &cmdStat{}
			m.cmds[name[len("cmdstat_"):]] = st
		}
		for kv := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				n, _ := strconv.ParseInt(v, 10, 64)
				st.calls += n
			case "usec":
				n, _ := strconv.ParseFloat(v, 64)
				st.usec += n
			}
		}
	}
}

// usedCPU returns the server's CPU time so far in µs.
func (m *meter) usedCPU(b *testing.B) float64 {
	info, err := m.c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			sum += f * 1e6
		}
	}
	return sum
}

// table formats the command statistics per batch, costliest first, the
// meter's own INFO and CONFIG calls left out.
func (m *meter) table(batches float64) string {
	names := slices.Collect(maps.Keys(m.cmds))
	slices.SortFunc(names, func(a, b string) int {
		return int(m.cmds[b].usec - m.cmds[a].usec)
	})
	var sb strings.Builder
	for _, n := range names {
		if n == "info" || strings.HasPrefix(n, "config") {
			continue
		}
		st := m.cmds[n]
		fmt.Fprintf(&sb, "  %-24s %7.2f calls %8.1f µs\n", n, float64(st.calls)/batches, st.usec/batches)
	}
	fmt.Fprintf(&sb, "  %-24s %25.1f µs", "server CPU", m.cpu/batches)
	return sb.String()
}
