//go:build linux

package ring

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// Record is one slot's content as Push takes it and TryPop returns it.
type Record struct {
	// Pos is the position the record was published at (set by Push and
	// TryPop); it is unique for the life of the segment.
	Pos uint64
	// Flags are the slot flags (FlagEnvelope).
	Flags uint32
	// Enqueued is the enqueue time in Unix nanoseconds; 0 means unknown.
	Enqueued int64
	// Visible is the earliest delivery time in Unix nanoseconds; 0 means at once.
	Visible int64
	// Data is the record's bytes, at most the slot size. TryPop's records
	// own their Data (a copy, never the shared memory).
	Data []byte
}

// TooLargeError reports a record that does not fit a slot. It wraps
// ErrTooLarge.
type TooLargeError struct {
	Size, SlotSize int
}

// Error says both sizes.
func (e *TooLargeError) Error() string {
	return fmt.Sprintf("ring: record of %d bytes does not fit a %d-byte slot", e.Size, e.SlotSize)
}

// Unwrap makes errors.Is(err, ErrTooLarge) hold.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// Tuning of the waits. Spins are short because this machine's two cores are
// shared: a long spin steals the core the other side needs to make progress.
const (
	spins = 16
	// maxSleep bounds one futex sleep, so a wake-up lost to a process that
	// died between publishing and waking costs at most this much latency.
	maxSleep = time.Second
	// readerGrace is how many times a cyclic producer re-checks a slot a
	// live reader is copying before overwriting it anyway.
	readerGrace = 64
)

// Push publishes recs in order. In blocking mode it waits for space until
// ctx is done or, when ctx has no deadline, for Options.SendTimeout; in
// cyclic mode it overwrites the oldest records instead. It returns how many
// records it published from the front of recs (all of them unless the
// error is not nil) and writes each one's position into recs[i].Pos.
// A record the stall rule skipped after it was claimed (this process was
// stopped for longer than the stall timeout) is published again, after the
// ones that follow it.
func (r *Ring) Push(ctx context.Context, recs []Record) (int, error) {
	for i := range recs {
		if len(recs[i].Data) > r.geo.SlotSize {
			return 0, &TooLargeError{Size: len(recs[i].Data), SlotSize: r.geo.SlotSize}
		}
	}
	if err := r.enter(); err != nil {
		return 0, err
	}
	defer r.leave()
	var (
		deadline time.Time
		retry    []int
		done     int
	)
	for done < len(recs) {
		n := r.tryPush(recs[done:], done, &retry)
		if n > 0 {
			done += n
			continue
		}
		if deadline.IsZero() {
			deadline = r.sendDeadline(ctx)
		}
		if err := r.waitSpace(ctx, deadline); err != nil {
			return done, err
		}
	}
	// Rare: records whose claim was skipped go out again now.
	for len(retry) > 0 {
		again := make([]Record, len(retry))
		for i, j := range retry {
			again[i] = recs[j]
		}
		idx := retry
		retry = nil
		for sent := 0; sent < len(again); {
			n := r.tryPush(again[sent:], sent, &retry)
			if n == 0 {
				if deadline.IsZero() {
					deadline = r.sendDeadline(ctx)
				}
				if err := r.waitSpace(ctx, deadline); err != nil {
					return len(recs) - len(again) + sent, err
				}
			}
			sent += n
		}
		for i, j := range idx {
			recs[j].Pos = again[i].Pos
		}
		for k, i := range retry {
			retry[k] = idx[i]
		}
	}
	return len(recs), nil
}

func (r *Ring) sendDeadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(r.opts.SendTimeout)
}

