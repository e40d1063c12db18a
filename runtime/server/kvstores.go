package server

import (
	"slices"
	"strings"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// KVStores lists the config's key-value stores by name, open or not: the
// admin API's GET /v1/kv (admin.KVStoreLister), from which the web console
// offers them.
func (s *Server) KVStores() []admin.KVStoreInfo {
	out := make([]admin.KVStoreInfo, 0, len(s.cfg.KV))
	for _, k := range s.cfg.KV {
		out = append(out, admin.KVStoreInfo{Name: k.Name, Engine: k.Engine, MaxValueSize: k.MaxValueSize})
	}
	slices.SortFunc(out, func(a, b admin.KVStoreInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}
