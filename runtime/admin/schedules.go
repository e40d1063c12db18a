package admin

import (
	"context"
	"net/http"
	"time"
)

// ScheduleInfo is one schedule as GET /v1/schedules reports it.
type ScheduleInfo struct {
	Name  string `json:"name"`
	Queue string `json:"queue"`
	// Expr is the cron expression, or "every <interval>".
	Expr     string `json:"expr"`
	TimeZone string `json:"time_zone"`
	// Next is the next tick.
	Next time.Time `json:"next"`
	// LastTick is the latest tick known claimed, by this process or
	// another sharing the engine; absent before any.
	LastTick time.Time `json:"last_tick,omitzero"`
	// Fired counts the ticks this process enqueued; Skipped the ticks it
	// found claimed already or skipped as missed.
	Fired     int64  `json:"fired"`
	Skipped   int64  `json:"skipped"`
	LastError string `json:"last_error,omitempty"`
}

// ScheduleLister is implemented by a Backend that runs schedules; without
// it GET /v1/schedules answers an empty list.
type ScheduleLister interface {
	// Schedules lists the schedules by name with their next fire times.
	Schedules() []ScheduleInfo
}

func registerScheduleRoutes(mux *http.ServeMux, s *server) {
	mux.HandleFunc("GET /v1/schedules", func(w http.ResponseWriter, r *http.Request) {
		list := []ScheduleInfo{}
		if sl, ok := s.o.Backend.(ScheduleLister); ok {
			list = sl.Schedules()
		}
		writeJSON(w, http.StatusOK, map[string]any{"schedules": list})
	})
}

// Schedules lists the running qrun's schedules (GET /v1/schedules).
func (c *Client) Schedules(ctx context.Context) ([]ScheduleInfo, error) {
	var out struct {
		Schedules []ScheduleInfo `json:"schedules"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/schedules", nil, &out)
	return out.Schedules, err
}

// ThrottleInfo is a consumer's rate limit and per-key cap, as configured,
// with what they are doing now.
type ThrottleInfo struct {
	// RateLimit is rate_limit as written ("100/s"), Burst its bucket, and
	// RateLimitKey the attribute it applies per value of, if any.
	RateLimit    string `json:"rate_limit,omitempty"`
	Burst        int    `json:"burst,omitempty"`
	RateLimitKey string `json:"rate_limit_key,omitempty"`
	// RateLimitScope is "node" or "global" (one bucket shared by every
	// node, kept by the engine).
	RateLimitScope string `json:"rate_limit_scope,omitempty"`
	// MaxInFlightPerKey and ConcurrencyKey are the per-key cap.
	MaxInFlightPerKey int    `json:"max_in_flight_per_key,omitempty"`
	ConcurrencyKey    string `json:"concurrency_key,omitempty"`
	// ConcurrencyScope is "node" or "global" (the cap holds across every
	// node, in slots kept by the engine).
	ConcurrencyScope string `json:"concurrency_scope,omitempty"`
	// Waiting is the deliveries waiting now; Throttled counts those that
	// waited and ThrottledSeconds sums their waits.
	Waiting          int64   `json:"waiting"`
	Throttled        int64   `json:"throttled"`
	ThrottledSeconds float64 `json:"throttled_seconds"`
	// Keys is the per-key state held (idle keys are dropped).
	Keys int `json:"keys"`
	// TakeErrors counts failed takes from a global bucket or of a global
	// per-key slot (the database was unreachable); each is retried after
	// a second.
	TakeErrors int64 `json:"take_errors,omitempty"`
}
