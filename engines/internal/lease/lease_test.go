package lease

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

func TestPolicyApply(t *testing.T) {
	p := DefaultPolicy()
	if p.Apply(engines.QueueSpec{Name: "q"}) || p != DefaultPolicy() {
		t.Fatalf("a name-only spec changed the policy: %+v", p)
	}
	retry := engines.RetryPolicy{Initial: time.Second}
	if !p.Apply(engines.QueueSpec{Name: "q", MaxAttempts: math.MaxInt, DeadLetter: "dlq", Retry: retry}) {
		t.Fatal("a full spec was not applied")
	}
	want := Policy{VT: int64(engines.DefaultVisibilityTimeout), MaxAttempts: math.MaxInt32, DeadLetter: "dlq", Retry: retry}
	if p != want {
		t.Fatalf("policy = %+v, want %+v (zero VT is the default, attempts clamp)", p, want)
	}
}

func TestGrantAndExpireMakeTicketsStale(t *testing.T) {
	var l Lease
	tok := l.Grant()
	if l.Attempt != 1 || tok != l.Token {
		t.Fatalf("after Grant: %+v, token %d", l, tok)
	}
	p := Policy{}
	var st engines.Stats
	out := p.Expire(&l, &st)
	if l.Token == tok {
		t.Fatal("Expire kept the holder's token valid")
	}
	if out.Action != Retry || out.Delay != 0 || l.Failures != 1 || st.ExpiredLeaseTotal != 1 {
		t.Fatalf("Expire = %+v, lease %+v, stats %+v", out, l, st)
	}
	if tok2 := l.Grant(); tok2 == tok || l.Attempt != 2 {
		t.Fatalf("second Grant reused token %d or miscounted %+v", tok2, l)
	}
}

func TestExpireAppliesRetryAndMaxAttempts(t *testing.T) {
	p := Policy{MaxAttempts: 3, Retry: engines.RetryPolicy{Initial: time.Second, Multiplier: 2}}
	var l Lease
	var st engines.Stats
	for i, want := range []time.Duration{time.Second, 2 * time.Second} {
		l.Grant()
		if out := p.Expire(&l, &st); out.Action != Retry || out.Delay != want {
			t.Fatalf("expiry %d = %+v, want Retry after %v", i+1, out, want)
		}
	}
	l.Grant()
	out := p.Expire(&l, &st)
	if out.Action != Dead || out.Reason != "max attempts (3) reached: lease expired" {
		t.Fatalf("third expiry = %+v, want Dead", out)
	}
	l = Lease{Attempt: 3, Failures: 2}
	out = p.ExpireAtOpen(&l, &st)
	if out.Action != Dead || out.Reason != "max attempts (3) reached: lease outstanding when the process stopped" {
		t.Fatalf("expiry found at open = %+v, want Dead with its own reason", out)
	}
}

func TestSettle(t *testing.T) {
	p := Policy{MaxAttempts: 2}
	for _, tc := range []struct {
		name     string
		s        engines.Settlement
		failures int32 // before
		want     Outcome
		stats    engines.Stats
	}{
		{"ack", engines.Settlement{Verdict: engines.Ack}, 0, Outcome{Action: Drop}, engines.Stats{AckedTotal: 1}},
		{"nack", engines.Settlement{Verdict: engines.Nack, Delay: time.Second}, 0, Outcome{Action: Retry, Delay: time.Second}, engines.Stats{NackedTotal: 1}},
		{"nack at max", engines.Settlement{Verdict: engines.Nack, Reason: "boom"}, 1, Outcome{Action: Dead, Reason: "max attempts (2) reached: boom"}, engines.Stats{NackedTotal: 1}},
		{"requeue", engines.Settlement{Verdict: engines.Requeue, Delay: -time.Second}, 1, Outcome{Action: Retry}, engines.Stats{}},
		{"dead letter", engines.Settlement{Verdict: engines.DeadLetter}, 0, Outcome{Action: Dead, Reason: "dead-lettered by consumer"}, engines.Stats{}},
		{"dead letter with reason", engines.Settlement{Verdict: engines.DeadLetter, Reason: "poison"}, 0, Outcome{Action: Dead, Reason: "poison"}, engines.Stats{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := Lease{Failures: tc.failures}
			var st engines.Stats
			out, err := p.Settle(&l, tc.s, &st)
			if err != nil || out != tc.want || st != tc.stats {
				t.Fatalf("Settle = %+v, %v, stats %+v; want %+v, stats %+v", out, err, st, tc.want, tc.stats)
			}
		})
	}
	l := Lease{Failures: 1}
	var st engines.Stats
	if _, err := p.Settle(&l, engines.Settlement{Verdict: 99}, &st); !errors.Is(err, engines.ErrInvalid) || l.Failures != 1 || st != (engines.Stats{}) {
		t.Fatalf("unknown verdict: err %v, lease %+v, stats %+v; want ErrInvalid and no change", err, l, st)
	}
}

