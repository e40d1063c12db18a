package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Client calls a running qrun's admin API (used by `qrun send` and tests).
type Client struct {
	// BaseURL is like "http://127.0.0.1:8787".
	BaseURL string
	// Token is sent as a bearer token when non-empty.
	Token string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// Send enqueues the request's message(s) on queue.
func (c *Client) Send(ctx context.Context, queue string, req SendRequest) (SendResponse, error) {
	var out SendResponse
	err := c.do(ctx, http.MethodPost, "/v1/queues/"+url.PathEscape(queue)+"/messages", req, &out)
	return out, err
}

// Queues lists the queues and their statistics.
func (c *Client) Queues(ctx context.Context) ([]QueueInfo, error) {
	var out struct {
		Queues []QueueInfo `json:"queues"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/queues", nil, &out)
	return out.Queues, err
}

// Ready reports whether /readyz answers 200.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil, nil)
}

// StatusError is a non-2xx answer from the API.
type StatusError struct {
	Status  int
	Message string
}

// Error describes the status and the server's message.
func (e *StatusError) Error() string {
	return fmt.Sprintf("admin API: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		// A refused reload adds its diagnostics to the usual error body.
		var e ReloadErrorResponse
		if err := json.NewDecoder(resp.Body).Decode(&e); err == nil && resp.StatusCode == http.StatusBadRequest && e.Diagnostics != "" {
			return &InvalidConfigError{Diagnostics: e.Diagnostics}
		}
		return &StatusError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
