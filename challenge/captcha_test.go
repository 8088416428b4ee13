package challenge_test

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/challenge"
)

// Tokens the fake siteverify knows.
const (
	goodToken  = "XXXX.DUMMY.TOKEN.XXXX"
	lowToken   = "low-score-token"  // reCAPTCHA: success with score 0.3
	edgeToken  = "edge-score-token" // reCAPTCHA: success with score 0.5
	v2Token    = "v2-token"         // reCAPTCHA: success without a score
	fakeSecret = "0x0000000000000000000000000000000AA"
	fakeSite   = "10000000-ffff-ffff-ffff-000000000001"
	fakeHost   = "shop.example"
	fakeAction = "token"
)

// fakeSiteverify is a siteverify endpoint that behaves like the real ones:
// POST with a form body only, the secret checked first, then the token, and
// for hCaptcha the sitekey if sent. It answers success for goodToken (and the
// reCAPTCHA score tokens) however often it is asked, so that single use is
// Once's doing. status, body and hang replace the answer.
type fakeSiteverify struct {
	provider string
	status   int    // if set, answer this status with an empty JSON body
	body     string // if set, answer this body with status 200
	hang     bool   // if set, answer only when the client gives up

	mu    sync.Mutex
	forms []url.Values
}

func (f *fakeSiteverify) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		f.answer(w, map[string]any{"success": false, "error-codes": []string{"bad-request"}})
		return
	}
	if err := r.ParseForm(); err != nil {
		f.answer(w, map[string]any{"success": false, "error-codes": []string{"bad-request"}})
		return
	}
	f.mu.Lock()
	f.forms = append(f.forms, r.PostForm)
	f.mu.Unlock()
	switch {
	case f.hang:
		<-r.Context().Done()
		return
	case f.status != 0:
		w.WriteHeader(f.status)
		w.Write([]byte("{}"))
		return
	case f.body != "":
		w.Write([]byte(f.body))
		return
	}

	fail := func(codes ...string) { f.answer(w, map[string]any{"success": false, "error-codes": codes}) }
	secret, token := r.PostForm.Get("secret"), r.PostForm.Get("response")
	switch {
	case secret == "":
		fail("missing-input-secret")
		return
	case secret != fakeSecret:
		fail("invalid-input-secret")
		return
	case token == "":
		fail("missing-input-response")
		return
	}
	if f.provider == challenge.ProviderHCaptcha {
		if sk := r.PostForm.Get("sitekey"); sk != "" && sk != fakeSite {
			fail("sitekey-secret-mismatch")
			return
		}
	}
	ok := map[string]any{
		"success":      true,
		"challenge_ts": "2026-03-01T12:00:00Z",
		"hostname":     fakeHost,
		"error-codes":  []string{},
	}
	switch f.provider {
	case challenge.ProviderTurnstile:
		ok["action"] = fakeAction
		ok["cdata"] = ""
	case challenge.ProviderHCaptcha:
		ok["credit"] = false
	case challenge.ProviderReCaptcha:
		ok["action"] = fakeAction
		ok["score"] = 0.9
		switch token {
		case lowToken:
			ok["score"] = 0.3
			token = goodToken
		case edgeToken:
			ok["score"] = 0.5
			token = goodToken
		case v2Token:
			delete(ok, "score")
			delete(ok, "action")
			token = goodToken
		}
	}
	if token != goodToken {
		fail("invalid-input-response")
		return
	}
	f.answer(w, ok)
}

func (f *fakeSiteverify) answer(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// calls returns the forms received so far.
func (f *fakeSiteverify) calls() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), f.forms...)
}

// startFake serves f and returns a config pointing at it.
func startFake(t *testing.T, f *fakeSiteverify, once challenge.Once) challenge.CaptchaConfig {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return challenge.CaptchaConfig{
		Provider:  f.provider,
		Secret:    fakeSecret,
		SiteKey:   fakeSite,
		VerifyURL: srv.URL + "/siteverify",
		Timeout:   2 * time.Second,
		Once:      once,
	}
}

