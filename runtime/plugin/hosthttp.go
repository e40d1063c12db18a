package plugin

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/runtime/httpout"
	"github.com/tetratelabs/wazero/api"
)

// httpState is an instance's outbound HTTP state for the current delivery.
type httpState struct {
	n        int       // requests made by this delivery
	start    time.Time // when the delivery began (Handle's start): its timeout ends at start+timeout
	resp     *httpout.Response
	respHdrs []byte // resp's headers in pair encoding, built on first http_response_headers
}

// hostHTTPRequest implements http_request (ABI.md section 4, "Outbound
// HTTP"): the request runs to completion, body included, while the guest
// waits; the response stays with the instance until the next request or the
// end of the delivery, for the http_response_* functions to read.
func hostHTTPRequest(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	method := region(m, abi.FuncHTTPRequest, "method", stack[0], stack[1])
	rawURL := region(m, abi.FuncHTTPRequest, "url", stack[2], stack[3])
	hdrs := region(m, abi.FuncHTTPRequest, "headers", stack[4], stack[5])
	body := region(m, abi.FuncHTTPRequest, "body", stack[6], stack[7])
	d := st.d
	if d == nil {
		// A request must belong to a delivery, whose time bounds it.
		stack[0] = code(abi.ErrNoMessage)
		return
	}
	hs := &st.http
	hs.resp, hs.respHdrs = nil, nil
	c := st.p.http
	if hs.n >= c.Policy().MaxRequests {
		c.OverBudget(d.ID, string(rawURL))
		stack[0] = code(abi.ErrLimit)
		return
	}
	hs.n++
	header, ok := decodeHeaders(hdrs)
	if !ok {
		stack[0] = code(abi.ErrInvalid)
		return
	}
	deadline := hs.start.Add(st.p.timeout)
	if dl, ok := st.ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	req := &httpout.Request{
		Method: string(method),
		URL:    string(rawURL),
		Header: header,
		// A copy: the transport may still read the body after Do returns
		// (a server answering before it read everything), when the guest
		// runs again.
		Body:           slices.Clone(body),
		Deadline:       deadline,
		IdempotencyKey: httpout.IdempotencyKey(d.Queue, d.ID),
		MessageID:      d.ID,
	}
	var resp *httpout.Response
	err := withInstanceCancel(st, func(ctx context.Context) error {
		var err error
		resp, err = c.Do(ctx, req)
		return err
	})
	switch {
	case err == nil:
		hs.resp = resp
		stack[0] = ret(resp.Status)
	case errors.Is(err, httpout.ErrDenied):
		stack[0] = code(abi.ErrDenied)
	case errors.Is(err, httpout.ErrTimeout):
		stack[0] = code(abi.ErrTimeout)
	case errors.Is(err, httpout.ErrTooLarge):
		stack[0] = code(abi.ErrTooLarge)
	case errors.Is(err, httpout.ErrInvalid):
		stack[0] = code(abi.ErrInvalid)
	default:
		stack[0] = code(abi.ErrConnect)
	}
}

// decodeHeaders decodes the pair encoding publish uses for attributes;
// unlike attributes a name may repeat, as HTTP headers may.
func decodeHeaders(b []byte) (http.Header, bool) {
	if len(b) == 0 {
		return nil, true
	}
	h := make(http.Header)
	if !eachPair(b, func(k, v string) bool { h.Add(k, v); return true }) {
		return nil, false
	}
	return h, true
}

// response returns the held response, or the error code that says why there
// is none.
func response(st *instanceState) (*httpout.Response, int32) {
	if st.d == nil {
		return nil, abi.ErrNoMessage
	}
	if st.http.resp == nil {
		return nil, abi.ErrNotFound
	}
	return st.http.resp, 0
}

func hostHTTPResponseHeader(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	name := region(m, abi.FuncHTTPResponseHeader, "name", stack[0], stack[1])
	buf := region(m, abi.FuncHTTPResponseHeader, "buf", stack[2], stack[3])
	resp, c := response(st)
	if resp == nil {
		stack[0] = code(c)
		return
	}
	vs := resp.Header.Values(string(name))
	if len(vs) == 0 {
		stack[0] = code(abi.ErrNotFound)
		return
	}
	stack[0] = put(buf, strings.Join(vs, ", "))
}

func hostHTTPResponseHeaders(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	buf := region(m, abi.FuncHTTPResponseHeaders, "buf", stack[0], stack[1])
	resp, c := response(st)
	if resp == nil {
		stack[0] = code(c)
		return
	}
	if st.http.respHdrs == nil {
		st.http.respHdrs = encodeHeaders(resp.Header)
	}
	stack[0] = putBytes(buf, st.http.respHdrs)
}

func hostHTTPResponseBody(ctx context.Context, m api.Module, stack []uint64) {
	st := stateOf(ctx)
	buf := region(m, abi.FuncHTTPResponseBody, "buf", stack[0], stack[1])
	resp, c := response(st)
	if resp == nil {
		stack[0] = code(c)
		return
	}
	stack[0] = putBytes(buf, resp.Body)
}

// encodeHeaders is the pair encoding of h: names in Go's canonical form,
// sorted, one pair per value. Never nil, so an empty encoding is cached too.
func encodeHeaders(h http.Header) []byte {
	out := []byte{}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range h[k] {
			out = binary.LittleEndian.AppendUint32(out, uint32(len(k)))
			out = append(out, k...)
			out = binary.LittleEndian.AppendUint32(out, uint32(len(v)))
			out = append(out, v...)
		}
	}
	return out
}

// putBytes is put for a byte slice.
func putBytes(buf, v []byte) uint64 {
	if len(v) <= len(buf) {
		copy(buf, v)
	}
	return ret(len(v))
}
