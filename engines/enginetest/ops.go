package enginetest

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// The operator extensions (engines.Peeker, Purger, Redriver) are optional;
// each test skips, naming the interface, when the queue does not implement it.

func opsSubtests() []subtest {
	return []subtest{
		{"peek", testPeek},
		{"peek_page", testPeekPage},
		{"peek_page_while_changing", testPeekPageWhileChanging},
		{"purge", testPurge},
		{"redrive", testRedrive},
		{"purge_ordered", testPurgeOrdered},
		{"settle_batch", testSettleAll},
	}
}

// as returns q as a T or skips the test, naming the missing extension.
func as[T any](x *env, q engines.Queue, iface string) T {
	x.t.Helper()
	v, ok := q.(T)
	if !ok {
		x.t.Skipf("queue does not implement engines.%s", iface)
	}
	return v
}

// waitReady polls Stats until the queue holds n ready messages: a message
// moved to another queue (a dead letter) may land there just after the call
// that moved it returns, and Stats is the only event an engine offers.
func (x *env) waitReady(q engines.Queue, n int64) {
	x.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		s := x.stats(q)
		if s.Ready == n {
			return
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("%s holds %d ready messages after %v, want %d", q.Name(), s.Ready, wait, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitStats polls q's Stats until cond holds and returns them; what names
// the awaited event. Some changes (a lease expiring in a background reaper)
// have no other observable event.
func (x *env) waitStats(q engines.Queue, what string, cond func(engines.Stats) bool) engines.Stats {
	x.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		s := x.stats(q)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("%s: still waiting for %s after %v (stats %+v)", q.Name(), what, wait, s)
		}
		time.Sleep(time.Millisecond)
	}
}

func ids(ds []engines.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func testPeek(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	p := as[engines.Peeker](x, q, "Peeker")
	msgs := []engines.Message{
		{Body: []byte("low"), Attributes: map[string]string{"k": "v"}},
		{Body: []byte("high")},
		{Body: []byte("late")},
		{Body: []byte("leased")},
	}
	if x.caps.Priority {
		msgs[1].Priority = 9
		msgs[3].Priority = 200 // delivered first, so the lease below takes it
	}
	if x.caps.Delay {
		msgs[2].Delay = time.Hour
	}
	x.enqueue(q, msgs...)
	leased := x.receiveOne(q, wait)

	var want []string
	switch {
	case x.caps.Priority:
		want = []string{msgs[1].ID, msgs[0].ID, msgs[2].ID}
	case x.caps.Delay: // FIFO: the lease took "low"
		want = []string{msgs[1].ID, msgs[3].ID, msgs[2].ID}
	default:
		want = []string{msgs[1].ID, msgs[2].ID, msgs[3].ID}
	}
	if x.caps.Priority && leased.ID != msgs[3].ID {
		t.Fatalf("first delivery is %q, want the priority-200 message %q", leased.Body, msgs[3].Body)
	}
	before := x.stats(q)
	for range 2 { // twice: peeking must change nothing
		got, err := p.Peek(x.ctx(wait), 10)
		if err != nil {
			t.Fatalf("Peek: %v", err)
		}
		if !slices.Equal(ids(got), want) {
			t.Fatalf("Peek returned %v, want %v (ready by priority, then delayed; never the leased one)", ids(got), want)
		}
		for _, d := range got {
			if d.ID == msgs[0].ID && !maps.Equal(d.Attributes, msgs[0].Attributes) {
				t.Errorf("peeked attributes %v, want %v", d.Attributes, msgs[0].Attributes)
			}
			if d.Queue != q.Name() {
				t.Errorf("peeked Queue %q, want %q", d.Queue, q.Name())
			}
		}
		if err := got[0].Ack(x.ctx(wait)); err == nil {
			t.Fatal("acking a peeked delivery succeeded; it carries no lease")
		}
	}
	if after := x.stats(q); after.Ready != before.Ready || after.Delayed != before.Delayed || after.InFlight != before.InFlight {
		t.Fatalf("Peek changed the queue: stats before %+v, after %+v", before, after)
	}
	if got, err := p.Peek(x.ctx(wait), 1); err != nil || len(got) != 1 || got[0].ID != want[0] {
		t.Fatalf("Peek(max=1) = %v, %v; want [%s]", ids(got), err, want[0])
	}
	if _, err := p.Peek(x.ctx(wait), 0); err == nil {
		t.Fatal("Peek(max=0) succeeded, want ErrInvalid")
	} else {
		x.wantErr(err, engines.ErrInvalid, "Peek(max=0)")
	}
	d := x.receiveOne(q, wait)
	if d.Attempt != 1 {
		t.Fatalf("after peeks, first delivery has Attempt %d, want 1", d.Attempt)
	}
	x.ack(d)
	x.ack(leased)
}

// scan pages through q with PeekPage and returns, per message ID, the
// states it was seen in (once per sighting). between runs after each page
// but the last, with the page's number.
func (x *env) scan(p engines.Peeker, max int, inFlight bool, between func(page int)) map[string][]engines.MessageState {
	x.t.Helper()
	seen := map[string][]engines.MessageState{}
	after := ""
	for page := 0; ; page++ {
		if page > 1000 {
			x.t.Fatalf("PeekPage scan did not end after %d pages", page)
		}
		got, err := p.PeekPage(x.ctx(wait), engines.PeekOptions{Max: max, After: after, InFlight: inFlight})
		if err != nil {
			x.t.Fatalf("PeekPage(max=%d, after=%q, in_flight=%v): %v", max, after, inFlight, err)
		}
		if len(got.Messages) > max {
			x.t.Fatalf("PeekPage(max=%d) returned %d messages", max, len(got.Messages))
		}
		for _, m := range got.Messages {
			seen[m.ID] = append(seen[m.ID], m.State)
			if m.Queue == "" {
				x.t.Errorf("peeked message %s has no Queue", m.ID)
			}
			if err := m.Ack(x.ctx(wait)); err == nil {
				x.t.Fatalf("acking peeked message %s succeeded; it carries no lease", m.ID)
			}
		}
		if got.Next == "" {
			return seen
		}
		if between != nil {
			between(page)
		}
		after = got.Next
	}
}

// testPeekPage scans a queue in small pages, with and without the
// messages in flight: every message exactly once, in its state.
func testPeekPage(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	p := as[engines.Peeker](x, q, "Peeker")
	const n = 23
	msgs := make([]engines.Message, n)
	delayed := map[string]bool{}
	for i := range msgs {
		msgs[i].Body = []byte(fmt.Sprintf("m%02d", i))
		if x.caps.Priority {
			msgs[i].Priority = uint8(i % 3)
		}
		if x.caps.Delay && i%5 == 4 {
			msgs[i].Delay = time.Hour
		}
	}
	x.enqueue(q, msgs...)
	for _, m := range msgs {
		if m.Delay > 0 {
			delayed[m.ID] = true
		}
	}
	leased := map[string]bool{}
	held := x.receiveN(q, 3, wait)
	for _, d := range held {
		leased[d.ID] = true
	}
	before := x.stats(q)
	for _, inFlight := range []bool{false, true} {
		for _, max := range []int{1, 4, n + 10} {
			seen := x.scan(p, max, inFlight, nil)
			for _, m := range msgs {
				states := seen[m.ID]
				want := engines.StateReady
				switch {
				case leased[m.ID]:
					want = engines.StateInFlight
				case delayed[m.ID]:
					want = engines.StateDelayed
				}
				switch {
				case leased[m.ID] && !inFlight:
					if len(states) != 0 {
						t.Fatalf("scan without in-flight (max %d) returned leased message %s", max, m.ID)
					}
				case len(states) != 1:
					t.Fatalf("scan (max %d, in-flight %v) returned %s (%s) %d times, want once", max, inFlight, m.ID, m.Body, len(states))
				case states[0] != want:
					t.Fatalf("scan (max %d) returned %s as %s, want %s", max, m.ID, states[0], want)
				}
			}
			if len(seen) > n {
				t.Fatalf("scan returned %d distinct messages, only %d exist", len(seen), n)
			}
		}
	}
	if after := x.stats(q); after.Ready != before.Ready || after.Delayed != before.Delayed || after.InFlight != before.InFlight {
		t.Fatalf("PeekPage changed the queue: stats before %+v, after %+v", before, after)
	}
	if _, err := p.PeekPage(x.ctx(wait), engines.PeekOptions{Max: 0}); err == nil {
		t.Fatal("PeekPage(max=0) succeeded, want ErrInvalid")
	} else {
		x.wantErr(err, engines.ErrInvalid, "PeekPage(max=0)")
	}
	if _, err := p.PeekPage(x.ctx(wait), engines.PeekOptions{Max: 5, After: "not a cursor"}); err == nil {
		t.Fatal(`PeekPage(after="not a cursor") succeeded, want ErrInvalid`)
	} else {
		x.wantErr(err, engines.ErrInvalid, "PeekPage with a foreign cursor")
	}
	x.ackAll(held)
}

// testPeekPageWhileChanging changes the queue between the pages of a scan:
// new messages, an ack, a nack and more deliveries. Every message present
// for the whole scan is returned exactly once; no message twice.
func testPeekPageWhileChanging(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	p := as[engines.Peeker](x, q, "Peeker")
	const n = 20
	msgs := make([]engines.Message, n)
	for i := range msgs {
		msgs[i].Body = []byte(fmt.Sprintf("m%02d", i))
	}
	x.enqueue(q, msgs...)
	held := x.receiveN(q, 2, wait)
	removed := map[string]bool{}
	var later []engines.Delivery
	seen := x.scan(p, 3, true, func(page int) {
		switch page {
		case 0:
			x.enqueue(q, engines.Message{Body: []byte("new1")}, engines.Message{Body: []byte("new2")})
		case 1:
			x.ack(held[0]) // removed during the scan: may or may not be seen
			removed[held[0].ID] = true
		case 2:
			if err := held[1].Nack(x.ctx(wait), 0, "retry"); err != nil { // in flight, then ready
				t.Fatalf("Nack: %v", err)
			}
		case 3:
			later = x.receiveN(q, 3, wait) // ready, then in flight
		}
	})
	for _, m := range msgs {
		if removed[m.ID] {
			continue
		}
		if len(seen[m.ID]) != 1 {
			t.Errorf("message %s (%s), in the queue for the whole scan, was returned %d times, want once", m.ID, m.Body, len(seen[m.ID]))
		}
	}
	for id, states := range seen {
		if len(states) > 1 {
			t.Errorf("message %s returned %d times", id, len(states))
		}
	}
	if later == nil {
		t.Fatal("the scan ended before the queue was changed: pages too large for this test")
	}
	x.ackAll(later)
}

func testPurge(t *testing.T, x *env) {
	q := x.open(engines.QueueSpec{})
	pg := as[engines.Purger](x, q, "Purger")
	msgs := make([]engines.Message, 5)
	for i := range msgs {
		msgs[i].Body = []byte{byte('a' + i)}
	}
	if x.caps.Delay {
		msgs[4].Delay = time.Hour
	}
	x.enqueue(q, msgs...)
	leased := x.receiveOne(q, wait)
	n, err := pg.Purge(x.ctx(wait))
	if err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if n != 4 {
		t.Fatalf("Purge removed %d messages, want 4 (every one but the leased)", n)
	}
	if s := x.stats(q); s.Ready != 0 || s.Delayed != 0 || s.InFlight != 1 {
		t.Fatalf("after Purge: Ready=%d Delayed=%d InFlight=%d, want 0, 0, 1", s.Ready, s.Delayed, s.InFlight)
	}
	x.ack(leased) // the holder keeps its lease
	x.expectNone(q, "purged queue")
	if n, err := pg.Purge(x.ctx(wait)); err != nil || n != 0 {
		t.Fatalf("Purge of an empty queue = %d, %v; want 0, nil", n, err)
	}
	x.enqueue(q, engines.Message{Body: []byte("after")})
	if d := x.receiveOne(q, wait); string(d.Body) != "after" {
		t.Fatalf("after Purge, received %q, want %q", d.Body, "after")
	} else {
		x.ack(d)
	}
}

func testRedrive(t *testing.T, x *env) {
	x.need(x.caps.DeadLetter, "DeadLetter")
	name := x.name()
	q := x.open(engines.QueueSpec{Name: name, MaxAttempts: 1, DeadLetter: name + "-dlq"})
	dlq := x.open(engines.QueueSpec{Name: name + "-dlq"})
	rd := as[engines.Redriver](x, dlq, "Redriver")
	msgs := []engines.Message{
		{Body: []byte("one"), Attributes: map[string]string{"tenant": "a"}, CorrelationID: "c1"},
		{Body: []byte("two"), Attributes: map[string]string{"tenant": "b"}},
		{Body: []byte("three")},
	}
	x.enqueue(q, msgs...)
	for _, d := range x.receiveN(q, 3, wait) {
		if err := d.Nack(x.ctx(wait), 0, "bad handler version"); err != nil {
			t.Fatalf("Nack: %v", err)
		}
	}
	x.waitReady(dlq, 3)

	n, err := rd.Redrive(x.ctx(wait), []string{msgs[1].ID, "no-such-id"})
	if err != nil || n != 1 {
		t.Fatalf("Redrive(one id) = %d, %v; want 1, nil", n, err)
	}
	d := x.receiveOne(q, wait)
	if d.ID != msgs[1].ID || string(d.Body) != "two" {
		t.Fatalf("redriven delivery %s %q, want %s %q", d.ID, d.Body, msgs[1].ID, "two")
	}
	if d.Attempt != 1 || d.Failures != 0 {
		t.Fatalf("redriven delivery has Attempt %d, Failures %d; want 1, 0", d.Attempt, d.Failures)
	}
	if !maps.Equal(d.Attributes, msgs[1].Attributes) {
		t.Fatalf("redriven attributes %v, want the original %v without the dead-letter ones", d.Attributes, msgs[1].Attributes)
	}
	x.ack(d)

	n, err = rd.Redrive(x.ctx(wait), nil)
	if err != nil || n != 2 {
		t.Fatalf("Redrive(all) = %d, %v; want 2, nil", n, err)
	}
	got := x.receiveN(q, 2, wait)
	gotBodies := []string{string(got[0].Body), string(got[1].Body)}
	slices.Sort(gotBodies)
	if !slices.Equal(gotBodies, []string{"one", "three"}) {
		t.Fatalf("redriven bodies %v, want [one three]", gotBodies)
	}
	for _, d := range got {
		if d.ID == msgs[0].ID && d.CorrelationID != "c1" {
			t.Errorf("redriven CorrelationID %q, want c1", d.CorrelationID)
		}
	}
	x.ackAll(got)
	if s := x.stats(dlq); s.Depth() != 0 {
		t.Fatalf("dead-letter queue depth %d after redriving everything, want 0", s.Depth())
	}
	if n, err := rd.Redrive(x.ctx(wait), nil); err != nil || n != 0 {
		t.Fatalf("Redrive of an empty queue = %d, %v; want 0, nil", n, err)
	}
}

// testPurgeOrdered purges messages waiting behind their ordering key's
// in-flight message: they go, and the key's holder is unaffected.
func testPurgeOrdered(t *testing.T, x *env) {
	x.need(x.caps.Ordering, "Ordering")
	q := x.open(engines.QueueSpec{Name: x.name(), Ordered: true})
	pg := as[engines.Purger](x, q, "Purger")
	x.enqueue(q,
		engines.Message{Body: []byte("k1"), OrderingKey: "k"},
		engines.Message{Body: []byte("k2"), OrderingKey: "k"},
		engines.Message{Body: []byte("k3"), OrderingKey: "k"},
	)
	head := x.receiveOne(q, wait)
	if string(head.Body) != "k1" {
		t.Fatalf("first delivery %q, want k1", head.Body)
	}
	if p, ok := q.(engines.Peeker); ok {
		got, err := p.Peek(x.ctx(wait), 10)
		if err != nil {
			t.Fatalf("Peek: %v", err)
		}
		if len(got) != 2 || string(got[0].Body) != "k2" || string(got[1].Body) != "k3" {
			t.Fatalf("Peek of an ordered queue returned %d messages %v, want k2, k3 in order", len(got), ids(got))
		}
	}
	n, err := pg.Purge(x.ctx(wait))
	if err != nil || n != 2 {
		t.Fatalf("Purge = %d, %v; want 2, nil (the two behind the key)", n, err)
	}
	x.ack(head)
	x.expectNone(q, "ordered queue after Purge")
	x.enqueue(q, engines.Message{Body: []byte("k4"), OrderingKey: "k"})
	if d := x.receiveOne(q, wait); string(d.Body) != "k4" {
		t.Fatalf("after Purge, received %q, want k4", d.Body)
	} else {
		x.ack(d)
	}
}

// testSettleAll applies every verdict in one engines.SettleAll call (for a
// GroupSettler, all started before any is waited for), including one for a
// delivery whose lease was already settled.
func testSettleAll(t *testing.T, x *env) {
	name := x.name()
	spec := engines.QueueSpec{Name: name}
	if x.caps.DeadLetter {
		spec.MaxAttempts, spec.DeadLetter = 5, name+"-dlq"
	}
	q := x.open(spec)
	x.enqueue(q,
		engines.Message{Body: []byte("ack")},
		engines.Message{Body: []byte("nack")},
		engines.Message{Body: []byte("requeue")},
		engines.Message{Body: []byte("dead")},
		engines.Message{Body: []byte("stale")},
	)
	got := x.receiveN(q, 5, wait)
	byBody := map[string]*engines.Delivery{}
	for i := range got {
		byBody[string(got[i].Body)] = &got[i]
	}
	stale := *byBody["stale"]
	x.ack(stale) // settled already: the batch's second settle must fail
	dead := engines.Settlement{Verdict: engines.DeadLetter, Reason: "bad"}
	if !x.caps.DeadLetter {
		dead = engines.Settlement{Verdict: engines.Ack}
	}
	ds := []*engines.Delivery{byBody["ack"], byBody["nack"], byBody["requeue"], byBody["dead"], &stale}
	ss := []engines.Settlement{
		{Verdict: engines.Ack},
		{Verdict: engines.Nack, Reason: "try again"},
		{Verdict: engines.Requeue},
		dead,
		{Verdict: engines.Ack},
	}
	errs := make([]error, len(ds))
	engines.SettleAll(x.ctx(wait), q, ds, ss, errs)
	for i, err := range errs[:4] {
		if err != nil {
			t.Fatalf("SettleAll: %s of %q: %v", ss[i].Verdict, ds[i].Body, err)
		}
	}
	if errs[4] == nil {
		t.Fatal("SettleAll acked an already-acked delivery without error")
	}
	x.wantErr(errs[4], engines.ErrLeaseLost, "second settle in SettleAll")
	again := x.receiveN(q, 2, wait)
	bodies := []string{string(again[0].Body), string(again[1].Body)}
	slices.Sort(bodies)
	if !slices.Equal(bodies, []string{"nack", "requeue"}) {
		t.Fatalf("after SettleAll redelivered %v, want [nack requeue]", bodies)
	}
	for _, d := range again {
		wantFailures := 0
		if string(d.Body) == "nack" {
			wantFailures = 1
		}
		if d.Failures != wantFailures {
			t.Errorf("%q redelivered with Failures %d, want %d", d.Body, d.Failures, wantFailures)
		}
	}
	x.ackAll(again)
	x.expectNone(q, "queue after SettleAll")
	if x.caps.DeadLetter {
		dlq := x.open(engines.QueueSpec{Name: name + "-dlq"})
		if d := x.receiveOne(dlq, wait); string(d.Body) != "dead" {
			t.Fatalf("dead-letter queue holds %q, want %q", d.Body, "dead")
		} else {
			x.ack(d)
		}
	}
}
