// Package httpout is qrun's outbound HTTP for guests: one Client per
// consumer plugin, with the consumer's allow list, time and size limits,
// default headers and a connection pool of its own, so one consumer's
// traffic (or a hostile guest's) cannot use another's connections or grants.
//
// Nothing is reachable by default. A request's URL must match a Rule; every
// redirect is checked the same way; and every connection is checked again
// when it is dialled, against the resolved address, so a name that resolves
// to loopback or a private network (DNS rebinding included) is refused
// unless the operator listed that exact name or that IP. Guests get the
// result through the host functions in runtime/plugin (abi/ABI.md section 4).
package httpout

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Defaults of a Policy's zero fields, exported so config, docs and tests
// agree with the client.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultMaxResponseSize = 1 << 20
	DefaultMaxRequests     = 10
	DefaultMaxConnections  = 16
	// MaxRedirects is how many redirects a request follows; the response to
	// the last one is handed to the guest as it is.
	MaxRedirects = 5
	// DefaultFailureLogRate is how many failed requests per second a
	// consumer logs; the rest are counted and reported with the next line.
	DefaultFailureLogRate = 5
)

// Policy is one consumer's outbound HTTP grant.
type Policy struct {
	// Allow lists what may be reached; empty denies everything.
	Allow []Rule
	// Timeout bounds one request, redirects and body included; the caller's
	// deadline (the delivery's remaining time) bounds it further.
	Timeout time.Duration
	// MaxResponseSize caps a response body in bytes; a larger one fails
	// the request with ErrTooLarge.
	MaxResponseSize int64
	// MaxRequests caps the requests of one delivery. The client does not
	// know deliveries; the plugin host enforces it.
	MaxRequests int
	// MaxConnections caps the connections to one host:port.
	MaxConnections int
	// Headers are added to every request that does not set them itself.
	Headers map[string]string
	// IdempotencyHeader, when set, names the header that carries
	// Request.IdempotencyKey.
	IdempotencyHeader string
}

// withDefaults fills zero fields.
func (p Policy) withDefaults() Policy {
	if p.Timeout <= 0 {
		p.Timeout = DefaultTimeout
	}
	if p.MaxResponseSize <= 0 {
		p.MaxResponseSize = DefaultMaxResponseSize
	}
	if p.MaxRequests <= 0 {
		p.MaxRequests = DefaultMaxRequests
	}
	if p.MaxConnections <= 0 {
		p.MaxConnections = DefaultMaxConnections
	}
	return p
}

// Resolver resolves a host name; *net.Resolver is one. Tests inject a map,
// since only loopback exists where they run.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options are a Client's dependencies.
type Options struct {
	// Resolver resolves names before dialling; nil is net.DefaultResolver.
	Resolver Resolver
	// Logger receives failed requests, rate-limited; nil discards them.
	Logger *zap.Logger
	// TLS configures HTTPS; nil uses the system roots.
	TLS *tls.Config
	// FailureLogRate is the failed requests logged per second; zero means
	// DefaultFailureLogRate.
	FailureLogRate int
}

// Errors a request fails with, told apart with errors.Is. Each maps to one
// ABI error code.
var (
	ErrDenied   = errors.New("denied")
	ErrTimeout  = errors.New("timed out")
	ErrConnect  = errors.New("connection failed")
	ErrTooLarge = errors.New("response too large")
	ErrInvalid  = errors.New("invalid request")
)

// Error is a failed request: Kind is one of the Err values above, Host the
// host asked for.
type Error struct {
	// Kind is ErrDenied, ErrTimeout, ErrConnect, ErrTooLarge or ErrInvalid.
	Kind error
	// Host is the host name the request (or its redirect) named.
	Host string
	// Err is the cause, for logs.
	Err error
}

// Error names the host once, then the kind and the cause.
func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("http request to %s: %v", e.Host, e.Kind)
	}
	return fmt.Sprintf("http request to %s: %v: %v", e.Host, e.Kind, e.Err)
}

// Unwrap exposes both the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// Request is what a guest asks for.
type Request struct {
	// Method is the HTTP method; "" is GET.
	Method string
	// URL is absolute, http or https.
	URL string
	// Header is sent as it is, plus the policy's defaults it lacks.
	Header http.Header
	// Body is sent as it is; nil sends none.
	Body []byte
	// Deadline, when set, is the latest the request may end: the delivery's
	// own deadline, so a request never outlives its delivery.
	Deadline time.Time
	// IdempotencyKey is sent in Policy.IdempotencyHeader, when both are set
	// and the request does not set that header itself.
	IdempotencyKey string
	// MessageID names the delivery in failure logs.
	MessageID string
}

