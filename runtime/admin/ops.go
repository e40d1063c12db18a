package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// Operator is what the operations routes need from the runtime: looking
// into queues, fixing them and pausing consumers. It is separate from
// Backend so that a runtime (or a test double) can serve the basic API
// without it.
type Operator interface {
	// Peek returns up to max ready or delayed messages of a queue without
	// consuming them; a queue whose engine cannot is engines.ErrUnsupported.
	Peek(ctx context.Context, queue string, max int) ([]engines.Delivery, error)
	// PeekPage returns one page of a scan of a whole queue (see
	// engines.Peeker.PeekPage); a queue whose engine cannot peek is
	// engines.ErrUnsupported.
	PeekPage(ctx context.Context, queue string, opts engines.PeekOptions) (engines.PeekPage, error)
	// Purge removes a queue's ready and delayed messages.
	Purge(ctx context.Context, queue string) (int64, error)
	// Redrive moves messages of a dead-letter queue back to their source:
	// those with the given IDs, or all of them when ids is empty.
	Redrive(ctx context.Context, queue string, ids []string) (int, error)
	// Pause stops a consumer from starting deliveries; Resume undoes it.
	// Both return the consumer as it is afterwards.
	Pause(ctx context.Context, consumer string) (ConsumerInfo, error)
	Resume(ctx context.Context, consumer string) (ConsumerInfo, error)
}

// ConsumerLister is implemented by a Backend that can list its consumers;
// GET /v1/consumers answers 501 otherwise.
type ConsumerLister interface {
	// ConsumerInfos reports every consumer, sorted by name.
	ConsumerInfos(ctx context.Context) ([]ConsumerInfo, error)
}

// ErrUnknownConsumer is returned by an Operator for a consumer that is not configured.
var ErrUnknownConsumer = errors.New("unknown consumer")

// Consumer states.
const (
	StateRunning = "running"
	StatePaused  = "paused"
)

// ConsumerInfo is one consumer as the API reports it. New fields may be
// added (plugin version and reload history, for instance); clients ignore
// what they do not know.
type ConsumerInfo struct {
	Name  string `json:"name"`
	Queue string `json:"queue"`
	// State is "running" or "paused".
	State string `json:"state"`
	// Version identifies the plugin module (a digest prefix).
	Version     string `json:"version,omitempty"`
	Concurrency int    `json:"concurrency"`
	InFlight    int64  `json:"in_flight"`
	// Instances is the number of live plugin instances.
	Instances    int64          `json:"instances"`
	Counts       ConsumerCounts `json:"counts"`
	RecentErrors []ErrorRecord  `json:"recent_errors"`
	// Plugin is the serving plugin version and its hot-reload history.
	Plugin *PluginInfo `json:"plugin,omitempty"`
	// Isolation is "instance" or "per_message".
	Isolation string `json:"isolation,omitempty"`
	// Latency sums up handler call durations; absent when the runtime
	// does not record them (metrics off).
	Latency *LatencyInfo `json:"latency,omitempty"`
	// Throttle is the consumer's rate limit and per-key cap, with the
	// deliveries waiting for them; absent without either (schedules.go).
	Throttle *ThrottleInfo `json:"throttle,omitempty"`
}

// ConsumerCounts are a consumer's counters since it started.
type ConsumerCounts struct {
	Acked          int64 `json:"acked"`
	Nacked         int64 `json:"nacked"`
	Requeued       int64 `json:"requeued"`
	DeadLettered   int64 `json:"dead_lettered"`
	Traps          int64 `json:"traps"`
	Timeouts       int64 `json:"timeouts"`
	BadVerdicts    int64 `json:"bad_verdicts"`
	LeaseLost      int64 `json:"lease_lost"`
	Released       int64 `json:"released"`
	InstanceErrors int64 `json:"instance_errors"`
	EngineErrors   int64 `json:"engine_errors"`
	// CrashPauses counts the pauses of workers whose plugin broke its
	// instance on several deliveries in a row.
	CrashPauses int64 `json:"crash_pauses"`
}