// tryPush claims as many free positions as it can for the front of recs
// (at least one unless the ring is full), writes and publishes them, and
// returns how many it claimed. base is recs[0]'s index for retry.
func (r *Ring) tryPush(recs []Record, base int, retry *[]int) int {
	h := r.hdr
	for {
		p := h.tail.Load()
		s := r.slot(p)
		seq := s.seq.Load()
		switch {
		case seq == 2*p:
			k := uint64(1)
			for k < uint64(len(recs)) && r.slot(p+k).seq.Load() == 2*(p+k) {
				k++
			}
			if !h.tail.CompareAndSwap(p, p+k) {
				continue
			}
			// Progress: forget any stall clock (it is cheap when unarmed).
			r.writeStall.clear()
			published := uint64(0)
			for j := uint64(0); j < k; j++ {
				rec := &recs[j]
				s := r.slot(p + j)
				s.length = uint32(len(rec.Data))
				s.flags = rec.Flags
				s.enqueued = rec.Enqueued
				s.visible = rec.Visible
				copy(r.slotData(s), rec.Data)
				rec.Pos = p + j
				if s.seq.CompareAndSwap(2*(p+j), 2*(p+j)+1) {
					published++
				} else {
					*retry = append(*retry, base+int(j))
				}
			}
			h.published.Add(published)
			r.signalData()
			return int(k)
		case seq > 2*p:
			continue // another producer claimed p: tail has moved on
		case p < r.cap:
			continue // impossible on the first lap: a torn read of tail
		}
		// The slot still holds position p-cap.
		old := p - r.cap
		if r.geo.Mode == Cyclic {
			if r.overwrite(old, seq) {
				continue
			}
			return 0
		}
		// Blocking: full, unless a reader claimed the slot and died.
		if head := h.head.Load(); seq == 2*old+1 && head > old {
			if overdue, _ := r.writeStall.overdue(old, head, r.opts.StallTimeout); overdue {
				if s.seq.CompareAndSwap(seq, 2*p) {
					h.abandoned.Add(1)
				}
				continue
			}
		}
		return 0
	}
}

// overwrite frees the slot of position old for a cyclic producer and
// reports whether the caller should retry its claim (false: the slot is
// being written by a producer that has not yet published, so wait).
func (r *Ring) overwrite(old, seq uint64) bool {
	h := r.hdr
	s := r.slot(old)
	next := 2 * (old + r.cap)
	switch seq {
	case 2*old + 1: // published: unread, or a reader is copying it
		head := h.head.Load()
		if head == old {
			if h.head.CompareAndSwap(old, old+1) && s.seq.CompareAndSwap(seq, next) {
				h.overwritten.Add(1)
			}
			return true
		}
		if head > old {
			for range readerGrace {
				if s.seq.Load() != seq {
					return true
				}
				runtime.Gosched()
			}
			// The reader's release will fail and it discards its copy.
			if s.seq.CompareAndSwap(seq, next) {
				h.overwritten.Add(1)
			}
		}
		return true
	case 2 * old: // claimed by a producer that has not published
		if overdue, _ := r.writeStall.overdue(old, h.tail.Load(), r.opts.StallTimeout); !overdue {
			return false
		}
		if r.skipStalled(old) {
			// Published at the last moment: it is now the oldest, and ours.
			if s.seq.CompareAndSwap(seq+1, next) {
				h.overwritten.Add(1)
			}
		}
		return true
	}
	return true
}

// skipStalled applies the stall rule to the unpublished slot at position
// pos: it claims the head and frees the slot for the next lap. It returns
// true when the producer published after all and the caller now owns a
// published record at pos (which it must consume or drop).
func (r *Ring) skipStalled(pos uint64) bool {
	h := r.hdr
	if !h.head.CompareAndSwap(pos, pos+1) {
		return false
	}
	if r.slot(pos).seq.CompareAndSwap(2*pos, 2*(pos+r.cap)) {
		h.skipped.Add(1)
		r.signalSpace()
		return false
	}
	return true
}

// TryPop takes up to len(out) published records without waiting and
// returns how many it stored in out. It copies their bytes into one new
// buffer that the records' Data slices share.
func (r *Ring) TryPop(out []Record) (int, error) {
	n, _, err := r.TryPopReserve(out, 0)
	return n, err
}

// TryPopReserve is TryPop that also reserves perRecord bytes per record
// taken in the same allocation, returned as spare (length 0), so a caller
// that derives something from each record (an ID) allocates once a batch.
func (r *Ring) TryPopReserve(out []Record, perRecord int) (n int, spare []byte, err error) {
	if err := r.enter(); err != nil {
		return 0, nil, err
	}
	defer r.leave()
	h := r.hdr
	for {
		hd := h.head.Load()
		s := r.slot(hd)
		seq := s.seq.Load()
		switch {
		case seq == 2*hd+1:
			k := uint64(1)
			for k < uint64(len(out)) && r.slot(hd+k).seq.Load() == 2*(hd+k)+1 {
				k++
			}
			if !h.head.CompareAndSwap(hd, hd+k) {
				continue
			}
			r.readStall.clear()
			if n, spare := r.copyOut(hd, k, out, perRecord); n > 0 {
				return n, spare, nil
			}
			continue // every one was overwritten while copying
		case seq == 2*hd && h.tail.Load() > hd:
			// Claimed, not yet published: in progress, or its producer died.
			if overdue, _ := r.readStall.overdue(hd, h.tail.Load(), r.opts.StallTimeout); !overdue {
				return 0, nil, nil
			}
			if r.skipStalled(hd) {
				if n, spare := r.copyOut(hd, 1, out, perRecord); n > 0 {
					return n, spare, nil
				}
			}
			continue
		case seq > 2*hd+1:
			continue // head moved on
		}
		return 0, nil, nil
	}
}

