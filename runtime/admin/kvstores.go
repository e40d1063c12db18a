package admin

import (
	"context"
	"net/http"
)

// KVStoreInfo is one key-value store as GET /v1/kv lists it: the config's
// kv block, so that a client (the web console) can offer the stores
// without knowing the config.
type KVStoreInfo struct {
	Name   string `json:"name"`
	Engine string `json:"engine"`
	// MaxValueSize is the largest value the store accepts, in bytes.
	MaxValueSize int `json:"max_value_size"`
}

// KVStoreLister is implemented by a Backend that holds key-value stores;
// without it GET /v1/kv answers an empty list.
type KVStoreLister interface {
	// KVStores lists the declared stores by name, open or not.
	KVStores() []KVStoreInfo
}

func registerKVStoreRoutes(mux *http.ServeMux, s *server) {
	mux.HandleFunc("GET /v1/kv", func(w http.ResponseWriter, r *http.Request) {
		list := []KVStoreInfo{}
		if l, ok := s.o.Backend.(KVStoreLister); ok {
			list = append(list, l.KVStores()...)
		}
		writeJSON(w, http.StatusOK, map[string]any{"stores": list})
	})
}

// KVStores lists the running qrun's key-value stores (GET /v1/kv).
func (c *Client) KVStores(ctx context.Context) ([]KVStoreInfo, error) {
	var out struct {
		Stores []KVStoreInfo `json:"stores"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/kv", nil, &out)
	return out.Stores, err
}
