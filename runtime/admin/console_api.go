package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/qrun-dev/qrun/runtime/admin/console"
)

// The routes and types the web console (runtime/admin/console) needs beyond
// the operations API: the running configuration's source, and the console
// itself at /ui. The console is only a client of the API; it gets no route
// of its own that the API does not serve to every client.

// ConfigSource is the answer of GET /v1/config: the configuration file in
// effect (as last started or reloaded, not as it is on disk now).
type ConfigSource struct {
	// Path is the file's absolute path.
	Path string `json:"path"`
	// Source is the file's text, with the literal values of secret-looking
	// attributes (tokens, passwords, DSNs) replaced by "<redacted>".
	Source string `json:"source"`
	// Redacted counts the values replaced.
	Redacted int `json:"redacted"`
}

// ConfigSourcer is implemented by a Backend that can show the configuration
// it runs; GET /v1/config answers 501 otherwise.
type ConfigSourcer interface {
	ConfigSource(ctx context.Context) (ConfigSource, error)
}

// ErrNoConfigFile is returned by a ConfigSourcer whose configuration was
// built in Go rather than read from a file; GET /v1/config answers 404.
var ErrNoConfigFile = errors.New("the configuration was built in Go (config.Spec), not read from a file")

// LatencyInfo sums up a consumer's handler call durations since it started
// (ConsumerInfo.Latency). The quantiles are the upper bounds of the
// histogram buckets they fall in, as Prometheus' histogram_quantile would
// estimate them at best.
type LatencyInfo struct {
	Count  uint64  `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P99MS  float64 `json:"p99_ms"`
}

func registerConsoleRoutes(mux *http.ServeMux, s *server) {
	mux.HandleFunc("GET /v1/config", s.configSource)
}

func (s *server) configSource(w http.ResponseWriter, r *http.Request) {
	cs, ok := s.o.Backend.(ConfigSourcer)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this backend cannot show its configuration")
		return
	}
	src, err := cs.ConfigSource(r.Context())
	switch {
	case errors.Is(err, ErrNoConfigFile):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		fail(w, err)
	default:
		writeJSON(w, http.StatusOK, src)
	}
}

// withConsole serves the console's static assets at /ui/ without a token
// (they hold no data; the console asks for the token before it calls the
// API) and everything else through api. Every answer gets
// X-Content-Type-Options: nosniff.
func withConsole(api http.Handler) http.Handler {
	ui := console.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		p := r.URL.Path
		switch {
		case p == "/ui" || p == "/":
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				api.ServeHTTP(w, r)
				return
			}
			http.Redirect(w, r, "/ui/", http.StatusFound)
		case strings.HasPrefix(p, "/ui/"):
			http.StripPrefix("/ui", ui).ServeHTTP(w, r)
		default:
			api.ServeHTTP(w, r)
		}
	})
}

// Config fetches the configuration the running qrun applies.
func (c *Client) Config(ctx context.Context) (ConfigSource, error) {
	var out ConfigSource
	err := c.do(ctx, http.MethodGet, "/v1/config", nil, &out)
	return out, err
}
