package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

// TestAssetsSelfContained: the console loads nothing from elsewhere and
// runs no inline code, so the Content-Security-Policy can forbid both:
// no inline <script>, no style or on* attributes, no eval, no innerHTML
// (server data goes in as text), no other origin; and every module a
// script imports is there.
func TestAssetsSelfContained(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	inlineScript := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`)
	scriptTag := regexp.MustCompile(`<script[^>]*>`)
	attr := regexp.MustCompile(`\s(style|on[a-z]+)\s*=`)
	origin := regexp.MustCompile(`(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	imports := regexp.MustCompile(`(?m)^import .* from "(\./[^"]+|\.\./[^"]+)";`)
	n := 0
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		src := string(b)
		for _, m := range origin.FindAllString(src, -1) {
			if m != "http://www.w3.org" { // the SVG namespace, never fetched
				t.Errorf("%s names another origin: %s", p, m)
			}
		}
		switch path.Ext(p) {
		case ".html":
			if inlineScript.MatchString(src) {
				t.Errorf("%s has an inline script", p)
			}
			for _, tag := range scriptTag.FindAllString(src, -1) {
				if !strings.Contains(tag, "src=") {
					t.Errorf("%s: %s has no src", p, tag)
				}
			}
			if m := attr.FindString(src); m != "" {
				t.Errorf("%s has an inline %s attribute", p, strings.TrimSpace(m))
			}
		case ".js":
			for _, bad := range []string{"eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "setAttribute(\"style\""} {
				if strings.Contains(src, bad) {
					t.Errorf("%s uses %s", p, bad)
				}
			}
			for _, m := range imports.FindAllStringSubmatch(src, -1) {
				dep := path.Join(path.Dir(strings.TrimPrefix(p, "assets")), m[1])
				resp, err := http.Get(srv.URL + dep)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("%s imports %s: %d", p, dep, resp.StatusCode)
				}
			}
		}
		return nil
	})
	if err != nil || n < 10 {
		t.Fatalf("walked %d assets: %v", n, err)
	}
}
