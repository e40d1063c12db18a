// Package admin serves qrun's HTTP administration API: health, readiness,
// queue statistics and enqueue (Backend), and the operations routes:
// consumers, peeking into queues, purge, dead-letter redrive, pause and
// resume (Operator), plus /metrics. It knows nothing of plugins and asks
// nothing of engines but the optional interfaces of engines/ops.go, through
// the runtime; docs/admin-api.md documents every route.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// MaxRequestBody bounds an enqueue request (64 MiB).
const MaxRequestBody = 64 << 20

// QueueInfo is one queue as the API reports it.
type QueueInfo struct {
	Name       string        `json:"name"`
	Engine     string        `json:"engine"`
	DeadLetter string        `json:"dead_letter,omitempty"`
	Depth      int64         `json:"depth"`
	Stats      engines.Stats `json:"stats"`
}

// Backend is what the admin API needs from the runtime.
type Backend interface {
	// Queues reports every configured queue, sorted by name.
	Queues(ctx context.Context) ([]QueueInfo, error)
	// Enqueue adds msgs to the named queue; an unknown queue is ErrUnknownQueue.
	Enqueue(ctx context.Context, queue string, msgs []engines.Message) error
	// Ready reports whether every consumer has started.
	Ready() bool
}

// ErrUnknownQueue is returned by a Backend for a queue that is not configured.
var ErrUnknownQueue = errors.New("unknown queue")

// Options configure the API.
type Options struct {
	// Token, when non-empty, is required as "Authorization: Bearer <token>"
	// on every route.
	Token   string
	Backend Backend
	Logger  *zap.Logger
	// Ops, if set, serves consumers, peek, purge, redrive, pause and
	// resume (ops.go); without it those routes answer 501.
	Ops Operator
	// Metrics, if set, is served at /metrics; without it /metrics is 404.
	Metrics http.Handler
}

// Handler returns the API's http.Handler.
func Handler(o Options) http.Handler {
	s := &server{o: o, log: o.Logger}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /v1/queues", s.queues)
	mux.HandleFunc("POST /v1/queues/{name}/messages", s.enqueue)
	s.opsRoutes(mux)
	s.kvRoutes(mux) // kv.go
	registerReloadRoutes(mux, s)
	registerConsoleRoutes(mux, s)
	registerScheduleRoutes(mux, s)
	registerKVStoreRoutes(mux, s) // kvstores.go
	return withConsole(s.auth(mux))
}

type server struct {
	o   Options
	log *zap.Logger
}

func (s *server) auth(next http.Handler) http.Handler {
	if s.o.Token == "" {
		return next
	}
	want := []byte("Bearer " + s.o.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="qrun"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.o.Backend.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *server) queues(w http.ResponseWriter, r *http.Request) {
	qs, err := s.o.Backend.Queues(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"queues": qs})
}

// SendRequest is the body of POST /v1/queues/{name}/messages: either one
// message inline or a batch under "messages".
type SendRequest struct {
	SendMessage
	Messages []SendMessage `json:"messages,omitempty"`
}

// SendMessage is one message to enqueue. Body is text; BodyBase64, if set,
// carries binary bodies instead.
type SendMessage struct {
	Body          string            `json:"body,omitempty"`
	BodyBase64    string            `json:"body_base64,omitempty"`
	Attributes    map[string]string `json:"attributes,omitempty"`
	ContentType   string            `json:"content_type,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	OrderingKey   string            `json:"ordering_key,omitempty"`
	DedupID       string            `json:"dedup_id,omitempty"`
	Priority      uint8             `json:"priority,omitempty"`
	Delay         string            `json:"delay,omitempty"`
	TTL           string            `json:"ttl,omitempty"`
}

// SendResponse lists the IDs assigned, in request order.
type SendResponse struct {
	IDs []string `json:"ids"`
}

func (s *server) enqueue(w http.ResponseWriter, r *http.Request) {
	queue := r.PathValue("name")
	var req SendRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	in := req.Messages
	if len(in) == 0 {
		in = []SendMessage{req.SendMessage}
	}
	msgs := make([]engines.Message, len(in))
	for i := range in {
		m, err := in[i].message()
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("message %d: %v", i, err))
			return
		}
		msgs[i] = m
	}
	err := s.o.Backend.Enqueue(r.Context(), queue, msgs)
	s.audit(r, "messages enqueued", err, zap.String("queue", queue), zap.Int("count", len(msgs)))
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrUnknownQueue):
			status = http.StatusNotFound
		case errors.Is(err, engines.ErrTooLarge), errors.Is(err, engines.ErrInvalid):
			status = http.StatusBadRequest
		}
		writeError(w, status, err.Error())
		return
	}
	ids := make([]string, len(msgs))
	for i := range msgs {
		ids[i] = msgs[i].ID
	}
	writeJSON(w, http.StatusOK, SendResponse{IDs: ids})
}

func (m *SendMessage) message() (engines.Message, error) {
	out := engines.Message{
		Body: []byte(m.Body), Attributes: m.Attributes, ContentType: m.ContentType,
		CorrelationID: m.CorrelationID, OrderingKey: m.OrderingKey, DedupID: m.DedupID, Priority: m.Priority,
	}
	if m.BodyBase64 != "" {
		if m.Body != "" {
			return out, errors.New("body and body_base64 are exclusive")
		}
		b, err := base64.StdEncoding.DecodeString(m.BodyBase64)
		if err != nil {
			return out, fmt.Errorf("body_base64: %w", err)
		}
		out.Body = b
	}
	var err error
	if out.Delay, err = parseDuration("delay", m.Delay); err != nil {
		return out, err
	}
	if out.TTL, err = parseDuration("ttl", m.TTL); err != nil {
		return out, err
	}
	return out, nil
}

func parseDuration(field, s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: %q is not a non-negative duration like \"1.5s\"", field, s)
	}
	return d, nil
}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
