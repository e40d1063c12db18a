package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
)

// KVBackend is implemented by a Backend that holds key-value stores; the
// /v1/kv routes answer 501 otherwise.
type KVBackend interface {
	// KV returns the named store; an undeclared one is ErrUnknownKV.
	KV(ctx context.Context, store string) (engines.KV, error)
}

// ErrUnknownKV is returned by a KVBackend for a store no kv block declares.
var ErrUnknownKV = errors.New("unknown key-value store")

// KVEntry is one key of a store as the API shows it. Value is the value as
// text when it is UTF-8; otherwise ValueBase64 holds it.
type KVEntry struct {
	Key         string     `json:"key"`
	Value       string     `json:"value,omitempty"`
	ValueBase64 string     `json:"value_base64,omitempty"`
	Version     uint64     `json:"version"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

// KVPutRequest is the body of PUT /v1/kv/{store}/{key}: the value as text
// or in base64, and an optional TTL ("10m"; none keeps the key forever).
type KVPutRequest struct {
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
	TTL         string `json:"ttl,omitempty"`
}

// KVListResponse is one page of GET /v1/kv/{store}. Next, when set, is the
// after= of the next page.
type KVListResponse struct {
	Entries []KVEntry `json:"entries"`
	Next    string    `json:"next,omitempty"`
}

// Bounds of a list page.
const (
	DefaultKVListLimit = 100
	MaxKVListLimit     = 1000
)

func (s *server) kvRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/kv/{store}", s.kvList)
	mux.HandleFunc("GET /v1/kv/{store}/{key...}", s.kvGet)
	mux.HandleFunc("PUT /v1/kv/{store}/{key...}", s.kvPut)
	mux.HandleFunc("DELETE /v1/kv/{store}/{key...}", s.kvDelete)
}

// KVEntryOf is e as the API shows it.
func KVEntryOf(e engines.KVEntry) KVEntry {
	out := KVEntry{Key: string(e.Key), Version: e.Version}
	if utf8.Valid(e.Value) {
		out.Value = string(e.Value)
	} else {
		out.ValueBase64 = base64.StdEncoding.EncodeToString(e.Value)
	}
	if !e.Expires.IsZero() {
		t := e.Expires.UTC()
		out.ExpiresAt = &t
	}
	return out
}

// kvStore resolves the request's store and key, or answers the error.
func (s *server) kvStore(w http.ResponseWriter, r *http.Request) (engines.KV, []byte, bool) {
	b, ok := s.o.Backend.(KVBackend)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this runtime holds no key-value stores")
		return nil, nil, false
	}
	kv, err := b.KV(r.Context(), r.PathValue("store"))
	if err != nil {
		s.kvError(w, err)
		return nil, nil, false
	}
	key := []byte(r.PathValue("key"))
	if r.PathValue("key") == "" && r.Method != http.MethodGet {
		writeError(w, http.StatusBadRequest, "key must not be empty")
		return nil, nil, false
	}
	if len(key) > engines.MaxKeySize {
		writeError(w, http.StatusBadRequest, "key longer than 512 bytes")
		return nil, nil, false
	}
	return kv, key, true
}

func (s *server) kvError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrUnknownKV), errors.Is(err, engines.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, engines.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, engines.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func (s *server) kvGet(w http.ResponseWriter, r *http.Request) {
	kv, key, ok := s.kvStore(w, r)
	if !ok {
		return
	}
	e, err := kv.Get(r.Context(), key)
	if err != nil {
		s.kvError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KVEntryOf(e))
}

func (s *server) kvPut(w http.ResponseWriter, r *http.Request) {
	kv, key, ok := s.kvStore(w, r)
	if !ok {
		return
	}
	var req KVPutRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	op := engines.KVOp{Kind: engines.KVSet, Key: key, Value: []byte(req.Value)}
	if req.ValueBase64 != "" {
		v, err := base64.StdEncoding.DecodeString(req.ValueBase64)
		if err != nil || req.Value != "" {
			writeError(w, http.StatusBadRequest, "value_base64 must be base64, and value and value_base64 are exclusive")
			return
		}
		op.Value = v
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "ttl must be a non-negative duration such as \"10m\"")
			return
		}
		op.TTL = d
	}
	es, err := kv.Apply(r.Context(), op)
	s.audit(r, "kv key set", err, zap.String("store", r.PathValue("store")), zap.Int("size", len(op.Value)))
	if err != nil {
		s.kvError(w, err)
		return
	}
	out := KVEntry{Key: string(key)}
	if len(es) == 1 {
		out = KVEntryOf(es[0])
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) kvDelete(w http.ResponseWriter, r *http.Request) {
	kv, key, ok := s.kvStore(w, r)
	if !ok {
		return
	}
	_, err := kv.Apply(r.Context(), engines.KVOp{Kind: engines.KVDelete, Key: key})
	s.audit(r, "kv key deleted", err, zap.String("store", r.PathValue("store")))
	if err != nil {
		s.kvError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) kvList(w http.ResponseWriter, r *http.Request) {
	kv, _, ok := s.kvStore(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := DefaultKVListLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxKVListLimit {
			writeError(w, http.StatusBadRequest, "limit must be 1..1000")
			return
		}
		limit = n
	}
	var after []byte
	if a := q.Get("after"); a != "" {
		after = []byte(a)
	}
	es, err := kv.List(r.Context(), []byte(q.Get("prefix")), after, limit+1)
	if err != nil {
		s.kvError(w, err)
		return
	}
	out := KVListResponse{Entries: []KVEntry{}}
	for i, e := range es {
		if i == limit {
			out.Next = string(es[i-1].Key)
			break
		}
		out.Entries = append(out.Entries, KVEntryOf(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// KVGet reads one key; an absent key is a *StatusError with Status 404.
func (c *Client) KVGet(ctx context.Context, store, key string) (KVEntry, error) {
	var out KVEntry
	err := c.do(ctx, http.MethodGet, kvPath(store, key), nil, &out)
	return out, err
}

// KVPut sets one key.
func (c *Client) KVPut(ctx context.Context, store, key string, req KVPutRequest) (KVEntry, error) {
	var out KVEntry
	err := c.do(ctx, http.MethodPut, kvPath(store, key), req, &out)
	return out, err
}

// KVDelete removes one key (an absent one too).
func (c *Client) KVDelete(ctx context.Context, store, key string) error {
	return c.do(ctx, http.MethodDelete, kvPath(store, key), nil, nil)
}

// KVList lists a page of keys beginning with prefix, after the key after
// ("" from the first), at most limit (0: the server's default).
func (c *Client) KVList(ctx context.Context, store, prefix, after string, limit int) (KVListResponse, error) {
	v := url.Values{}
	if prefix != "" {
		v.Set("prefix", prefix)
	}
	if after != "" {
		v.Set("after", after)
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	p := "/v1/kv/" + url.PathEscape(store)
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var out KVListResponse
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}

func kvPath(store, key string) string {
	return "/v1/kv/" + url.PathEscape(store) + "/" + url.PathEscape(key)
}
