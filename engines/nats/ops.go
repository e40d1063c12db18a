package nats

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qrun-dev/qrun/engines"
)

var (
	_ engines.Peeker   = (*Queue)(nil)
	_ engines.Purger   = (*Queue)(nil)
	_ engines.Redriver = (*Queue)(nil)
)

// peekScanLimit bounds how many messages Peek reads to find the first
// ones in delivery order: a stream is read message by message.
const peekScanLimit = 10000

// scanned is one stored message as an operator call sees it.
type scanned struct {
	raw   *jetstream.RawStreamMsg
	meta  meta
	rec   record
	state engines.MessageState
	until int64
}

// scan reads the stream's messages from sequence from on, calling fn for
// each until it returns false or the stream ends. delivered is the last
// sequence the consumer delivered (to tell leased messages from others).
func (q *Queue) scan(ctx context.Context, from uint64, fn func(s *scanned) bool) error {
	ci, err := q.cons.Info(ctx)
	if err != nil {
		return err
	}
	delivered := ci.Delivered.Stream
	now := time.Now().UnixNano()
	for seq := max(from, 1); ; seq++ {
		raw, err := q.str.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(q.subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		seq = raw.Sequence
		s := &scanned{raw: raw}
		s.meta, _ = decodeMeta(raw.Header)
		if s.rec, _, err = q.getRecord(ctx, seq); err != nil {
			return err
		}
		s.until = s.rec.Until
		if s.until == 0 {
			s.until = s.meta.NotBefore
		}
		switch {
		case seq <= delivered && !s.rec.Back:
			s.state = engines.StateInFlight
		case s.until > now:
			s.state = engines.StateDelayed
		default:
			s.state = engines.StateReady
		}
		if !fn(s) {
			return nil
		}
	}
}

// delivery is the lease-less delivery of a scanned message: its history
// so far (the attempts made, the failures counted).
func (q *Queue) delivery(s *scanned) engines.Delivery {
	return engines.Delivery{
		Message:    messageOf(&s.meta, s.raw.Sequence, s.raw.Data),
		Queue:      q.name,
		Attempt:    s.meta.Attempt + s.rec.Settled - s.rec.Holds,
		Failures:   s.meta.Failures + s.rec.Failures,
		EnqueuedAt: enqueuedAt(&s.meta, s.raw.Time),
	}
}

// Peek implements engines.Peeker: ready messages in stream order, then
// delayed ones by due time, from the first peekScanLimit messages.
func (q *Queue) Peek(ctx context.Context, n int) ([]engines.Delivery, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("peek %q: max %d < 1: %w", q.name, n, engines.ErrInvalid)
	}
	if q.cons == nil {
		return nil, fmt.Errorf("peek %q: engine opened to produce only: %w", q.name, engines.ErrUnsupported)
	}
	var ready, delayed []*scanned
	read := 0
	err := q.scan(ctx, 1, func(s *scanned) bool {
		read++
		switch s.state {
		case engines.StateReady:
			ready = append(ready, s)
		case engines.StateDelayed:
			delayed = append(delayed, s)
		}
		return len(ready) < n && read < peekScanLimit
	})
	if err != nil {
		return nil, fmt.Errorf("peek %q: %w", q.name, err)
	}
	slices.SortStableFunc(delayed, func(a, b *scanned) int { return int(min(max(a.until-b.until, -1), 1)) })
	out := make([]engines.Delivery, 0, n)
	for _, s := range append(ready, delayed...) {
		if len(out) == n {
			break
		}
		out = append(out, q.delivery(s))
	}
	return out, nil
}

