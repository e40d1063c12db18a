package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// cmdPeek shows a queue's messages without consuming them. It pages
// through the queue with the admin API's scan cursor and writes each page
// as it arrives, so --all streams a queue of any size in the memory of one
// page.
func cmdPeek(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	af := addAdminFlags(fs)
	all := fs.Bool("all", false, "every message of the queue, not only the first -n")
	n := fs.IntP("limit", "n", admin.DefaultPeekLimit, "show at most `N` messages (without --all)")
	inFlight := fs.Bool("in-flight", false, "include messages leased by a consumer")
	asJSON := fs.Bool("json", false, "one JSON object per message per line")
	bodyLimit := fs.Int("body-limit", admin.DefaultPeekBodyLimit, "cut bodies longer than `B` bytes (at most 64 MiB)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("peek needs one QUEUE, got %d arguments", len(pos))
	}
	if !*all && *n < 1 {
		return usagef("-n %d: want at least 1", *n)
	}
	if *bodyLimit < 1 || *bodyLimit > admin.MaxRequestBody {
		return usagef("--body-limit %d: want 1 to %d", *bodyLimit, admin.MaxRequestBody)
	}
	c, err := af.client(stderr)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	enc := json.NewEncoder(w)
	q := admin.PeekQuery{Scan: true, InFlight: *inFlight, BodyLimit: *bodyLimit}
	shown := 0
	for {
		q.Limit = admin.MaxPeekLimit
		if !*all {
			q.Limit = min(q.Limit, *n-shown)
		}
		// The timeout bounds each request, not the whole scan, which may
		// be as long as the queue is large.
		ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
		r, err := c.PeekQuery(ctx, pos[0], q)
		cancel()
		if err != nil {
			_ = w.Flush()
			return apiError(c, err)
		}
		for i := range r.Messages {
			if *asJSON {
				err = enc.Encode(&r.Messages[i])
			} else {
				err = printPeeked(w, &r.Messages[i])
			}
			if err != nil {
				return fmt.Errorf("peek %s: writing: %w", pos[0], err)
			}
		}
		shown += len(r.Messages)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("peek %s: writing: %w", pos[0], err)
		}
		if r.NextCursor == "" || (!*all && shown >= *n) {
			break
		}
		q.Cursor = r.NextCursor
	}
	if shown == 0 && !*asJSON {
		fmt.Fprintf(stdout, "%s holds no messages to show\n", pos[0])
	}
	return nil
}

// printPeeked writes one message for a person: a header line and its body.
func printPeeked(w io.Writer, m *admin.MessageInfo) error {
	fmt.Fprintf(w, "%s  ", m.ID)
	if m.State != "" { // a page of a cursor scan says; a plain peek does not
		fmt.Fprintf(w, "%s  ", m.State)
	}
	fmt.Fprintf(w, "attempt %d  failures %d  enqueued %s", m.Attempt, m.Failures, m.EnqueuedAt.Local().Format(time.DateTime))
	if m.DeadLetterSource != "" {
		fmt.Fprintf(w, "  from %s", m.DeadLetterSource)
	}
	fmt.Fprintln(w)
	if m.DeadLetterReason != "" {
		fmt.Fprintf(w, "  reason: %s\n", oneLine(m.DeadLetterReason, 200))
	}
	body := m.Body
	if m.BodyBase64 != "" {
		body = "base64:" + m.BodyBase64
	}
	_, err := fmt.Fprintf(w, "  body (%d B): %s\n", m.BodySize, oneLine(body, 200))
	return err
}