// copyOut copies the k claimed records from position hd into out and
// releases their slots. A slot whose release fails was overwritten while
// being copied, and its copy is dropped.
func (r *Ring) copyOut(hd, k uint64, out []Record, perRecord int) (int, []byte) {
	size := r.geo.SlotSize
	total := 0
	for j := uint64(0); j < k; j++ {
		total += min(int(r.slot(hd+j).length), size)
	}
	buf := make([]byte, total+int(k)*perRecord)
	n, off := 0, 0
	for j := uint64(0); j < k; j++ {
		pos := hd + j
		s := r.slot(pos)
		l := min(int(s.length), size, total-off)
		rec := Record{Pos: pos, Flags: s.flags, Enqueued: s.enqueued, Visible: s.visible}
		copy(buf[off:off+l], r.slotData(s)[:l])
		if s.seq.CompareAndSwap(2*pos+1, 2*(pos+r.cap)) {
			rec.Data = buf[off : off+l : off+l]
			out[n] = rec
			n++
			off += l
		}
	}
	r.signalSpace()
	return n, buf[total:total:len(buf)]
}

// Len is the number of positions claimed and not yet consumed.
func (r *Ring) Len() int {
	if err := r.enter(); err != nil {
		return 0
	}
	defer r.leave()
	head, tail := r.hdr.head.Load(), r.hdr.tail.Load()
	if tail <= head {
		return 0
	}
	return int(min(tail-head, r.cap))
}

// ready reports whether the head slot holds a published record.
func (r *Ring) ready() bool {
	hd := r.hdr.head.Load()
	return r.slot(hd).seq.Load() == 2*hd+1
}

// hasSpace reports whether the tail slot is free.
func (r *Ring) hasSpace() bool {
	p := r.hdr.tail.Load()
	return r.slot(p).seq.Load() == 2*p
}

// WaitData blocks until a record may be ready, Notify is called, ctx is
// done, or until (when not zero) passes; a spurious return is possible, so
// callers loop. local, if not nil, is checked after registering as a
// sleeper, so an event that a Notify follows cannot be missed in between.
// It returns ctx.Err() when ctx ended and ErrClosed when the ring closed.
func (r *Ring) WaitData(ctx context.Context, until time.Time, local func() bool) error {
	if err := r.enter(); err != nil {
		return err
	}
	defer r.leave()
	for range spins {
		if r.ready() || (local != nil && local()) {
			return nil
		}
		runtime.Gosched()
	}
	h := r.hdr
	h.dataWaiters.Add(1)
	defer h.dataWaiters.Add(^uint32(0))
	v := h.dataSeq.Load()
	if r.closed.Load() {
		return fmt.Errorf("ring %s: %w", r.path, ErrClosed)
	}
	if r.ready() || (local != nil && local()) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if at, ok := r.readStall.deadline(r.opts.StallTimeout); ok && (until.IsZero() || at.Before(until)) {
		until = at
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, r.Notify)
		defer stop()
	}
	futexWait(&h.dataSeq, v, sleepFor(ctx, until))
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.closed.Load() {
		return fmt.Errorf("ring %s: %w", r.path, ErrClosed)
	}
	return nil
}