func newCaptcha(t *testing.T, c challenge.CaptchaConfig) *challenge.Captcha {
	t.Helper()
	cc, err := challenge.NewCaptcha(c)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

var providers = []string{challenge.ProviderTurnstile, challenge.ProviderHCaptcha, challenge.ProviderReCaptcha}

func TestNewCaptcha(t *testing.T) {
	once := &memOnce{}
	base := challenge.CaptchaConfig{Provider: challenge.ProviderTurnstile, Secret: "base-secret-value", SiteKey: "site", Once: once}
	with := func(f func(*challenge.CaptchaConfig)) challenge.CaptchaConfig {
		c := base
		f(&c)
		return c
	}
	tests := []struct {
		name string
		c    challenge.CaptchaConfig
		ok   bool
	}{
		{"turnstile defaults", base, true},
		{"hcaptcha", with(func(c *challenge.CaptchaConfig) { c.Provider = challenge.ProviderHCaptcha }), true},
		{"recaptcha", with(func(c *challenge.CaptchaConfig) { c.Provider = challenge.ProviderReCaptcha }), true},
		{"http URL", with(func(c *challenge.CaptchaConfig) { c.VerifyURL = "http://127.0.0.1:1/siteverify" }), true},
		{"no provider", with(func(c *challenge.CaptchaConfig) { c.Provider = "" }), false},
		{"unknown provider", with(func(c *challenge.CaptchaConfig) { c.Provider = "Turnstile" }), false},
		{"no secret", with(func(c *challenge.CaptchaConfig) { c.Secret = "" }), false},
		{"no once", with(func(c *challenge.CaptchaConfig) { c.Once = nil }), false},
		{"ftp URL", with(func(c *challenge.CaptchaConfig) { c.VerifyURL = "ftp://example.com/siteverify" }), false},
		{"relative URL", with(func(c *challenge.CaptchaConfig) { c.VerifyURL = "/siteverify" }), false},
		{"no host", with(func(c *challenge.CaptchaConfig) { c.VerifyURL = "https:///siteverify" }), false},
		{"bad URL", with(func(c *challenge.CaptchaConfig) { c.VerifyURL = "http://[::1" }), false},
		{"min score 1.5", with(func(c *challenge.CaptchaConfig) { c.MinScore = 1.5 }), false},
		{"negative timeout", with(func(c *challenge.CaptchaConfig) { c.Timeout = -time.Second }), false},
		{"negative in-flight", with(func(c *challenge.CaptchaConfig) { c.MaxInFlight = -1 }), false},
		{"hcaptcha action", with(func(c *challenge.CaptchaConfig) {
			c.Provider, c.Action = challenge.ProviderHCaptcha, "x"
		}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := challenge.NewCaptcha(tt.c)
			if (err == nil) != tt.ok {
				t.Fatalf("NewCaptcha = %v, %v; want ok %v", c, err, tt.ok)
			}
			if err == nil && (c.Provider() != tt.c.Provider || c.SiteKey() != tt.c.SiteKey) {
				t.Fatalf("Provider, SiteKey = %q, %q", c.Provider(), c.SiteKey())
			}
			if err != nil && strings.Contains(err.Error(), tt.c.Secret) && tt.c.Secret != "" {
				t.Fatalf("error %q quotes the secret", err)
			}
		})
	}
}

func TestCaptchaVerify(t *testing.T) {
	type tc struct {
		name     string
		provider string
		config   func(*challenge.CaptchaConfig)
		fake     func(*fakeSiteverify)
		token    string
		remoteIP string
		want     error // nil: accepted
		reason   string
		calls    int // provider calls expected
	}
	var tests []tc
	for _, p := range providers {
		tests = append(tests,
			tc{name: "success", provider: p, token: goodToken, calls: 1},
			tc{name: "hostname matches", provider: p, token: goodToken, calls: 1,
				config: func(c *challenge.CaptchaConfig) { c.Hostname = "SHOP.example" }},
			tc{name: "hostname mismatch", provider: p, token: goodToken, calls: 1,
				config: func(c *challenge.CaptchaConfig) { c.Hostname = "evil.example" },
				want:   challenge.ErrFailed, reason: "another host"},
			tc{name: "invalid response", provider: p, token: "forged", calls: 1,
				want: challenge.ErrFailed, reason: "invalid-input-response"},
			// Deviation from the brief: a wrong secret is our fault, not the
			// shopper's, so it is ErrUnavailable (503), not ErrFailed.
			tc{name: "wrong secret", provider: p, token: goodToken, calls: 1,
				config: func(c *challenge.CaptchaConfig) { c.Secret = "wrong" },
				want:   challenge.ErrUnavailable, reason: "invalid-input-secret"},
			tc{name: "provider 500", provider: p, token: goodToken, calls: 1,
				fake: func(f *fakeSiteverify) { f.status = 500 },
				want: challenge.ErrUnavailable, reason: "status 500"},
			tc{name: "provider 404", provider: p, token: goodToken, calls: 1,
				fake: func(f *fakeSiteverify) { f.status = 404 },
				want: challenge.ErrUnavailable, reason: "status 404"},
			tc{name: "unparsable answer", provider: p, token: goodToken, calls: 1,
				fake: func(f *fakeSiteverify) { f.body = "<html>maintenance</html>" },
				want: challenge.ErrUnavailable, reason: "unparsable"},
			tc{name: "answer without success", provider: p, token: goodToken, calls: 1,
				fake: func(f *fakeSiteverify) { f.body = `{"hostname":"shop.example"}` },
				want: challenge.ErrUnavailable, reason: "success"},
			tc{name: "provider internal error", provider: p, token: goodToken, calls: 1,
				fake: func(f *fakeSiteverify) { f.body = `{"success":false,"error-codes":["internal-error"]}` },
				want: challenge.ErrUnavailable, reason: "internal-error"},
			tc{name: "hostile error codes", provider: p, token: goodToken, calls: 1,
				fake: func(f *fakeSiteverify) {
					f.body = `{"success":false,"error-codes":["a\nb","` + strings.Repeat("x", 100) + `","1","2","3","4","5","6","7"]}`
				},
				want: challenge.ErrFailed, reason: "a?b," + strings.Repeat("x", 64) + ",1,2,3,4,5,6,..."},
			tc{name: "empty", provider: p, token: "", want: challenge.ErrRequired},
			tc{name: "too long", provider: p, token: strings.Repeat("t", 8193),
				want: challenge.ErrFailed, reason: "too long"},
			tc{name: "remote ip with port", provider: p, token: goodToken, remoteIP: "203.0.113.7:4321", calls: 1},
			tc{name: "remote ip v6", provider: p, token: goodToken, remoteIP: "[2001:db8::1]:443", calls: 1},
			tc{name: "remote ip garbage", provider: p, token: goodToken, remoteIP: "a&secret=x", calls: 1},
		)
	}
	tests = append(tests,
		tc{name: "turnstile 2049 bytes", provider: challenge.ProviderTurnstile, token: strings.Repeat("t", 2049),
			want: challenge.ErrFailed, reason: "too long"},
		tc{name: "turnstile action", provider: challenge.ProviderTurnstile, token: goodToken, calls: 1,
			config: func(c *challenge.CaptchaConfig) { c.Action = fakeAction }},
		tc{name: "turnstile other action", provider: challenge.ProviderTurnstile, token: goodToken, calls: 1,
			config: func(c *challenge.CaptchaConfig) { c.Action = "login" },
			want:   challenge.ErrFailed, reason: "another action"},
		tc{name: "hcaptcha long token", provider: challenge.ProviderHCaptcha, token: strings.Repeat("t", 4500), calls: 1,
			want: challenge.ErrFailed, reason: "invalid-input-response"},
		tc{name: "hcaptcha other sitekey", provider: challenge.ProviderHCaptcha, token: goodToken, calls: 1,
			config: func(c *challenge.CaptchaConfig) { c.SiteKey = "20000000-ffff-ffff-ffff-000000000002" },
			want:   challenge.ErrUnavailable, reason: "sitekey-secret-mismatch"},
		tc{name: "recaptcha low score", provider: challenge.ProviderReCaptcha, token: lowToken, calls: 1,
			want: challenge.ErrFailed, reason: "score 0.30 below 0.50"},
		tc{name: "recaptcha score at minimum", provider: challenge.ProviderReCaptcha, token: edgeToken, calls: 1},
		tc{name: "recaptcha v2 without score", provider: challenge.ProviderReCaptcha, token: v2Token, calls: 1},
		tc{name: "recaptcha higher minimum", provider: challenge.ProviderReCaptcha, token: goodToken, calls: 1,
			config: func(c *challenge.CaptchaConfig) { c.MinScore = 0.95 },
			want:   challenge.ErrFailed, reason: "below 0.95"},
		tc{name: "recaptcha any score", provider: challenge.ProviderReCaptcha, token: lowToken, calls: 1,
			config: func(c *challenge.CaptchaConfig) { c.MinScore = -1 }},
		tc{name: "recaptcha action", provider: challenge.ProviderReCaptcha, token: goodToken, calls: 1,
			config: func(c *challenge.CaptchaConfig) { c.Action = fakeAction }},
		tc{name: "recaptcha v2 with action required", provider: challenge.ProviderReCaptcha, token: v2Token, calls: 1,
			config: func(c *challenge.CaptchaConfig) { c.Action = fakeAction },
			want:   challenge.ErrFailed, reason: "another action"},
	)

	for _, tt := range tests {
		t.Run(tt.provider+"/"+tt.name, func(t *testing.T) {
			f := &fakeSiteverify{provider: tt.provider}
			if tt.fake != nil {
				tt.fake(f)
			}
			once := &memOnce{}
			cfg := startFake(t, f, once)
			if tt.config != nil {
				tt.config(&cfg)
			}
			c := newCaptcha(t, cfg)
			err := c.Verify(context.Background(), tt.token, tt.remoteIP)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want accepted", err)
				}
			} else {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Verify = %v, want %v", err, tt.want)
				}
				if !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("Verify = %q, want reason %q", err, tt.reason)
				}
				if n := once.callCount(); n != 0 {
					t.Errorf("Once asked %d times for a refused token", n)
				}
				for _, secret := range []string{fakeSecret, cfg.Secret} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q quotes the secret", err)
					}
				}
				if len(tt.token) > 4 && strings.Contains(err.Error(), tt.token) {
					t.Errorf("error %q quotes the token", err)
				}
			}
			if (errors.Is(err, challenge.ErrFailed) && errors.Is(err, challenge.ErrUnavailable)) ||
				(errors.Is(err, challenge.ErrRequired) && err != challenge.ErrRequired) {
				t.Errorf("Verify = %v wraps more than one sentinel", err)
			}

			forms := f.calls()
			if len(forms) != tt.calls {
				t.Fatalf("provider called %d times, want %d", len(forms), tt.calls)
			}
			if tt.calls == 0 {
				return
			}
			form := forms[0]
			if form.Get("secret") != cfg.Secret || form.Get("response") != tt.token {
				t.Errorf("form %v lacks the secret or the token", form)
			}
			wantSiteKey := ""
			if tt.provider == challenge.ProviderHCaptcha {
				wantSiteKey = cfg.SiteKey
			}
			if got := form.Get("sitekey"); got != wantSiteKey {
				t.Errorf("sitekey sent = %q, want %q", got, wantSiteKey)
			}
			wantIP := map[string]string{
				"":                  "",
				"203.0.113.7:4321":  "203.0.113.7",
				"[2001:db8::1]:443": "2001:db8::1",
				"a&secret=x":        "",
			}[tt.remoteIP]
			if got, sent := form.Get("remoteip"), form.Has("remoteip"); got != wantIP || sent != (wantIP != "") {
				t.Errorf("remoteip sent = %q (%v), want %q", got, sent, wantIP)
			}
		})
	}
}

