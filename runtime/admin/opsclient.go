package admin

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// Consumers lists the consumers.
func (c *Client) Consumers(ctx context.Context) ([]ConsumerInfo, error) {
	var out struct {
		Consumers []ConsumerInfo `json:"consumers"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/consumers", nil, &out)
	return out.Consumers, err
}

// Consumer reports one consumer.
func (c *Client) Consumer(ctx context.Context, name string) (ConsumerInfo, error) {
	var out ConsumerInfo
	err := c.do(ctx, http.MethodGet, "/v1/consumers/"+url.PathEscape(name), nil, &out)
	return out, err
}

// Peek shows up to limit messages of queue without consuming them; limit 0
// means the server's default.
func (c *Client) Peek(ctx context.Context, queue string, limit int) (PeekResponse, error) {
	path := "/v1/queues/" + url.PathEscape(queue) + "/messages"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var out PeekResponse
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// PeekQuery sends a GET /v1/queues/{name}/messages request with every
// option of q; with q.Scan (or q.InFlight) the answer is one page of a scan
// and its NextCursor continues it.
func (c *Client) PeekQuery(ctx context.Context, queue string, q PeekQuery) (PeekResponse, error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.BodyLimit > 0 {
		v.Set("body_limit", strconv.Itoa(q.BodyLimit))
	}
	if q.Scan || q.InFlight {
		v.Set("cursor", q.Cursor)
	}
	if q.InFlight {
		v.Set("in_flight", "true")
	}
	path := "/v1/queues/" + url.PathEscape(queue) + "/messages"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out PeekResponse
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// Purge removes the ready and delayed messages of queue.
func (c *Client) Purge(ctx context.Context, queue string) (PurgeResponse, error) {
	var out PurgeResponse
	err := c.do(ctx, http.MethodPost, "/v1/queues/"+url.PathEscape(queue)+"/purge", nil, &out)
	return out, err
}

// Redrive moves the messages of dead-letter queue with the given IDs (all
// of them when ids is empty) back to the queues they came from.
func (c *Client) Redrive(ctx context.Context, queue string, ids []string) (RedriveResponse, error) {
	var out RedriveResponse
	err := c.do(ctx, http.MethodPost, "/v1/queues/"+url.PathEscape(queue)+"/redrive", RedriveRequest{IDs: ids}, &out)
	return out, err
}

// Pause pauses a consumer and returns it as it is then.
func (c *Client) Pause(ctx context.Context, consumer string) (ConsumerInfo, error) {
	var out ConsumerInfo
	err := c.do(ctx, http.MethodPost, "/v1/consumers/"+url.PathEscape(consumer)+"/pause", nil, &out)
	return out, err
}

// Resume resumes a paused consumer.
func (c *Client) Resume(ctx context.Context, consumer string) (ConsumerInfo, error) {
	var out ConsumerInfo
	err := c.do(ctx, http.MethodPost, "/v1/consumers/"+url.PathEscape(consumer)+"/resume", nil, &out)
	return out, err
}