// Response is a complete response: the body has been read, up to the
// policy's maximum.
type Response struct {
	// Status is the final status code, after redirects.
	Status int
	// Header is the final response's header.
	Header http.Header
	// Body is the whole body, at most the policy's MaxResponseSize.
	Body []byte
}

// IdempotencyKey derives the idempotency key of a message: the same for
// every attempt of the message and different for every other message, so
// a receiver can drop a retried duplicate. It is a hash so that any queue
// name or message id gives a valid header value of fixed length.
func IdempotencyKey(queue, id string) string {
	h := sha256.New()
	h.Write([]byte(queue))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Client performs a consumer's requests. It is safe for concurrent use.
type Client struct {
	policy   Policy
	resolver Resolver
	dialer   net.Dialer
	tr       *http.Transport
	hc       http.Client
	log      *zap.Logger
	stats    stats
	logLimit limiter
}

// New builds a client for policy; Close it when the consumer's plugin goes.
func New(policy Policy, o Options) *Client {
	p := policy.withDefaults()
	c := &Client{policy: p, resolver: o.Resolver, log: o.Logger}
	if c.resolver == nil {
		c.resolver = net.DefaultResolver
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	rate := o.FailureLogRate
	if rate <= 0 {
		rate = DefaultFailureLogRate
	}
	c.logLimit.rate = rate
	c.stats.init()
	c.dialer = net.Dialer{Timeout: p.Timeout, KeepAlive: 30 * time.Second, ControlContext: c.control}
	c.tr = &http.Transport{
		Proxy:                  nil, // never the environment's proxy: it would be reached instead of the allowed host
		DialContext:            c.dial,
		TLSClientConfig:        o.TLS,
		ForceAttemptHTTP2:      true,
		MaxConnsPerHost:        p.MaxConnections,
		MaxIdleConnsPerHost:    p.MaxConnections,
		MaxIdleConns:           4 * p.MaxConnections,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    p.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true, // the guest sees the bytes the server sent, and the size limit counts those
	}
	c.hc = http.Client{Transport: c.tr, CheckRedirect: c.checkRedirect}
	return c
}

// Policy is the client's policy with defaults filled in.
func (c *Client) Policy() Policy { return c.policy }

// Close drops the client's idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// target is a parsed, allowed request target.
type target struct {
	rule *Rule
	host string
}

// check parses u's authority and finds the rule admitting it.
func (c *Client) check(u *url.URL) (target, error) {
	scheme := strings.ToLower(u.Scheme)
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if scheme != "http" && scheme != "https" {
		return target{host: host}, &Error{Kind: ErrInvalid, Host: host, Err: fmt.Errorf("scheme %q is not http or https", u.Scheme)}
	}
	if host == "" {
		return target{}, &Error{Kind: ErrInvalid, Host: u.String(), Err: errors.New("no host")}
	}
	port := defaultPort(scheme)
	if ps := u.Port(); ps != "" {
		var err error
		if _, port, err = splitHostPort("x:" + ps); err != nil || port < 1 || port > 65535 {
			return target{host: host}, &Error{Kind: ErrInvalid, Host: host, Err: fmt.Errorf("bad port %q", ps)}
		}
	}
	ip, _ := netip.ParseAddr(host)
	ip = ip.Unmap()
	for i := range c.policy.Allow {
		if r := &c.policy.Allow[i]; r.matches(scheme, host, ip, port) {
			return target{rule: r, host: host}, nil
		}
	}
	return target{host: host}, &Error{Kind: ErrDenied, Host: host, Err: fmt.Errorf("%s://%s:%d is not in the allow list", scheme, host, port)}
}

func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return http.ErrUseLastResponse
	}
	if _, err := c.check(req.URL); err != nil {
		return err
	}
	return nil
}

// Do performs r. A non-nil error is an *Error; an HTTP error status is not
// an error.
func (c *Client) Do(ctx context.Context, r *Request) (*Response, error) {
	start := time.Now()
	resp, t, err := c.do(ctx, r, start)
	c.record(r, t, resp, err, time.Since(start))
	return resp, err
}

