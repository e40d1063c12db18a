package config

import (
	"os"
	"path"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/qrun-dev/qrun/runtime/httpout"
)

// The http and wasi blocks of a consumer: what a guest may reach outside
// its sandbox. Both deny everything when absent.

type rawHTTP struct {
	Allow             *hcl.Attribute `hcl:"allow,optional"`
	Timeout           *hcl.Attribute `hcl:"timeout,optional"`
	MaxResponseSize   *hcl.Attribute `hcl:"max_response_size,optional"`
	MaxRequests       *hcl.Attribute `hcl:"max_requests,optional"`
	MaxConnections    *hcl.Attribute `hcl:"max_connections,optional"`
	Headers           *hcl.Attribute `hcl:"headers,optional"`
	IdempotencyHeader *hcl.Attribute `hcl:"idempotency_header,optional"`
	DefRange          hcl.Range      `hcl:",def_range"`
}

type rawWASI struct {
	Env      *hcl.Attribute `hcl:"env,optional"`
	Dirs     []*rawDir      `hcl:"dir,block"`
	DefRange hcl.Range      `hcl:",def_range"`
}

type rawDir struct {
	Guest      string         `hcl:"guest,label"`
	GuestRange hcl.Range      `hcl:"guest,label_range"`
	Host       *hcl.Attribute `hcl:"host,optional"`
	ReadWrite  *hcl.Attribute `hcl:"read_write,optional"`
	DefRange   hcl.Range      `hcl:",def_range"`
}

// WASI is a consumer's `wasi` block: what WASI calls may see besides clocks
// and randomness.
type WASI struct {
	// Env is the guest's whole environment.
	Env map[string]string
	// Dirs are the preopened directories.
	Dirs []Dir
}

// Dir is a `dir "GUEST" { host = ..., read_write = ... }` block.
type Dir struct {
	// Guest is the absolute path the guest sees.
	Guest string
	// Host is the absolute directory on this machine.
	Host string
	// ReadWrite allows writes; a directory is read-only otherwise.
	ReadWrite bool
}

// maxHTTPResponseSize bounds max_response_size: a response is held in the
// host's memory and then copied into a 32-bit guest.
const maxHTTPResponseSize = 1 << 30

func (d *decoder) http(blocks []*rawHTTP, consumerTimeout time.Duration) httpout.Policy {
	var p httpout.Policy
	if len(blocks) == 0 {
		return p
	}
	for _, extra := range blocks[1:] {
		d.errorf(extra.DefRange, "Duplicate http block", "Only one http block is allowed per consumer; the first is at %s.", blocks[0].DefRange)
	}
	rh := blocks[0]
	allow, rngs := d.stringList(rh.Allow)
	for i, s := range allow {
		r, err := httpout.ParseRule(s)
		if err != nil {
			d.errorf(rngs[i], "Invalid allowed host",
				"%s. Write [scheme://]host[:port], e.g. \"https://api.example.com\", \"*.hooks.example.com\", \"http://127.0.0.1:8080\" or \"*://example.com:*\".", err)
			continue
		}
		p.Allow = append(p.Allow, r)
	}
	p.Timeout = d.duration(rh.Timeout, httpout.DefaultTimeout)
	if p.Timeout <= 0 {
		d.errorf(rh.Timeout.Expr.Range(), "Invalid HTTP timeout", "timeout must be positive (got %s).", p.Timeout)
	} else if rh.Timeout != nil && p.Timeout > consumerTimeout && consumerTimeout > 0 {
		d.warnf(rh.Timeout.Expr.Range(), "HTTP timeout exceeds consumer timeout",
			"A request never outlives its delivery, so this %s timeout is cut to what is left of the consumer's %s.", p.Timeout, consumerTimeout)
	}
	p.MaxResponseSize = httpout.DefaultMaxResponseSize
	if a := rh.MaxResponseSize; a != nil {
		if n, ok := d.size(a); ok {
			if n < 1 || n > maxHTTPResponseSize {
				d.errorf(a.Expr.Range(), "Invalid max response size", "max_response_size must be between 1 byte and 1GiB; got %d bytes.", n)
			} else {
				p.MaxResponseSize = int64(n)
			}
		}
	}
	p.MaxRequests = d.integer(rh.MaxRequests, httpout.DefaultMaxRequests)
	if p.MaxRequests < 1 {
		d.errorf(rh.MaxRequests.Expr.Range(), "Invalid max requests", "max_requests must be at least 1, not %d; leave the http block out to deny every request.", p.MaxRequests)
	}
	p.MaxConnections = d.integer(rh.MaxConnections, httpout.DefaultMaxConnections)
	if p.MaxConnections < 1 {
		d.errorf(rh.MaxConnections.Expr.Range(), "Invalid max connections", "max_connections must be at least 1, not %d.", p.MaxConnections)
	}
	p.Headers = d.stringMap(rh.Headers)
	for k, v := range p.Headers {
		if !httpout.ValidHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
			d.errorf(rh.Headers.Expr.Range(), "Invalid header", "header %q: a name is letters, digits and !#$%%&'*+-.^_`|~, and a value has no CR, LF or NUL.", k)
		}
	}
	p.IdempotencyHeader = d.str(rh.IdempotencyHeader, "")
	if rh.IdempotencyHeader != nil && !httpout.ValidHeaderName(p.IdempotencyHeader) {
		d.errorf(rh.IdempotencyHeader.Expr.Range(), "Invalid header", "idempotency_header %q is not a header name, such as \"Idempotency-Key\".", p.IdempotencyHeader)
	}
	return p
}

func (d *decoder) wasi(blocks []*rawWASI) WASI {
	var w WASI
	if len(blocks) == 0 {
		return w
	}
	for _, extra := range blocks[1:] {
		d.errorf(extra.DefRange, "Duplicate wasi block", "Only one wasi block is allowed per consumer; the first is at %s.", blocks[0].DefRange)
	}
	rw := blocks[0]
	if rw.Env != nil {
		w.Env = d.stringMap(rw.Env)
		for k, v := range w.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") {
				d.errorf(rw.Env.Expr.Range(), "Invalid environment variable", "%q: a name is not empty and has no = or NUL, a value has no NUL.", k)
			}
		}
	}
	seen := map[string]hcl.Range{}
	for _, rd := range rw.Dirs {
		dir := Dir{Guest: rd.Guest, ReadWrite: d.boolean(rd.ReadWrite, false)}
		if !path.IsAbs(rd.Guest) || path.Clean(rd.Guest) != rd.Guest {
			d.errorf(rd.GuestRange, "Invalid guest path", "The guest path %q must be absolute and clean, such as \"/data\".", rd.Guest)
			continue
		}
		if first, dup := seen[rd.Guest]; dup {
			d.errorf(rd.GuestRange, "Duplicate directory", "Guest path %q is already mapped at %s.", rd.Guest, first)
			continue
		}
		seen[rd.Guest] = rd.GuestRange
		h := d.required(rd.Host, rd.DefRange, "host", "dir")
		if h == "" {
			continue
		}
		dir.Host = d.path(h)
		if fi, err := os.Stat(dir.Host); err != nil || !fi.IsDir() {
			what := "is not a directory"
			if err != nil {
				what = "cannot be read: " + err.Error()
			}
			d.errorf(rd.Host.Expr.Range(), "Directory not found", "%s %s.", dir.Host, what)
			continue
		}
		w.Dirs = append(w.Dirs, dir)
	}
	return w
}
