// Package console is qrun's web console: static HTML, CSS and JavaScript,
// embedded in the binary and served by the admin listener at /ui/. The
// console is only a client of the admin API (docs/admin-api.md); it holds
// no data and has no routes of its own, so serving it needs no token. The
// pages ask for the admin token when the API wants one and keep it in
// sessionStorage. docs/console.md describes the pages.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// ContentSecurityPolicy is sent with every asset: scripts and styles only
// from the console's own files (no inline script, no eval), API calls only
// to the same origin, nothing from elsewhere, never in a frame.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console's assets, rooted at "/": mount it under /ui
// with http.StripPrefix.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded directory is there by construction
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		// Assets change with the binary; revalidate rather than serve an
		// old console against a new API.
		h.Set("Cache-Control", "no-cache")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		files.ServeHTTP(w, r)
	})
}