// PeekPage implements engines.Peeker: the scan order is the stream's
// sequence, and the cursor the last sequence of the page.
func (q *Queue) PeekPage(ctx context.Context, opts engines.PeekOptions) (engines.PeekPage, error) {
	if err := q.check(); err != nil {
		return engines.PeekPage{}, err
	}
	if opts.Max < 1 {
		return engines.PeekPage{}, fmt.Errorf("peek %q: max %d < 1: %w", q.name, opts.Max, engines.ErrInvalid)
	}
	if q.cons == nil {
		return engines.PeekPage{}, fmt.Errorf("peek %q: engine opened to produce only: %w", q.name, engines.ErrUnsupported)
	}
	var after uint64
	if opts.After != "" {
		var err error
		if after, err = strconv.ParseUint(opts.After, 10, 64); err != nil || after == 0 {
			return engines.PeekPage{}, fmt.Errorf("peek %q: cursor %q: %w", q.name, opts.After, engines.ErrInvalid)
		}
	}
	var page engines.PeekPage
	var last uint64
	more := false
	err := q.scan(ctx, after+1, func(s *scanned) bool {
		if len(page.Messages) == opts.Max {
			more = true
			return false
		}
		last = s.raw.Sequence
		if s.state != engines.StateInFlight || opts.InFlight {
			page.Messages = append(page.Messages, engines.Peeked{Delivery: q.delivery(s), State: s.state})
		}
		return true
	})
	if err != nil {
		return engines.PeekPage{}, fmt.Errorf("peek %q: %w", q.name, err)
	}
	if more {
		page.Next = strconv.FormatUint(last, 10)
	}
	return page, nil
}

// Purge implements engines.Purger: it deletes every message that is not
// leased, one by one (a stream purge would take the leased ones too).
func (q *Queue) Purge(ctx context.Context) (int64, error) {
	if err := q.check(); err != nil {
		return 0, err
	}
	if q.cons == nil {
		return 0, fmt.Errorf("purge %q: engine opened to produce only: %w", q.name, engines.ErrUnsupported)
	}
	var n int64
	var derr error
	err := q.scan(ctx, 1, func(s *scanned) bool {
		if s.state == engines.StateInFlight {
			return true
		}
		if derr = q.remove(ctx, s.raw.Sequence); derr != nil {
			return false
		}
		n++
		return true
	})
	if err == nil {
		err = derr
	}
	if n > 0 {
		q.count(ctx, func(c *counters) { c.Removed += n })
	}
	if err != nil {
		return n, fmt.Errorf("purge %q: %w", q.name, err)
	}
	return n, nil
}

// remove deletes message seq and its history; one already gone is no
// error (a consumer took it meanwhile).
func (q *Queue) remove(ctx context.Context, seq uint64) error {
	if err := q.str.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	q.dropRecord(ctx, seq)
	return nil
}

// Redrive implements engines.Redriver: each message is published to its
// source queue (keeping its ID, body and attributes, its history reset)
// and then deleted here.
func (q *Queue) Redrive(ctx context.Context, ids []string) (int, error) {
	if err := q.check(); err != nil {
		return 0, err
	}
	if q.cons == nil {
		return 0, fmt.Errorf("redrive %q: engine opened to produce only: %w", q.name, engines.ErrUnsupported)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	moved := 0
	var merr error
	err := q.scan(ctx, 1, func(s *scanned) bool {
		if s.state == engines.StateInFlight {
			return true
		}
		id := messageOf(&s.meta, s.raw.Sequence, nil).ID
		src := s.meta.Attrs[engines.AttrDeadLetterSource]
		if (len(want) > 0 && !want[id]) || src == "" || checkName(src) != nil {
			return true
		}
		if merr = q.redriveOne(ctx, s, id, src); merr != nil {
			return false
		}
		moved++
		return true
	})
	if err == nil {
		err = merr
	}
	if moved > 0 {
		q.count(ctx, func(c *counters) { c.Removed += int64(moved) })
	}
	if err != nil {
		return moved, fmt.Errorf("redrive %q: %w", q.name, err)
	}
	return moved, nil
}

func (q *Queue) redriveOne(ctx context.Context, s *scanned, id, src string) error {
	if _, err := q.e.queue(ctx, src, nil); err != nil {
		return err
	}
	attrs := maps.Clone(s.meta.Attrs)
	delete(attrs, engines.AttrDeadLetterReason)
	delete(attrs, engines.AttrDeadLetterSource)
	if len(attrs) == 0 {
		attrs = nil
	}
	md := meta{ID: id, Attrs: attrs, ContentType: s.meta.ContentType, Correlation: s.meta.Correlation,
		OrderingKey: s.meta.OrderingKey, Priority: s.meta.Priority, EnqueuedAt: enqueuedAt(&s.meta, s.raw.Time).UnixNano()}
	nm, err := encode(q.e.subject(src), &md, s.raw.Data, "")
	if err != nil {
		return err
	}
	if _, err := q.e.js.PublishMsg(ctx, nm); err != nil {
		return fmt.Errorf("publishing to %q: %w", src, err)
	}
	return q.remove(ctx, s.raw.Sequence)
}
