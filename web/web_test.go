package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/web"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestRoutes(t *testing.T) {
	h := web.Handler()
	for _, tc := range []struct {
		path, ctype, contains, cache string
	}{
		{"/", "text/html; charset=utf-8", `src="/static/shop.js"`, "no-cache"},
		{"/sales/demo", "text/html; charset=utf-8", `src="/static/shop.js"`, "no-cache"},
		{"/sales/some-sale_2", "text/html; charset=utf-8", `id="buy"`, "no-cache"},
		{"/admin", "text/html; charset=utf-8", `src="/static/admin.js"`, "no-cache"},
		{"/static/shop.js", "text/javascript; charset=utf-8", "export const steps", "public, max-age=300"},
		{"/static/admin.js", "text/javascript; charset=utf-8", "/api/v1/admin/events", "public, max-age=300"},
		{"/static/sse.js", "text/javascript; charset=utf-8", "class SSEParser", "public, max-age=300"},
		{"/static/api.js", "text/javascript; charset=utf-8", "export async function call", "public, max-age=300"},
		{"/static/style.css", "text/css; charset=utf-8", "tabular-nums", "public, max-age=300"},
		{"/static/icon.svg", "image/svg+xml", "<svg", "public, max-age=300"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := get(t, h, "GET", tc.path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := resp.Header.Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
			if !strings.Contains(body, tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			checkSecurityHeaders(t, resp.Header)
		})
	}
}

func checkSecurityHeaders(t *testing.T, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	if csp != web.ContentSecurityPolicy {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	// Only this origin; no inline script or style, no eval, no framing.
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP lacks %q", want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP allows %q", bad)
		}
	}
	for k, v := range map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
		"X-Frame-Options":        "DENY",
	} {
		if got := h.Get(k); got != v {
			t.Errorf("%s %q, want %q", k, got, v)
		}
	}
}

func TestNotFound(t *testing.T) {
	h := web.Handler()
	for _, p := range []string{
		"/static/nope.js",
		"/static/",
		"/static/../web.go",
		"/static/style.css/",
		"/sales/",
		"/sales/a/b",
		"/admin/x",
		"/favicon.ico",
		"/shop.html",
		"/assets/shop.html",
	} {
		resp, _ := get(t, h, "GET", p, nil)
		if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && loc != "" {
			resp, _ = get(t, h, "GET", loc, nil) // the mux cleans paths with a redirect
		}
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
	resp, _ := get(t, h, "POST", "/", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", resp.StatusCode)
	}
}

func TestConditionalGet(t *testing.T) {
	h := web.Handler()
	resp, _ := get(t, h, "GET", "/static/shop.js", nil)
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	resp, body := get(t, h, "GET", "/static/shop.js", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified || body != "" {
		t.Errorf("If-None-Match: %d with %d bytes, want 304 and none", resp.StatusCode, len(body))
	}
	resp, body = get(t, h, "HEAD", "/admin", nil)
	if resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD /admin: %d with %d bytes", resp.StatusCode, len(body))
	}
}

// TestPagesFollowCSP checks the pages against the policy they are served
// with: no inline scripts, styles or event handlers, and every asset they
// name is served.
func TestPagesFollowCSP(t *testing.T) {
	h := web.Handler()
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>[^<]|<style|\sstyle=|\son[a-z]+=|javascript:`)
	ref := regexp.MustCompile(`(?:src|href)="(/static/[^"]+)"`)
	imp := regexp.MustCompile(`from '\./([^']+)'`)
	for _, p := range []string{"/", "/admin"} {
		_, body := get(t, h, "GET", p, nil)
		if m := inline.FindString(body); m != "" {
			t.Errorf("%s has inline code or style: %q", p, m)
		}
		refs := ref.FindAllStringSubmatch(body, -1)
		if len(refs) < 2 {
			t.Errorf("%s names %d assets", p, len(refs))
		}
		for _, m := range refs {
			resp, js := get(t, h, "GET", m[1], nil)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s names %s: %d", p, m[1], resp.StatusCode)
			}
			for _, i := range imp.FindAllStringSubmatch(js, -1) {
				if resp, _ := get(t, h, "GET", "/static/"+i[1], nil); resp.StatusCode != http.StatusOK {
					t.Errorf("%s imports %s: %d", m[1], i[1], resp.StatusCode)
				}
			}
		}
	}
}

// TestCaptchaOrigins: a configured CAPTCHA provider's origins, and only
// they, join the pages' policy; without one, no third party is allowed.
func TestCaptchaOrigins(t *testing.T) {
	for provider, origin := range map[string]string{"turnstile": "https://challenges.cloudflare.com",
		"hcaptcha": "https://*.hcaptcha.com", "recaptcha": "https://www.google.com"} {
		h := web.HandlerWith(web.Options{CaptchaProvider: provider})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		csp := rec.Header().Get("Content-Security-Policy")
		directives := map[string]string{}
		for _, d := range strings.Split(csp, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
			directives[name] = value
		}
		for _, dir := range []string{"script-src", "frame-src", "connect-src", "style-src"} {
			if !strings.Contains(" "+directives[dir]+" ", " "+origin+" ") {
				t.Errorf("%s: %s %q lacks %s", provider, dir, directives[dir], origin)
			}
		}
		if directives["worker-src"] != "'self'" {
			t.Errorf("%s: worker-src %q", provider, directives["worker-src"])
		}
		if !strings.Contains(csp, origin) || !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("%s: %q", provider, csp)
		}
		for other, o := range map[string]string{"turnstile": "cloudflare", "hcaptcha": "hcaptcha", "recaptcha": "google"} {
			if other != provider && strings.Contains(csp, o) {
				t.Errorf("%s: policy admits %s: %q", provider, other, csp)
			}
		}
	}
	if web.CSP(web.Options{}) != web.ContentSecurityPolicy || web.CSP(web.Options{CaptchaProvider: "evil.example"}) != web.ContentSecurityPolicy {
		t.Error("an unknown provider changed the policy")
	}
}
