package main_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
	"github.com/qrun-dev/qrun/internal/testenv"
	"github.com/qrun-dev/qrun/runtime/admin"
)

// The proof of issue 16: a handler (runtime/server/testdata/exactly_once.wat)
// adds 1 to a counter (kv_incr, a read that concurrent deliveries conflict
// on) and to a per-message key of a store (kv_add, held unread) and
// publishes the message's id, then nacks, traps or acks at random, while qrun is killed
// with SIGKILL at random points and restarted. When every message has been
// acked, the counter is the number of messages, every per-message key is 1
// and the output queue holds each id exactly once: the effects of every
// delivery that did not end in a committed ack are gone, including those
// of deliveries cut off by a kill.

// exactlyOnceRun is one run's size: messages, and kills while they are
// handled.
type exactlyOnceRun struct {
	messages, kills int
}

func TestExactlyOnceDisk(t *testing.T) {
	exactlyOnce(t, `engine "e" { type = "disk" }`, exactlyOnceRun{messages: 300, kills: 5})
}

func TestExactlyOncePostgres(t *testing.T) {
	exactlyOnce(t, postgresEngine(t), exactlyOnceRun{messages: 300, kills: 5})
}

// TestExactlyOnceSoak is the long version, for `make soak`.
func TestExactlyOnceSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: run with make soak")
	}
	t.Run("disk", func(t *testing.T) {
		exactlyOnce(t, `engine "e" { type = "disk" }`, exactlyOnceRun{messages: 5000, kills: 40})
	})
	t.Run("postgres", func(t *testing.T) {
		exactlyOnce(t, postgresEngine(t), exactlyOnceRun{messages: 5000, kills: 40})
	})
}

// postgresEngine starts (or finds) a PostgreSQL server for the test and
// returns an engine block on a schema of its own.
func postgresEngine(t *testing.T) string {
	pg, err := pgtest.Start()
	if err != nil {
		testenv.Missing(t, err.Error())
		return ""
	}
	t.Cleanup(pg.Stop)
	return fmt.Sprintf(`engine "e" {
  type   = "postgres"
  dsn    = %q
  schema = %q
}`, pg.DSN, pg.Schema(t))
}

func exactlyOnce(t *testing.T, engine string, run exactlyOnceRun) {
	if engine == "" {
		return // skipped
	}
	ctx := context.Background()
	dir := t.TempDir()
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "qrun.hcl")
	// max_attempts = 0: a message fails many times (nacks, traps, kills)
	// and must never be dead-lettered. A lease a kill left behind comes
	// back after the visibility timeout.
	src := fmt.Sprintf(`runtime {
  admin_listen = %q
  data_dir     = %q
  log_level    = "warn"
}
%s
queue "in" {
  engine             = "e"
  max_attempts       = 0
  visibility_timeout = "2s"
  retry {
    initial = "1ms"
    max     = "20ms"
  }
}
queue "out" { engine = "e" }
kv "counts" { engine = "e" }
consumer "c" {
  queue       = "in"
  plugin      = %q
  concurrency = 4
  batch       = 8
  timeout     = "500ms"
  publish     = ["out"]
  kv          = ["counts"]
}
`, addr, filepath.Join(dir, "data"), engine, repoPath(t, "runtime/server/testdata/exactly_once.wasm"))
	if err := os.WriteFile(cfgPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &admin.Client{BaseURL: "http://" + addr}

	p := runQrun(t, cfgPath)
	waitReady(t, c)
	// The messages go in one batch per run of qrun, so that every kill
	// interrupts work.
	sent := 0
	send := func(n int) {
		req := admin.SendRequest{}
		for ; n > 0 && sent < run.messages; n-- {
			req.Messages = append(req.Messages, admin.SendMessage{Body: fmt.Sprint(sent)})
			sent++
		}
		if len(req.Messages) == 0 {
			return
		}
		if _, err := c.Send(ctx, "in", req); err != nil {
			t.Fatal(err)
		}
	}
	per := run.messages / (run.kills + 1)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))
	done, busy := int64(-1), 0
	for k := 0; k < run.kills; k++ {
		send(per)
		// Kill once this run made progress, at a random point after.
		var out int64
		waitFor(t, "progress before the kill", 60*time.Second, func() (bool, string) {
			d := depths(t, c)
			out = d["out"]
			return out > done, fmt.Sprint(d)
		})
		done = out
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond) // the random kill point, not a wait for anything
		if depths(t, c)["in"] > 0 {
			busy++
		}
		p.signal(t, syscall.SIGKILL)
		p.wait(t, 30*time.Second)
		p = runQrun(t, cfgPath)
		waitReady(t, c)
	}
	send(run.messages)
	t.Logf("%d messages, %d kills, %d of them with messages still queued", run.messages, run.kills, busy)

	waitFor(t, "every message acked", 5*time.Minute, func() (bool, string) {
		d := depths(t, c)
		return d["in"] == 0, fmt.Sprint(d)
	})

	total, err := c.KVGet(ctx, "counts", "total")
	if err != nil {
		t.Fatal(err)
	}
	if total.Value != fmt.Sprint(run.messages) {
		t.Errorf("total = %s, want %d", total.Value, run.messages)
	}
	perID := map[string]string{}
	for after := ""; ; {
		page, err := c.KVList(ctx, "counts", "id:", after, admin.MaxKVListLimit)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			perID[e.Key[len("id:"):]] = e.Value
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if len(perID) != run.messages {
		t.Errorf("%d messages have a per-message count, want %d", len(perID), run.messages)
	}
	for id, n := range perID {
		if n != "1" {
			t.Errorf("message %s counted %s times", id, n)
		}
	}
	seen := map[string]int{}
	for cursor := ""; ; {
		page, err := c.PeekQuery(ctx, "out", admin.PeekQuery{Scan: true, Cursor: cursor, Limit: admin.MaxPeekLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			seen[m.Body]++
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(seen) != run.messages {
		t.Errorf("out holds %d distinct ids, want %d", len(seen), run.messages)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("out holds id %s %d times", id, n)
		}
		if perID[id] == "" {
			t.Errorf("out holds id %s, which was never counted", id)
		}
	}
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 60*time.Second)
}
