// Command webhook is an example qrun handler that delivers each message to
// an HTTP endpoint: it POSTs the body to the URL in config key url and
// lets the receiver's answer decide the verdict.
//
//   - 2xx: delivered, acked.
//   - 429 and 5xx: the receiver is overloaded or failing; nacked so qrun
//     retries, after the Retry-After the receiver asked for when it sent
//     one (otherwise the queue's retry backoff), and dead-letters the
//     message after max_attempts.
//   - A timeout or a failed connection: nacked, retried the same way.
//   - Any other status (a 4xx, a redirect that was not followed): the
//     receiver refused this message and will refuse it again, so it is
//     dead-lettered at once. The dead letter's reason (qrun dlq show) is
//     the status and the start of the response, e.g.
//     `webhook: 404 Not Found: "no such hook"`.
//   - A URL the consumer's http block does not allow: dead-lettered with
//     the error as its reason, since no retry can fix a configuration
//     mistake; fix it and redrive.
//
// The consumer's http block adds the idempotency header, so a receiver that
// honours it drops the duplicate a retry after a lost answer would be.
package main

import (
	"errors"
	"fmt"

	qrun "github.com/qrun-dev/qrun/plugins/sdk/go"
)

// url and contentType are read once per instance: config cannot change
// during an instance's life.
var url, contentType string

func init() {
	qrun.Init(func() error {
		var ok bool
		if url, ok = qrun.Config("url"); !ok || url == "" {
			return errors.New("config url is required: the endpoint to POST messages to")
		}
		if contentType, ok = qrun.Config("content_type"); !ok {
			contentType = "application/octet-stream"
		}
		return nil
	})
	qrun.Handle(handle)
}

func handle(m *qrun.Message) qrun.Verdict {
	ct := m.ContentType()
	if ct == "" {
		ct = contentType
	}
	resp, err := qrun.Fetch(&qrun.Request{Method: "POST", URL: url, Header: map[string]string{"Content-Type": ct}, Body: m.Body})
	switch {
	case errors.Is(err, qrun.ErrDenied), errors.Is(err, qrun.ErrInvalid):
		return qrun.DeadLetterWith("webhook: " + err.Error())
	case err != nil:
		qrun.Warnf("retry: %v", err)
		return qrun.Nack
	case resp.Status >= 200 && resp.Status < 300:
		return qrun.Ack
	case resp.Status == 429 || resp.Status >= 500:
		qrun.Warnf("retry: POST %s: %d", url, resp.Status)
		return qrun.RetryLater(resp)
	}
	return qrun.DeadLetterWith(reason(resp))
}

// reason is a refused delivery's dead-letter reason: the status, its text
// and the start of the response body, if any.
func reason(resp *qrun.Response) string {
	r := fmt.Sprintf("webhook: %d", resp.Status)
	if t := statusText[resp.Status]; t != "" {
		r += " " + t
	}
	if len(resp.Body) > 0 {
		r += ": " + excerpt(resp.Body)
	}
	return r
}

// statusText names the statuses a webhook is dead-lettered for (net/http's
// table would add megabytes to the module).
var statusText = map[int]string{
	300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
	304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
	400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
	404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout",
	409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
	413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
	422: "Unprocessable Entity", 423: "Locked", 426: "Upgrade Required", 451: "Unavailable For Legal Reasons",
}

// excerpt is the start of a response body, quoted.
func excerpt(b []byte) string {
	const max = 200
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// main is not run: the module is a WASI reactor.
func main() {}