func (c *Client) do(ctx context.Context, r *Request, start time.Time) (*Response, target, error) {
	u, err := url.Parse(r.URL)
	if err != nil {
		return nil, target{}, &Error{Kind: ErrInvalid, Host: "?", Err: err}
	}
	t, err := c.check(u)
	if err != nil {
		return nil, t, err
	}
	deadline := start.Add(c.policy.Timeout)
	if !r.Deadline.IsZero() && r.Deadline.Before(deadline) {
		deadline = r.Deadline
	}
	if !deadline.After(start) {
		return nil, t, &Error{Kind: ErrTimeout, Host: t.host, Err: errors.New("the delivery has no time left")}
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if len(r.Body) > 0 {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, t, &Error{Kind: ErrInvalid, Host: t.host, Err: err}
	}
	if r.Header != nil {
		for k, vs := range r.Header {
			if !ValidHeaderName(k) {
				return nil, t, &Error{Kind: ErrInvalid, Host: t.host, Err: fmt.Errorf("header name %q is not a token", k)}
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					return nil, t, &Error{Kind: ErrInvalid, Host: t.host, Err: fmt.Errorf("header %s has a CR, LF or NUL in its value", k)}
				}
			}
		}
		req.Header = r.Header
	}
	for k, v := range c.policy.Headers {
		if req.Header.Get(k) == "" {
			req.Header.Set(k, v)
		}
	}
	if h := c.policy.IdempotencyHeader; h != "" && r.IdempotencyKey != "" && req.Header.Get(h) == "" {
		req.Header.Set(h, r.IdempotencyKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, t, c.classify(ctx, t.host, err)
	}
	defer resp.Body.Close()
	max := c.policy.MaxResponseSize
	if resp.ContentLength > max {
		return nil, t, &Error{Kind: ErrTooLarge, Host: t.host, Err: fmt.Errorf("Content-Length %d exceeds %d bytes", resp.ContentLength, max)}
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, t, c.classify(ctx, t.host, err)
	}
	if n > max {
		return nil, t, &Error{Kind: ErrTooLarge, Host: t.host, Err: fmt.Errorf("body exceeds %d bytes", max)}
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes()}, t, nil
}

// classify turns a transport error into an *Error. A denial raised while
// redirecting or dialling is kept; an expired or cancelled context is a
// timeout whatever the transport made of it. So is an I/O deadline the
// transport took from the context: the socket's deadline can pass (the
// connect fails with "i/o timeout") a moment before the context's own timer
// fires and ctx.Err() says so, and that request still ran out of time rather
// than failed to connect.
func (c *Client) classify(ctx context.Context, host string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if ctx.Err() != nil {
		return &Error{Kind: ErrTimeout, Host: host, Err: ctx.Err()}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Kind: ErrTimeout, Host: host, Err: err}
	}
	return &Error{Kind: ErrConnect, Host: host, Err: err}
}

// dialKey carries the dial's host name to control.
type dialKey struct{}

// dial resolves addr's host through the injected resolver and connects to
// the first address that is allowed and answers.
func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := splitHostPort(addr)
	if err != nil {
		return nil, &Error{Kind: ErrConnect, Host: addr, Err: err}
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = c.resolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	var last error
	ctx = context.WithValue(ctx, dialKey{}, host)
	for _, ip := range ips {
		conn, err := c.dialer.DialContext(ctx, network, netip.AddrPortFrom(ip.Unmap(), uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		var e *Error
		if errors.As(err, &e) {
			err = e // a refusal; keep it so the guest gets "denied"
		}
		last = err
	}
	if last == nil {
		last = fmt.Errorf("resolve %s: no addresses", host)
	}
	return nil, last
}

// control runs as each connection is made, with the address really being
// dialled: whatever resolved the name, and however often it changed its
// answer, a non-public address is only reached when the operator listed it
// or listed the exact name asked for.
func (c *Client) control(ctx context.Context, _, address string, _ syscall.RawConn) error {
	host, _ := ctx.Value(dialKey{}).(string)
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &Error{Kind: ErrDenied, Host: host, Err: fmt.Errorf("unparseable dial address %q", address)}
	}
	ip := ap.Addr().Unmap()
	if public(ip) || c.listed(host, ip, int(ap.Port())) {
		return nil
	}
	return &Error{Kind: ErrDenied, Host: host, Err: fmt.Errorf("%s resolves to %s, a non-public address that is not in the allow list", host, ip)}
}

// listed reports whether a non-public ip may be dialled for host: the IP is
// an entry, or host is an exact (not wildcard) name entry. The port must
// match the entry's, the scheme is not known here and was checked before.
func (c *Client) listed(host string, ip netip.Addr, port int) bool {
	for i := range c.policy.Allow {
		r := &c.policy.Allow[i]
		if r.Port > 0 && r.Port != port || r.Port == 0 && port != 80 && port != 443 {
			continue
		}
		if r.IP.IsValid() && r.IP == ip {
			return true
		}
		if !r.IP.IsValid() && !r.Wildcard && r.Host == host {
			return true
		}
	}
	return false
}

// ValidHeaderName reports whether s is an HTTP token (RFC 9110 section
// 5.6.2), as a header name must be. Checked before sending so that a
// guest's bad header is "invalid", not a transport failure, and by config.
func ValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
