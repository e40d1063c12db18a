package qrun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/qrun-dev/qrun/abi"
)

// Errors returned by Fetch besides ErrDenied, ErrTooLarge, ErrInvalid and
// ErrNoMessage, one per ABI error code.
var (
	// ErrTimeout: the request ran out of time (its timeout or what was
	// left of the delivery's). Retrying later may work.
	ErrTimeout = errors.New("qrun: timed out")
	// ErrConnect: the host could not connect, or the connection failed.
	// Retrying later may work.
	ErrConnect = errors.New("qrun: connection failed")
	// ErrLimit: this delivery already made the consumer's max_requests.
	ErrLimit = errors.New("qrun: request limit of this delivery reached")
)

// Request is an outbound HTTP request. The consumer's http block decides
// where it may go (abi/ABI.md section 4, "Outbound HTTP").
type Request struct {
	// Method is an HTTP method; "" is GET.
	Method string
	// URL is an absolute http:// or https:// URL.
	URL string
	// Header holds request headers, one value each. The consumer's default
	// headers and idempotency header are added by the host unless set here.
	Header map[string]string
	// Body is sent as it is; nil sends none.
	Body []byte
}

// Response is a complete response: the host has read the whole body.
type Response struct {
	// Status is the HTTP status code; a 404 or a 503 is a Response, not an
	// error.
	Status int
	// Header maps canonical names (Content-Type) to their values.
	Header map[string][]string
	// Body is the response body.
	Body []byte
}

// Get returns the first value of header name, in any case, or "".
func (r *Response) Get(name string) string {
	if vs := r.Header[canonical(name)]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// canonical is the canonical form of a header name: Go's net/http spelling,
// which the host uses, without importing net/http into every guest.
func canonical(name string) string {
	b := []byte(strings.ToLower(name))
	upper := true
	for i, c := range b {
		if upper && c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		upper = c == '-'
	}
	return string(b)
}

// Fetch sends req and waits for the whole response. The error wraps one of
// ErrDenied (not allowed), ErrTimeout, ErrConnect, ErrTooLarge (response
// over max_response_size), ErrLimit, ErrInvalid or ErrNoMessage.
func Fetch(req *Request) (*Response, error) {
	method := req.Method
	if method == "" {
		method = "GET"
	}
	hdrs, err := encodeAttrs(req.Header)
	if err != nil {
		return nil, err
	}
	status := hostHTTPRequest(method, req.URL, hdrs, req.Body)
	if status < 0 {
		return nil, fmt.Errorf("%s %s: %w", method, req.URL, httpError(status))
	}
	resp := &Response{Status: int(status)}
	if resp.Body, err = readBytes(hostHTTPResponseBody); err != nil {
		return nil, err
	}
	enc, err := readBytes(hostHTTPResponseHeaders)
	if err != nil {
		return nil, err
	}
	resp.Header = decodeHeaders(enc)
	return resp, nil
}

func httpError(code int32) error {
	switch code {
	case abi.ErrTimeout:
		return ErrTimeout
	case abi.ErrConnect:
		return ErrConnect
	case abi.ErrLimit:
		return ErrLimit
	}
	return codeError(code)
}

// readBytes reads a byte value the way readString reads a string: call
// once, and again with a buffer of the size the host says.
func readBytes(call func(buf []byte) int32) ([]byte, error) {
	buf := scratch
	for {
		n := call(buf)
		if n < 0 {
			return nil, codeError(n)
		}
		if int(n) <= len(buf) {
			return append([]byte(nil), buf[:n]...), nil
		}
		buf = make([]byte, n)
	}
}

// decodeHeaders decodes the ABI's pair encoding; names may repeat.
func decodeHeaders(b []byte) map[string][]string {
	h := make(map[string][]string)
	next := func() (string, bool) {
		if len(b) < 4 {
			return "", false
		}
		n := binary.LittleEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return "", false
		}
		s := string(b[4 : 4+n])
		b = b[4+n:]
		return s, true
	}
	for len(b) > 0 {
		k, ok := next()
		if !ok {
			break
		}
		v, ok := next()
		if !ok {
			break
		}
		h[k] = append(h[k], v)
	}
	return h
}

// httpTimeFormat is net/http's TimeFormat, the form of an HTTP date.
const httpTimeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

// RetryAfter returns how long the response asks the client to wait before
// trying again: its Retry-After header, in seconds or as an HTTP date
// (relative to Now), when the status is 429 or 503. ok is false when the
// response does not say; a date in the past is 0.
func (r *Response) RetryAfter() (d time.Duration, ok bool) {
	if r.Status != 429 && r.Status != 503 {
		return 0, false
	}
	v := strings.TrimSpace(r.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(7*24*time.Hour/time.Second) {
			secs = int64(7 * 24 * time.Hour / time.Second) // the host clamps set_delay to 7 days anyway
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := time.Parse(httpTimeFormat, v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(Now()), 0), true
}

// RetryLater is the verdict for a response worth retrying (5xx, 429): it
// sets the retry delay from Retry-After when the response has one, so the
// message comes back when the server asked, and returns Nack, which counts
// an attempt so a server that never recovers still dead-letters the message.
func RetryLater(r *Response) Verdict {
	if d, ok := r.RetryAfter(); ok {
		SetDelay(d)
	}
	return Nack
}
