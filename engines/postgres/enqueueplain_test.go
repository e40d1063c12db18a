package postgres_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/postgres/pgtest"
)

// TestEnqueuePlainBatch: a batch of bodies alone takes the bodies-only
// insert, and any other field set on any message of it the full one.
func TestEnqueuePlainBatch(t *testing.T) {
	t.Parallel()
	body := engines.Message{Body: []byte("b")}
	if !postgres.PlainBatch([]engines.Message{body, {}}) {
		t.Error("bodies alone do not take the plain insert")
	}
	for _, m := range []engines.Message{
		{ID: "x"}, {Priority: 1}, {Delay: time.Second}, {TTL: time.Second}, {OrderingKey: "k"},
		{ContentType: "t"}, {CorrelationID: "c"}, {Attributes: map[string]string{"a": "b"}}, {DedupID: "d"},
	} {
		if postgres.PlainBatch([]engines.Message{body, m}) {
			t.Errorf("%+v takes the plain insert", m)
		}
	}
}

// TestEnqueuePlainRowsMatch: the bodies-only insert stores exactly the row
// the full insert stores for the same bodies (every column but seq), and
// returns the seqs in input order.
func TestEnqueuePlainRowsMatch(t *testing.T) {
	s := pgtest.Need(t, srv)
	t.Parallel()
	ctx := ctxT(t, time.Minute)
	schema := s.Schema(t)
	e := newEngine(t, schema, postgres.Options{Logger: zap.NewNop()})
	for _, ordered := range []bool{false, true} {
		name := "plain"
		if ordered {
			name = "plain-ordered"
		}
		open(t, e, engines.QueueSpec{Name: name, Ordered: ordered})
	}
	conn, qs := schemaConn(ctx, t, s, schema)
	full, plain := postgres.EnqueueStatements(e)
	bodies := [][]byte{[]byte("one"), nil, []byte("three")}
	n := len(bodies)
	text := func() []string { return make([]string, n) }
	for _, name := range []string{"plain", "plain-ordered"} {
		// One transaction, so now() and the backend's counter shard are
		// the same for both.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var qid int32
		var ordered bool
		if err := tx.QueryRow(ctx, `SELECT id, ordered FROM `+qs+`.queues WHERE name = $1`, name).Scan(&qid, &ordered); err != nil {
			t.Fatal(err)
		}
		seqs := func(sql string, args ...any) []int64 {
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n || got[0] >= got[1] || got[1] >= got[2] {
				t.Fatalf("%s: seqs %v, want %d ascending", name, got, n)
			}
			return got
		}
		a := seqs(full, qid, text(), bodies, make([]int16, n), make([]int64, n), make([]int64, n), text(), text(), text(), text(), ordered)
		b := seqs(plain, qid, bodies)
		for i := range a {
			var same bool
			if err := tx.QueryRow(ctx, `SELECT (to_jsonb(x) - 'seq') = (to_jsonb(y) - 'seq')
				FROM `+qs+`.messages x, `+qs+`.messages y WHERE x.seq = $1 AND y.seq = $2`, a[i], b[i]).Scan(&same); err != nil {
				t.Fatal(err)
			}
			if !same {
				t.Errorf("%s: message %d: the plain insert's row differs from the full insert's", name, i)
			}
		}
		var enqueued int64
		if err := tx.QueryRow(ctx, `SELECT sum(enqueued) FROM `+qs+`.counters WHERE queue_id = $1`, qid).Scan(&enqueued); err != nil || enqueued != int64(2*n) {
			t.Errorf("%s: enqueued counter %d, %v; want %d", name, enqueued, err, 2*n)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
