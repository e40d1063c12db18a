package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// PluginInfo describes the version of a consumer's plugin that serves now
// and how its hot reloads went (ConsumerInfo.Plugin).
type PluginInfo struct {
	// Path is the .wasm file the consumer watches.
	Path string `json:"path"`
	// Version is the hex SHA-256 of the serving module.
	Version string `json:"version"`
	// LoadedAt is when that version started serving.
	LoadedAt time.Time `json:"loaded_at"`
	// FirstDeliveryAt is when it began its first delivery, if it has.
	FirstDeliveryAt *time.Time `json:"first_delivery_at,omitempty"`
	// Reloads counts versions swapped in since the consumer started.
	Reloads int64 `json:"reloads"`
	// FailedReloads counts versions refused; none of them served.
	FailedReloads int64 `json:"failed_reloads"`
	// LastError says why the last refused version was refused.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// LoadedVersions is 1 plus the replaced versions still finishing
	// deliveries.
	LoadedVersions int `json:"loaded_versions"`
}

// ReloadResult is the answer to a successful POST /v1/reload.
type ReloadResult struct {
	// Config is the file that was read.
	Config string `json:"config"`
	// Changes lists what the reload changed, one line each; empty when the
	// file matched what runs.
	Changes []string `json:"changes"`
	// Warnings lists changes that were not applied (they need a restart)
	// and the configuration's own warnings.
	Warnings []string `json:"warnings,omitempty"`
}

// Reloader is implemented by a Backend that can re-read its configuration;
// POST /v1/reload answers 501 otherwise.
type Reloader interface {
	Reload(ctx context.Context) (ReloadResult, error)
}

// InvalidConfigError is returned by a Reloader when the new configuration
// is refused; nothing was changed. Diagnostics is the text `qrun validate`
// prints: one file:line:col block per problem.
type InvalidConfigError struct {
	Diagnostics string
}

// Error returns the diagnostics.
func (e *InvalidConfigError) Error() string { return "invalid configuration:\n" + e.Diagnostics }

// ReloadErrorResponse is the body of a refused reload (400): Error sums it
// up, Diagnostics has the details with their file:line:col positions.
type ReloadErrorResponse struct {
	Error       string `json:"error"`
	Diagnostics string `json:"diagnostics"`
}

// ErrShuttingDown is returned by a Reloader once shutdown has begun.
var ErrShuttingDown = errors.New("qrun is shutting down")

func registerReloadRoutes(mux *http.ServeMux, s *server) {
	mux.HandleFunc("POST /v1/reload", s.reload)
}

func (s *server) reload(w http.ResponseWriter, r *http.Request) {
	rl, ok := s.o.Backend.(Reloader)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this backend cannot reload")
		return
	}
	res, err := rl.Reload(r.Context())
	// Audited like every mutating call; a refusal carries its diagnostics.
	var ice *InvalidConfigError
	if errors.As(err, &ice) {
		s.audit(r, "config reload", errors.New("invalid configuration; nothing was changed"), logDiagnostics(ice.Diagnostics))
	} else {
		s.audit(r, "config reload", err, logChanges(res.Changes))
	}
	switch {
	case ice != nil:
		writeJSON(w, http.StatusBadRequest, ReloadErrorResponse{Error: "invalid configuration; nothing was changed", Diagnostics: ice.Diagnostics})
	case errors.Is(err, ErrShuttingDown):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// Reload asks the running qrun to re-read its configuration file. A refused
// file comes back as *InvalidConfigError with the diagnostics.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var out ReloadResult
	err := c.do(ctx, http.MethodPost, "/v1/reload", nil, &out)
	return out, err
}

func logDiagnostics(d string) zap.Field { return zap.String("diagnostics", d) }

func logChanges(c []string) zap.Field { return zap.Strings("changes", c) }
