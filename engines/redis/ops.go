package redis

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/qrun-dev/qrun/engines"
)

// newID returns a new message ID: 26 random base32 characters.
func newID() string { return rand.Text() }

// newToken returns a new batch lease token: 16 random base32 characters
// (80 bits), never the same twice in practice. It is short because Redis
// writes it into its append-only file once for every entry the batch reads
// (XREADGROUP is propagated as an XCLAIM per entry, naming the consumer).
func newToken() string { return rand.Text()[:16] }

// Purge implements engines.Purger.
func (q *queue) Purge(ctx context.Context) (int64, error) {
	if err := q.live(); err != nil {
		return 0, err
	}
	n, err := purgeScript.Run(ctx, q.e.client, []string{q.k.stream, q.k.delayed}, group, consumer).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis: purge %q: %w", q.name, err)
	}
	return n, nil
}

// Redrive implements engines.Redriver. It reads the queue's ready entries
// and delayed set, and moves each chosen dead letter with a script that
// first checks it is still there and not leased.
func (q *queue) Redrive(ctx context.Context, ids []string) (int, error) {
	if err := q.live(); err != nil {
		return 0, err
	}
	want := func(id string) bool { return len(ids) == 0 || slices.Contains(ids, id) }
	type move struct{ kind, ref, source string }
	var moves []move
	pend, err := q.e.client.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: q.k.stream, Group: group, Start: "-", End: "+", Count: math.MaxInt32}).Result()
	if err != nil {
		return 0, fmt.Errorf("redis: redrive from %q: %w", q.name, err)
	}
	leased := make(map[string]bool, len(pend))
	for _, p := range pend {
		leased[p.ID] = true
	}
	after := "-"
	for {
		es, err := q.e.client.XRangeN(ctx, q.k.stream, after, "+", 1000).Result()
		if err != nil {
			return 0, fmt.Errorf("redis: redrive from %q: %w", q.name, err)
		}
		for _, e := range es {
			if leased[e.ID] {
				continue
			}
			var d engines.Delivery
			m, _ := e.Values["m"].(string)
			src, _ := e.Values["o"].(string)
			if src == "" || decode(m, &d) != nil || !want(d.ID) {
				continue
			}
			moves = append(moves, move{"s", e.ID, src})
		}
		if len(es) < 1000 {
			break
		}
		after = "(" + es[len(es)-1].ID
	}
	delayed, err := q.e.client.ZRange(ctx, q.k.delayed, 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("redis: redrive from %q: %w", q.name, err)
	}
	for _, mem := range delayed {
		src, m, ok := unpackMember(mem)
		var d engines.Delivery
		if !ok || src == "" || decode(m, &d) != nil || !want(d.ID) {
			continue
		}
		moves = append(moves, move{"z", mem, src})
	}
	moved := 0
	for _, mv := range moves {
		to := q.e.keys(mv.source)
		n, err := redriveScript.Run(ctx, q.e.client, []string{q.k.stream, q.k.delayed, to.stream, to.stats}, group, mv.kind, mv.ref).Int()
		if err != nil {
			return moved, fmt.Errorf("redis: redrive from %q to %q: %w", q.name, mv.source, err)
		}
		moved += n
	}
	return moved, nil
}

// unpackMember reads a delayed member ("a f t #r #o " r o m): its source
// queue and message.
func unpackMember(s string) (source, m string, ok bool) {
	var v [5]int
	for i := range v {
		j := strings.IndexByte(s, ' ')
		if j < 0 {
			return "", "", false
		}
		if _, err := fmt.Sscan(s[:j], &v[i]); err != nil {
			return "", "", false
		}
		s = s[j+1:]
	}
	if v[3] < 0 || v[4] < 0 || v[3]+v[4] > len(s) {
		return "", "", false
	}
	return s[v[3] : v[3]+v[4]], s[v[3]+v[4]:], true
}

var (
	_ engines.Purger       = (*queue)(nil)
	_ engines.Redriver     = (*queue)(nil)
	_ engines.GroupSettler = (*queue)(nil)
	_ engines.Settler      = (*queue)(nil)
	_                      = redis.Nil
)