// waitSpace blocks a producer of a full blocking ring until space may be
// free, ctx is done or deadline passes.
func (r *Ring) waitSpace(ctx context.Context, deadline time.Time) error {
	full := func(cause error) error {
		return fmt.Errorf("ring %s: %d slots full: %w (%w)", r.path, r.cap, ErrFull, cause)
	}
	for range spins {
		if r.hasSpace() {
			return nil
		}
		runtime.Gosched()
	}
	h := r.hdr
	h.spaceWaiters.Add(1)
	defer h.spaceWaiters.Add(^uint32(0))
	v := h.spaceSeq.Load()
	if r.closed.Load() {
		return fmt.Errorf("ring %s: %w", r.path, ErrClosed)
	}
	if r.hasSpace() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return full(err)
	}
	if !time.Now().Before(deadline) {
		return full(context.DeadlineExceeded)
	}
	until := deadline
	if at, ok := r.writeStall.deadline(r.opts.StallTimeout); ok && at.Before(until) {
		until = at
	}
	if r.geo.Mode == Cyclic {
		// Only a producer a lap ahead of a write still in progress waits
		// here, and nothing wakes the space word in cyclic mode: nap.
		until = minTime(until, time.Now().Add(50*time.Microsecond))
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, r.wakeSpace)
		defer stop()
	}
	futexWait(&h.spaceSeq, v, sleepFor(ctx, until))
	if r.closed.Load() {
		return fmt.Errorf("ring %s: %w", r.path, ErrClosed)
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// sleepFor is how long one futex sleep may last.
func sleepFor(ctx context.Context, until time.Time) time.Duration {
	d := maxSleep
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	if !until.IsZero() {
		d = min(d, time.Until(until))
	}
	return max(d, 0)
}

// Notify wakes every consumer sleeping in WaitData, in every process. The
// engine calls it when something other than a publish makes work ready. Like
// a publish, it makes the system call only when someone sleeps: a sleeper
// registers before it re-checks, so it either sees the change or is woken.
func (r *Ring) Notify() {
	if err := r.enter(); err != nil {
		return
	}
	defer r.leave()
	r.hdr.dataSeq.Add(1)
	if r.hdr.dataWaiters.Load() != 0 {
		futexWake(&r.hdr.dataSeq)
	}
}

func (r *Ring) wakeSpace() {
	if err := r.enter(); err != nil {
		return
	}
	defer r.leave()
	r.hdr.spaceSeq.Add(1)
	if r.hdr.spaceWaiters.Load() != 0 {
		futexWake(&r.hdr.spaceSeq)
	}
}

// wakeAll wakes every sleeper; Close calls it before taking the mapping
// lock (it must not take the lock itself).
func (r *Ring) wakeAll() {
	h := r.hdr
	h.dataSeq.Add(1)
	futexWake(&h.dataSeq)
	h.spaceSeq.Add(1)
	futexWake(&h.spaceSeq)
}

// signalData tells sleeping consumers that a record was published; the
// system call is made only when someone sleeps.
func (r *Ring) signalData() {
	h := r.hdr
	h.dataSeq.Add(1)
	if h.dataWaiters.Load() != 0 {
		futexWake(&h.dataSeq)
	}
}

// signalSpace tells blocked producers that a slot was freed.
func (r *Ring) signalSpace() {
	if r.geo.Mode != Blocking {
		return
	}
	h := r.hdr
	h.spaceSeq.Add(1)
	if h.spaceWaiters.Load() != 0 {
		futexWake(&h.spaceSeq)
	}
}

// Peek copies up to n published records from the head on, without
// consuming anything. Each copy is validated seqlock-style (the slot's
// sequence is the same after the copy as before), so a record consumed or
// overwritten meanwhile is left out rather than returned torn. It stops at
// the first slot still being written.
func (r *Ring) Peek(n int) ([]Record, error) { return r.PeekFrom(0, n) }

// PeekFrom is Peek starting at position from, or at the head when that is
// further on: the next page of a scan whose last record was at from-1.
func (r *Ring) PeekFrom(from uint64, n int) ([]Record, error) {
	if err := r.enter(); err != nil {
		return nil, err
	}
	defer r.leave()
	h := r.hdr
	head, tail := h.head.Load(), h.tail.Load()
	var out []Record
	for pos := max(head, from); pos < tail && len(out) < n; pos++ {
		s := r.slot(pos)
		seq := s.seq.Load()
		if seq != 2*pos+1 {
			if seq > 2*pos+1 {
				continue // consumed since head was read
			}
			break // not yet published
		}
		l := min(int(s.length), r.geo.SlotSize)
		rec := Record{Pos: pos, Flags: s.flags, Enqueued: s.enqueued, Visible: s.visible,
			Data: append([]byte(nil), r.slotData(s)[:l]...)}
		if s.seq.Load() != seq {
			continue
		}
		out = append(out, rec)
	}
	return out, nil
}