func TestCaptchaSingleUse(t *testing.T) {
	for _, p := range providers {
		t.Run(p, func(t *testing.T) {
			f := &fakeSiteverify{provider: p}
			once := &memOnce{}
			c := newCaptcha(t, startFake(t, f, once))
			ctx := context.Background()
			if err := c.Verify(ctx, goodToken, ""); err != nil {
				t.Fatalf("first Verify = %v", err)
			}
			err := c.Verify(ctx, goodToken, "")
			if !errors.Is(err, challenge.ErrFailed) || !strings.Contains(err.Error(), "already used") {
				t.Fatalf("second Verify = %v, want ErrFailed: already used", err)
			}
			if n := len(f.calls()); n != 2 {
				t.Errorf("provider called %d times, want 2 (it said success twice)", n)
			}
			// "captcha." + hex(sha256("XXXX.DUMMY.TOKEN.XXXX"))
			if keys := once.keys(); len(keys) != 1 || !strings.HasPrefix(keys[0], "captcha.") || len(keys[0]) != len("captcha.")+64 {
				t.Errorf("Once keys = %q, want one captcha.<64 hex>", keys)
			}
		})
	}
}

func TestCaptchaOnceUnavailable(t *testing.T) {
	storeDown := errors.New("kv: no responders")
	f := &fakeSiteverify{provider: challenge.ProviderTurnstile}
	c := newCaptcha(t, startFake(t, f, &memOnce{err: storeDown}))
	err := c.Verify(context.Background(), goodToken, "")
	if !errors.Is(err, challenge.ErrUnavailable) || !errors.Is(err, storeDown) || errors.Is(err, challenge.ErrFailed) {
		t.Fatalf("Verify = %v, want ErrUnavailable wrapping the store's error", err)
	}
}