func TestDeadLetter(t *testing.T) {
	attrs := map[string]string{"k": "v"}
	m := engines.Message{ID: "1", Body: []byte("b"), Attributes: attrs, Delay: time.Second, TTL: time.Second, DedupID: "d", Priority: 7}
	dl := DeadLetter(m, "src", "why")
	if len(attrs) != 1 {
		t.Fatal("DeadLetter wrote into the enqueuer's attribute map")
	}
	want := map[string]string{"k": "v", engines.AttrDeadLetterReason: "why", engines.AttrDeadLetterSource: "src"}
	if len(dl.Attributes) != len(want) || dl.Attributes[engines.AttrDeadLetterReason] != "why" || dl.Attributes[engines.AttrDeadLetterSource] != "src" || dl.Attributes["k"] != "v" {
		t.Fatalf("attributes = %v, want %v", dl.Attributes, want)
	}
	if dl.Delay != 0 || dl.TTL != 0 || dl.DedupID != "" || dl.ID != "1" || dl.Priority != 7 {
		t.Fatalf("dead letter = %+v", dl)
	}
}

func TestGroups(t *testing.T) {
	s := []string{"a", "a", "b", "a", "c", "c"}
	var got []string
	for target, run := range Groups(s, func(x *string) string { return *x }) {
		got = append(got, target+":"+string(rune('0'+len(run))))
		if target == "a" && len(got) == 3 {
			break
		}
	}
	if want := []string{"a:2", "b:1", "a:1"}; !slices.Equal(got, want) {
		t.Fatalf("groups = %v, want %v (and stop when told)", got, want)
	}
}

func TestAfter(t *testing.T) {
	if After(10, -5) != 10 || After(10, 5) != 15 || After(math.MaxInt64-1, time.Hour) != math.MaxInt64 {
		t.Fatal("After does not clamp or saturate")
	}
}

func TestBlock(t *testing.T) {
	errClosed := errors.New("closed")
	wait := make(chan struct{})
	calls := 0
	take := func() (int, <-chan struct{}, error) {
		calls++
		switch calls {
		case 1:
			return 0, nil, nil // vanished: retried at once
		case 2:
			close(wait)
			return 0, wait, nil // woken: retried
		}
		return 3, nil, nil
	}
	n, err := Block(context.Background(), nil, func() error { return nil }, take)
	if n != 3 || err != nil || calls != 3 {
		t.Fatalf("Block = %d, %v after %d takes", n, err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	never := func() (int, <-chan struct{}, error) { return 0, make(chan struct{}), nil }
	if _, err := Block(ctx, nil, func() error { return nil }, never); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Block = %v", err)
	}
	done := make(chan struct{})
	isClosed := false
	closedTake := func() (int, <-chan struct{}, error) {
		isClosed = true
		close(done)
		return 0, make(chan struct{}), nil
	}
	closed := func() error {
		if isClosed {
			return errClosed
		}
		return nil
	}
	if _, err := Block(context.Background(), done, closed, closedTake); err != errClosed {
		t.Fatalf("Block on a closed handle = %v", err)
	}
}

func TestTimer(t *testing.T) {
	fired := make(chan struct{}, 1)
	tm := NewTimer(func() { fired <- struct{}{} })
	defer tm.Stop()
	tm.Arm(int64(time.Hour), 0)
	if !tm.armed || tm.at != int64(time.Hour) {
		t.Fatalf("after Arm: %+v", tm)
	}
	tm.Arm(int64(2*time.Hour), 0) // later: left as it is
	if tm.at != int64(time.Hour) || tm.Needs(int64(2*time.Hour)) || tm.Needs(int64(time.Hour)) {
		t.Fatalf("a deadline no earlier than the armed one re-armed the timer: at %d", tm.at)
	}
	if !tm.Needs(int64(time.Minute)) {
		t.Fatal("an earlier deadline does not need the timer reset")
	}
	tm.Arm(5, 5) // due now: fires
	<-fired
	tm.Fired()
	if tm.armed {
		t.Fatal("Fired left the timer armed")
	}
}