// ErrorRecord is one of a consumer's recent failures.
type ErrorRecord struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"` // handler, settle, receive or instance
	MessageID string    `json:"message_id,omitempty"`
	Attempt   int       `json:"attempt,omitempty"`
	Error     string    `json:"error"`
}

// MessageInfo is one message as peek shows it. Text bodies are in Body,
// others base64-encoded in BodyBase64; bodies longer than the request's
// body limit are cut and marked BodyTruncated, BodySize is the full length.
type MessageInfo struct {
	ID            string            `json:"id"`
	Body          string            `json:"body,omitempty"`
	BodyBase64    string            `json:"body_base64,omitempty"`
	BodySize      int               `json:"body_size"`
	BodyTruncated bool              `json:"body_truncated,omitempty"`
	Attributes    map[string]string `json:"attributes,omitempty"`
	ContentType   string            `json:"content_type,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	OrderingKey   string            `json:"ordering_key,omitempty"`
	Priority      uint8             `json:"priority,omitempty"`
	Attempt       int               `json:"attempt"`
	Failures      int               `json:"failures"`
	EnqueuedAt    time.Time         `json:"enqueued_at"`
	// DeadLetterReason and DeadLetterSource repeat the dead-letter
	// attributes, for messages in a dead-letter queue.
	DeadLetterReason string `json:"dead_letter_reason,omitempty"`
	DeadLetterSource string `json:"dead_letter_source,omitempty"`
	// State is "ready", "delayed" or "in_flight"; only a scan (a request
	// with a cursor) reports it.
	State string `json:"state,omitempty"`
}

// PeekResponse is the answer of GET /v1/queues/{name}/messages.
type PeekResponse struct {
	Queue    string        `json:"queue"`
	Messages []MessageInfo `json:"messages"`
	// NextCursor continues a scan: pass it as cursor for the next page.
	// It is absent when the scan is complete, and on an answer to a
	// request without a cursor.
	NextCursor string `json:"next_cursor,omitempty"`
}

// PeekQuery is a GET /v1/queues/{name}/messages request.
type PeekQuery struct {
	// Limit is the most messages in the answer; 0 is DefaultPeekLimit.
	Limit int
	// BodyLimit cuts longer bodies; 0 is DefaultPeekBodyLimit.
	BodyLimit int
	// Scan asks for a page of a scan of the whole queue, starting after
	// Cursor ("" is the start), instead of the first messages in delivery
	// order.
	Scan   bool
	Cursor string
	// InFlight includes leased messages; it implies Scan.
	InFlight bool
}

// RedriveRequest is the body of POST /v1/queues/{name}/redrive; no IDs
// (or no body) means every message.
type RedriveRequest struct {
	IDs []string `json:"ids,omitempty"`
}

// RedriveResponse says how many messages went back to their source queue.
type RedriveResponse struct {
	Redriven int `json:"redriven"`
}

// PurgeResponse says how many messages were removed.
type PurgeResponse struct {
	Purged int64 `json:"purged"`
}

// Peek limits.
const (
	DefaultPeekLimit     = 20
	MaxPeekLimit         = 1000
	DefaultPeekBodyLimit = 64 << 10
)

// Route is one route of the API.
type Route struct {
	Method, Pattern string
	// Mutating routes change state and are logged with who called them.
	Mutating bool
}

// Routes lists every route Handler serves, so that tests (the token test
// above all) can prove they cover each one.
func Routes() []Route {
	return []Route{
		{"GET", "/healthz", false},
		{"GET", "/readyz", false},
		{"GET", "/metrics", false},
		{"GET", "/v1/queues", false},
		{"POST", "/v1/queues/{name}/messages", true},
		{"GET", "/v1/queues/{name}/messages", false},
		{"POST", "/v1/queues/{name}/purge", true},
		{"POST", "/v1/queues/{name}/redrive", true},
		{"GET", "/v1/consumers", false},
		{"GET", "/v1/consumers/{name}", false},
		{"POST", "/v1/consumers/{name}/pause", true},
		{"POST", "/v1/consumers/{name}/resume", true},
		{"GET", "/v1/config", false},
	}
}

// opsRoutes adds the operations routes and /metrics to mux.
func (s *server) opsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /v1/queues/{name}/messages", s.peek)
	mux.HandleFunc("POST /v1/queues/{name}/purge", s.purge)
	mux.HandleFunc("POST /v1/queues/{name}/redrive", s.redrive)
	mux.HandleFunc("GET /v1/consumers", s.consumers)
	mux.HandleFunc("GET /v1/consumers/{name}", s.consumer)
	mux.HandleFunc("POST /v1/consumers/{name}/pause", s.pause)
	mux.HandleFunc("POST /v1/consumers/{name}/resume", s.resume)
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.o.Metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled in this qrun")
		return
	}
	s.o.Metrics.ServeHTTP(w, r)
}

// ops returns the Operator, or answers 501 when the runtime has none.
func (s *server) ops(w http.ResponseWriter) Operator {
	if s.o.Ops == nil {
		writeError(w, http.StatusNotImplemented, "this qrun does not serve the operations API")
	}
	return s.o.Ops
}

// audit logs a mutating call with who made it and what it did.
func (s *server) audit(r *http.Request, what string, err error, fields ...zap.Field) {
	fields = append(fields, zap.String("remote", r.RemoteAddr), zap.String("method", r.Method),
		zap.String("path", r.URL.Path), zap.String("user_agent", r.UserAgent()), zap.Bool("token", s.o.Token != ""))
	if err != nil {
		s.log.Warn("admin: "+what+" failed", append(fields, zap.Error(err))...)
		return
	}
	s.log.Info("admin: "+what, fields...)
}

// fail answers err with the status its kind calls for.
func fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrUnknownQueue), errors.Is(err, ErrUnknownConsumer):
		status = http.StatusNotFound
	case errors.Is(err, engines.ErrUnsupported):
		status = http.StatusNotImplemented
	case errors.Is(err, engines.ErrInvalid), errors.Is(err, engines.ErrTooLarge):
		status = http.StatusBadRequest
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status = http.StatusServiceUnavailable
	}
	writeError(w, status, err.Error())
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s=%q: want a whole number from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

func (s *server) peek(w http.ResponseWriter, r *http.Request) {
	ops := s.ops(w)
	if ops == nil {
		return
	}
	limit, err := intParam(r, "limit", DefaultPeekLimit, 1, MaxPeekLimit)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	bodyLimit, err := intParam(r, "body_limit", DefaultPeekBodyLimit, 0, MaxRequestBody)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	queue := r.PathValue("name")
	query := r.URL.Query()
	inFlight := false
	if v := query.Get("in_flight"); v != "" {
		if inFlight, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("in_flight=%q: want true or false", v))
			return
		}
	}
	if query.Has("cursor") || inFlight {
		// A scan: pages in the engine's scan order, each message once.
		page, err := ops.PeekPage(r.Context(), queue, engines.PeekOptions{Max: limit, After: query.Get("cursor"), InFlight: inFlight})
		if err != nil {
			fail(w, err)
			return
		}
		out := PeekResponse{Queue: queue, Messages: make([]MessageInfo, len(page.Messages)), NextCursor: page.Next}
		for i := range page.Messages {
			out.Messages[i] = messageInfo(&page.Messages[i].Delivery, bodyLimit)
			out.Messages[i].State = page.Messages[i].State.String()
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	ds, err := ops.Peek(r.Context(), queue, limit)
	if err != nil {
		fail(w, err)
		return
	}
	out := PeekResponse{Queue: queue, Messages: make([]MessageInfo, len(ds))}
	for i := range ds {
		out.Messages[i] = messageInfo(&ds[i], bodyLimit)
	}
	writeJSON(w, http.StatusOK, out)
}

func messageInfo(d *engines.Delivery, bodyLimit int) MessageInfo {
	m := MessageInfo{
		ID: d.ID, BodySize: len(d.Body), Attributes: d.Attributes, ContentType: d.ContentType,
		CorrelationID: d.CorrelationID, OrderingKey: d.OrderingKey, Priority: d.Priority,
		Attempt: d.Attempt, Failures: d.Failures, EnqueuedAt: d.EnqueuedAt,
		DeadLetterReason: d.Attributes[engines.AttrDeadLetterReason],
		DeadLetterSource: d.Attributes[engines.AttrDeadLetterSource],
	}
	body := d.Body
	if len(body) > bodyLimit {
		body, m.BodyTruncated = body[:bodyLimit], true
	}
	// A cut may split a UTF-8 sequence of a text body; trim back to the
	// boundary rather than call the whole body binary.
	if m.BodyTruncated {
		for i := 0; i < utf8.UTFMax && len(body) > 0 && !utf8.Valid(body); i++ {
			body = body[:len(body)-1]
		}
	}
	if utf8.Valid(body) {
		m.Body = string(body)
	} else {
		m.BodyBase64 = base64.StdEncoding.EncodeToString(body)
	}
	return m
}

func (s *server) purge(w http.ResponseWriter, r *http.Request) {
	ops := s.ops(w)
	if ops == nil {
		return
	}
	queue := r.PathValue("name")
	n, err := ops.Purge(r.Context(), queue)
	s.audit(r, "queue purged", err, zap.String("queue", queue), zap.Int64("purged", n))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PurgeResponse{Purged: n})
}

func (s *server) redrive(w http.ResponseWriter, r *http.Request) {
	ops := s.ops(w)
	if ops == nil {
		return
	}
	var req RedriveRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	dec.DisallowUnknownFields()
	// An empty body is allowed: it means "all".
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	queue := r.PathValue("name")
	n, err := ops.Redrive(r.Context(), queue, req.IDs)
	s.audit(r, "dead letters redriven", err, zap.String("queue", queue), zap.Int("requested_ids", len(req.IDs)), zap.Int("redriven", n))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, RedriveResponse{Redriven: n})
}

// lister returns the Backend as a ConsumerLister, or answers 501.
func (s *server) lister(w http.ResponseWriter) ConsumerLister {
	cl, ok := s.o.Backend.(ConsumerLister)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this qrun does not list consumers")
	}
	return cl
}

func (s *server) consumers(w http.ResponseWriter, r *http.Request) {
	cl := s.lister(w)
	if cl == nil {
		return
	}
	cs, err := cl.ConsumerInfos(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"consumers": cs})
}

func (s *server) consumer(w http.ResponseWriter, r *http.Request) {
	cl := s.lister(w)
	if cl == nil {
		return
	}
	name := r.PathValue("name")
	cs, err := cl.ConsumerInfos(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	for _, c := range cs {
		if c.Name == name {
			writeJSON(w, http.StatusOK, c)
			return
		}
	}
	fail(w, fmt.Errorf("%w: %q", ErrUnknownConsumer, name))
}

func (s *server) pause(w http.ResponseWriter, r *http.Request) {
	s.pauseResume(w, r, "consumer paused", Operator.Pause)
}

func (s *server) resume(w http.ResponseWriter, r *http.Request) {
	s.pauseResume(w, r, "consumer resumed", Operator.Resume)
}

func (s *server) pauseResume(w http.ResponseWriter, r *http.Request, what string, f func(Operator, context.Context, string) (ConsumerInfo, error)) {
	ops := s.ops(w)
	if ops == nil {
		return
	}
	name := r.PathValue("name")
	info, err := f(ops, r.Context(), name)
	s.audit(r, what, err, zap.String("consumer", name))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}