func TestCaptchaTimeout(t *testing.T) {
	f := &fakeSiteverify{provider: challenge.ProviderHCaptcha, hang: true}
	once := &memOnce{}
	cfg := startFake(t, f, once)
	cfg.Timeout = 100 * time.Millisecond
	c := newCaptcha(t, cfg)
	start := time.Now()
	err := c.Verify(context.Background(), goodToken, "")
	if !errors.Is(err, challenge.ErrUnavailable) {
		t.Fatalf("Verify against a hanging provider = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Verify took %v with a 100ms timeout", d)
	}
	if once.callCount() != 0 {
		t.Fatal("Once asked after a timeout")
	}

	// The caller's own deadline counts too.
	cfg.Timeout = time.Minute
	c = newCaptcha(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Verify(ctx, goodToken, ""); !errors.Is(err, challenge.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Verify past the caller's deadline = %v, want ErrUnavailable", err)
	}
}

func TestCaptchaBoundsCalls(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	var mu sync.Mutex
	inFlight, most := 0, 0
	inner := &fakeSiteverify{provider: challenge.ProviderTurnstile}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	c := newCaptcha(t, challenge.CaptchaConfig{
		Provider:    challenge.ProviderTurnstile,
		Secret:      fakeSecret,
		VerifyURL:   srv.URL,
		MaxInFlight: 2,
		Timeout:     5 * time.Second,
		Once:        &memOnce{},
	})

	// Two calls take both slots and hang in the provider.
	errs := make(chan error, 4)
	for _, tok := range []string{goodToken, goodToken + "2"} {
		go func() { errs <- c.Verify(context.Background(), tok, "") }()
	}
	<-entered
	<-entered

	// A third waits for a slot until its deadline, without calling.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Verify(ctx, goodToken+"3", "")
	if !errors.Is(err, challenge.ErrUnavailable) || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("Verify with every slot taken = %v, want ErrUnavailable: busy", err)
	}

	// A fourth waits and gets the slot once one frees.
	go func() { errs <- c.Verify(context.Background(), goodToken, "") }()
	close(release)
	var accepted, used int
	for range 3 {
		switch err := <-errs; {
		case err == nil:
			accepted++
		case errors.Is(err, challenge.ErrFailed) && strings.Contains(err.Error(), "already used"):
			used++
		default:
			// goodToken+"2" is not a token the fake knows.
			if !errors.Is(err, challenge.ErrFailed) {
				t.Errorf("Verify = %v", err)
			}
		}
	}
	if accepted != 1 || used != 1 {
		t.Errorf("accepted %d, already used %d; want 1 and 1", accepted, used)
	}
	mu.Lock()
	defer mu.Unlock()
	if most > 2 {
		t.Errorf("%d calls in flight at once, want at most 2", most)
	}
}
