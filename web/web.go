// Package web serves flashgate's two pages: the shopper's page (the sale
// list at / and one sale at /sales/{sale}) and the operator's live view at
// /admin. The pages are static files embedded in the binary; they talk to
// the HTTP API under /api/v1 from the browser, so this package imports
// nothing of flashgate's. The binary mounts Handler() on the API's listener
// (app.Config.Pages), so pages and API share one origin.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Headers set on every page (and asset) this package serves. The pages run
// only their own scripts and styles from this origin and talk only to it.
const (
	ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	// StaticCacheControl is the caching of /static/ assets: short, since
	// their names carry no version.
	StaticCacheControl = "public, max-age=300"
)

// contentTypes are the types of the files in assets/static; a file of
// another kind is not served.
var contentTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".json": "application/json",
}

type file struct {
	body  []byte
	ctype string
	etag  string
}

func load(name, ctype string) file {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic("web: embedded file missing: " + err.Error()) // a build mistake, caught by the tests
	}
	sum := sha256.Sum256(b)
	return file{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// Handler serves
//
//	GET /              the shopper's page (the sale list, or the one sale on now)
//	GET /sales/{sale}  the shopper's page for one sale
//	GET /admin         the operator's live view
//	GET /static/...    the pages' scripts and styles
//
// and answers 404 to anything else.
func Handler() http.Handler { return HandlerWith(Options{}) }

// Options change what the pages may load.
type Options struct {
	// CaptchaProvider (turnstile, hcaptcha, recaptcha) lets the shop page
	// load that provider's widget: its origins join the policy's script,
	// frame, style and connect sources. Empty: no third party at all.
	CaptchaProvider string
}

// captchaOrigins are each CAPTCHA provider's origins its widget needs.
var captchaOrigins = map[string]string{
	"turnstile": "https://challenges.cloudflare.com",
	"hcaptcha":  "https://hcaptcha.com https://*.hcaptcha.com",
	"recaptcha": "https://www.google.com https://www.gstatic.com https://www.recaptcha.net",
}

// CSP is the Content-Security-Policy the pages are served with under o.
func CSP(o Options) string {
	extra, ok := captchaOrigins[o.CaptchaProvider]
	if !ok {
		return ContentSecurityPolicy
	}
	return "default-src 'none'; script-src 'self' " + extra + "; style-src 'self' " + extra + "; img-src 'self' data:; " +
		"connect-src 'self' " + extra + "; frame-src " + extra + "; worker-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// HandlerWith is Handler with options.
func HandlerWith(o Options) http.Handler {
	shop := load("assets/shop.html", "text/html; charset=utf-8")
	admin := load("assets/admin.html", "text/html; charset=utf-8")
	static := map[string]file{}
	err := fs.WalkDir(assets, "assets/static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ct, ok := contentTypes[path.Ext(p)]; ok {
			static[strings.TrimPrefix(p, "assets")] = load(p, ct)
		}
		return nil
	})
	if err != nil {
		panic("web: " + err.Error())
	}

	mux := http.NewServeMux()
	mux.Handle("GET /{$}", page(shop))
	mux.Handle("GET /sales/{sale}", page(shop))
	mux.Handle("GET /admin", page(admin))
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		f, ok := static[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", StaticCacheControl)
		serve(w, r, f)
	})
	return secure(CSP(o), mux)
}

// page serves an HTML page; browsers revalidate it each time (the ETag makes
// that cheap), so a new binary's pages show at once.
func page(f file) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		serve(w, r, f)
	})
}

func serve(w http.ResponseWriter, r *http.Request, f file) {
	w.Header().Set("Content-Type", f.ctype)
	w.Header().Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// secure sets the security headers on every answer.
func secure(csp string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}
