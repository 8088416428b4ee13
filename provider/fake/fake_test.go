package fake

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 11, 28, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	testID     = "flash:gate" // a colon must be form-encoded in HTTP Basic
	testSecret = "s3cr+t/é%"
)

// newFake returns a Provider on clock c with test credentials; edit
// adjusts the config first.
func newFake(tb testing.TB, c *clock, edit func(*Config)) *Provider {
	tb.Helper()
	cfg := Config{ClientID: testID, ClientSecret: testSecret, Now: c.Now, Seed: 1}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// reply is a recorded response with its JSON body decoded.
type reply struct {
	code   int
	header http.Header
	raw    string
	body   map[string]any
}

func (r reply) str(k string) string { s, _ := r.body[k].(string); return s }

func do(tb testing.TB, p *Provider, req *http.Request) reply {
	tb.Helper()
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	r := reply{code: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("%s %s: Content-Type %q, body %s", req.Method, req.URL, ct, r.raw)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &r.body); err != nil {
		tb.Fatalf("%s %s: body %q: %v", req.Method, req.URL, r.raw, err)
	}
	return r
}

// tokenReq is a token request authenticated by HTTP Basic with form-encoded
// parts, with the given form fields.
func tokenReq(form url.Values) *http.Request {
	req := httptest.NewRequest("POST", "/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(testID), url.QueryEscape(testSecret))
	return req
}

func grant() url.Values { return url.Values{"grant_type": {"client_credentials"}} }

// getToken issues a token and fails the test if it is refused.
func getToken(tb testing.TB, p *Provider) string {
	tb.Helper()
	r := do(tb, p, tokenReq(grant()))
	if r.code != 200 || r.str("access_token") == "" {
		tb.Fatalf("token: %d %s", r.code, r.raw)
	}
	return r.str("access_token")
}

// orderReq is POST /v1/orders for key with token; body defaults to the
// order key (sale s1, shopper u-KEY, 1 unit).
func orderReq(token, key, body string) *http.Request {
	if body == "" {
		body = fmt.Sprintf(`{"orderId":%q,"sale":"s1","shopper":"u-%s","units":1,"tokenId":"t1","extra":true}`, key, key)
	}
	req := httptest.NewRequest("POST", "/v1/orders", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return req
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no id", func(c *Config) { c.ClientID = "" }},
		{"no secret", func(c *Config) { c.ClientSecret = "" }},
		{"negative rate", func(c *Config) { c.Rate = -1 }},
		{"NaN rate", func(c *Config) { c.Rate = math.NaN() }},
		{"short window", func(c *Config) { c.Window = 500 * time.Millisecond }},
		{"short ttl", func(c *Config) { c.TokenTTL = time.Millisecond }},
		{"short penalty", func(c *Config) { c.Penalty = -time.Second }},
		{"fail share", func(c *Config) { c.FailShare = 1.5 }},
		{"unauthorized share", func(c *Config) { c.Unauthorized = -0.1 }},
		{"NaN share", func(c *Config) { c.FailShare = math.NaN() }},
		{"bad scope", func(c *Config) { c.Scopes = []string{"a b"} }},
	} {
		c := Config{ClientID: "id", ClientSecret: "secret"}
		tc.edit(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, c)
		}
	}
	p, err := New(Config{ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Quota != 15 {
		t.Errorf("default quota %d, want 15 (3/s over 5s)", s.Quota)
	}
}

func TestTokenIssue(t *testing.T) {
	c := newClock()
	p := newFake(t, c, func(cfg *Config) { cfg.TokenTTL = 90 * time.Second })

	// HTTP Basic, parts form-encoded.
	r := do(t, p, tokenReq(grant()))
	if r.code != 200 || r.str("token_type") != "Bearer" || r.body["expires_in"] != 90.0 {
		t.Fatalf("basic: %d %s", r.code, r.raw)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
	}
	if b, err := base64.RawURLEncoding.DecodeString(r.str("access_token")); err != nil || len(b) != 32 {
		t.Errorf("access_token %q: %d bytes, %v", r.str("access_token"), len(b), err)
	}
	first := r.str("access_token")

	// Form fields.
	form := grant()
	form.Set("client_id", testID)
	form.Set("client_secret", testSecret)
	req := httptest.NewRequest("POST", "/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r = do(t, p, req)
	if r.code != 200 || r.str("access_token") == "" || r.str("access_token") == first {
		t.Fatalf("form: %d %s", r.code, r.raw)
	}

	// Bad credentials: 401 with a Basic challenge.
	for name, req := range map[string]*http.Request{
		"wrong secret": func() *http.Request {
			req := tokenReq(grant())
			req.SetBasicAuth(url.QueryEscape(testID), "nope")
			return req
		}(),
		"not encoded": func() *http.Request { // the raw id has a colon: Basic cannot carry it unencoded
			req := tokenReq(grant())
			req.SetBasicAuth(testID, testSecret)
			return req
		}(),
		"none": func() *http.Request {
			req := tokenReq(grant())
			req.Header.Del("Authorization")
			return req
		}(),
	} {
		r := do(t, p, req)
		if r.code != 401 || r.str("error") != "invalid_client" || r.header.Get("WWW-Authenticate") != `Basic realm="fake-provider"` {
			t.Errorf("%s: %d %v %s", name, r.code, r.header, r.raw)
		}
	}
	// Both methods at once is a malformed request.
	both := grant()
	both.Set("client_id", testID)
	both.Set("client_secret", testSecret)
	if r := do(t, p, tokenReq(both)); r.code != 400 || r.str("error") != "invalid_request" {
		t.Errorf("both methods: %d %s", r.code, r.raw)
	}

	// Wrong and missing grant types.
	if r := do(t, p, tokenReq(url.Values{"grant_type": {"password"}})); r.code != 400 || r.str("error") != "unsupported_grant_type" {
		t.Errorf("password grant: %d %s", r.code, r.raw)
	}
	if r := do(t, p, tokenReq(url.Values{})); r.code != 400 || r.str("error") != "invalid_request" {
		t.Errorf("no grant: %d %s", r.code, r.raw)
	}

	// Any scope without configured scopes.
	form = grant()
	form.Set("scope", "orders:write  anything")
	if r := do(t, p, tokenReq(form)); r.code != 200 || r.str("scope") != "orders:write anything" {
		t.Errorf("free scope: %d %s", r.code, r.raw)
	}
	if s := p.Stats(); s.TokenRequests != 9 || s.TokensIssued != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestTokenScopes(t *testing.T) {
	p := newFake(t, newClock(), func(c *Config) { c.Scopes = []string{"orders:write", "orders:read"} })
	for _, tc := range []struct {
		ask, code, want string
	}{
		{"orders:write", "200", "orders:write"},
		{"orders:read orders:write", "200", "orders:read orders:write"},
		{"", "200", "orders:write orders:read"}, // none asked: every allowed one
		{"admin", "400", ""},
		{"orders:write admin", "400", ""},
	} {
		form := grant()
		if tc.ask != "" {
			form.Set("scope", tc.ask)
		}
		r := do(t, p, tokenReq(form))
		if strconv.Itoa(r.code) != tc.code {
			t.Errorf("scope %q: %d %s", tc.ask, r.code, r.raw)
			continue
		}
		if r.code == 200 && r.str("scope") != tc.want {
			t.Errorf("scope %q granted %q, want %q", tc.ask, r.str("scope"), tc.want)
		}
		if r.code == 400 && r.str("error") != "invalid_scope" {
			t.Errorf("scope %q: %s", tc.ask, r.raw)
		}
	}
}

// retryAfter returns the Retry-After of a banned answer, failing the test if
// r is not one.
func retryAfter(tb testing.TB, r reply) int {
	tb.Helper()
	if r.code != 403 || r.str("error") != "banned" || r.str("message") == "" {
		tb.Fatalf("want 403 banned, got %d %s", r.code, r.raw)
	}
	n, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil {
		tb.Fatalf("Retry-After %q: %v", r.header.Get("Retry-After"), err)
	}
	return n
}

func TestQuotaBan(t *testing.T) {
	c := newClock()
	p := newFake(t, c, nil)
	start := c.Now()
	tok := getToken(t, p) // 1 of 15
	for i := 1; i < 15; i++ {
		c.Advance(100 * time.Millisecond)
		getToken(t, p)
	}
	if s := p.Stats(); s.MaxInWindow != 15 || s.Bans != 0 || !s.BannedUntil.IsZero() {
		t.Fatalf("after 15: %+v", s)
	}
	// The 16th within 5 seconds of the first is refused and bans.
	c.Advance(100 * time.Millisecond)
	if n := retryAfter(t, do(t, p, tokenReq(grant()))); n != 600 {
		t.Fatalf("Retry-After %d, want 600", n)
	}
	banEnd := c.Now().Add(10 * time.Minute)
	if got := p.BannedUntil(); !got.Equal(banEnd) {
		t.Fatalf("BannedUntil %v, want %v", got, banEnd)
	}
	if s := p.Stats(); s.Bans != 1 || s.MaxInWindow != 16 || !s.BannedUntil.Equal(banEnd) || s.TokenRequests != 16 || s.TokensIssued != 15 {
		t.Fatalf("after the 16th: %+v", s)
	}

	// During the ban everything is refused, counted, with a falling
	// Retry-After, and the ban does not grow.
	c.Advance(time.Second)
	if n := retryAfter(t, do(t, p, tokenReq(grant()))); n != 599 {
		t.Errorf("token Retry-After %d, want 599", n)
	}
	if n := retryAfter(t, do(t, p, orderReq(tok, "o1", ""))); n != 599 {
		t.Errorf("order Retry-After %d, want 599", n)
	}
	c.Advance(1500 * time.Millisecond) // 597.5 s left: rounded up
	if n := retryAfter(t, do(t, p, orderReq(tok, "o1", ""))); n != 598 {
		t.Errorf("order Retry-After %d, want 598", n)
	}
	get := httptest.NewRequest("GET", "/v1/orders/o1", nil)
	get.Header.Set("Authorization", "Bearer "+tok)
	retryAfter(t, do(t, p, get))
	for range 100 {
		retryAfter(t, do(t, p, tokenReq(grant())))
	}
	c.Advance(banEnd.Sub(c.Now()) - time.Millisecond)
	if n := retryAfter(t, do(t, p, tokenReq(grant()))); n != 1 {
		t.Errorf("last moment: Retry-After %d, want 1", n)
	}
	s := p.Stats()
	if s.Bans != 1 || !s.BannedUntil.Equal(banEnd) || s.TokenRequestsDuringBan != 102 || s.OrderCallsDuringBan != 3 || s.OrderCalls != 3 || len(p.Orders()) != 0 {
		t.Fatalf("during the ban: %+v", s)
	}

	// After the penalty the client starts afresh: 15 at once pass.
	c.Advance(time.Millisecond)
	if !p.BannedUntil().IsZero() {
		t.Fatalf("still banned at %v", c.Now().Sub(start))
	}
	for range 15 {
		getToken(t, p)
	}
	if r := do(t, p, orderReq(tok, "o1", "")); r.code != 201 {
		t.Fatalf("order after the ban: %d %s", r.code, r.raw)
	}
	retryAfter(t, do(t, p, tokenReq(grant())))
	if s := p.Stats(); s.Bans != 2 || s.MaxInWindow != 16 {
		t.Fatalf("second ban: %+v", s)
	}
}

// TestQuotaSliding checks the window slides rather than resets.
func TestQuotaSliding(t *testing.T) {
	t.Run("steady", func(t *testing.T) {
		c := newClock()
		p := newFake(t, c, nil)
		// One every 400 ms (2.5/s) for a minute: 13 in any 5 s, never banned.
		for range 150 {
			getToken(t, p)
			c.Advance(400 * time.Millisecond)
		}
		if s := p.Stats(); s.Bans != 0 || s.MaxInWindow != 13 || s.TokensIssued != 150 {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("edge", func(t *testing.T) {
		c := newClock()
		p := newFake(t, c, nil)
		for range 15 {
			getToken(t, p)
		}
		c.Advance(5 * time.Second) // the first 15 have just left the window
		for range 15 {
			getToken(t, p)
		}
		c.Advance(5*time.Second - time.Nanosecond) // the last 15 have not
		retryAfter(t, do(t, p, tokenReq(grant())))
	})
	t.Run("straddling", func(t *testing.T) {
		// 10 at 4 s and 5 at 6 s: a fixed 5-second window starting at 0
		// would count 10 then 5; the sliding one sees 15 in (1 s, 6 s].
		c := newClock()
		p := newFake(t, c, nil)
		c.Advance(4 * time.Second)
		for range 10 {
			getToken(t, p)
		}
		c.Advance(2 * time.Second)
		for range 5 {
			getToken(t, p)
		}
		retryAfter(t, do(t, p, tokenReq(grant())))
		if s := p.Stats(); s.Bans != 1 || s.MaxInWindow != 16 {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("every request counts", func(t *testing.T) {
		c := newClock()
		p := newFake(t, c, func(cfg *Config) { cfg.Rate = 1; cfg.Window = 2 * time.Second })
		for range 2 { // refused for a wrong grant, but counted
			if r := do(t, p, tokenReq(url.Values{"grant_type": {"password"}})); r.code != 400 {
				t.Fatalf("%d %s", r.code, r.raw)
			}
		}
		if n := retryAfter(t, do(t, p, tokenReq(grant()))); n != 600 {
			t.Fatalf("Retry-After %d", n)
		}
	})
}

func TestTokenLifetime(t *testing.T) {
	c := newClock()
	p := newFake(t, c, func(cfg *Config) { cfg.TokenTTL = 10 * time.Second; cfg.Rate = 100 })
	tok := getToken(t, p)
	c.Advance(10*time.Second - time.Millisecond)
	if r := do(t, p, orderReq(tok, "o1", "")); r.code != 201 {
		t.Fatalf("just before expiry: %d %s", r.code, r.raw)
	}
	c.Advance(time.Millisecond)
	r := do(t, p, orderReq(tok, "o2", ""))
	if r.code != 401 || r.str("error") != "invalid_token" || r.header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
		t.Fatalf("expired: %d %v %s", r.code, r.header, r.raw)
	}
	for name, auth := range map[string]string{"none": "", "unknown": "Bearer nope", "basic": "Basic " + tok} {
		req := orderReq("", "o2", "")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if r := do(t, p, req); r.code != 401 || r.str("error") != "invalid_token" {
			t.Errorf("%s: %d %s", name, r.code, r.raw)
		}
	}
	if s := p.Stats(); s.Unauthorized != 4 || s.SpuriousUnauthorized != 0 {
		t.Errorf("%+v", s)
	}

	// Expired tokens are pruned as new ones are issued.
	for range 100 {
		getToken(t, p)
	}
	c.Advance(10 * time.Second)
	for range 100 {
		getToken(t, p)
	}
	p.mu.Lock()
	n := len(p.tokens)
	p.mu.Unlock()
	if n > 100 {
		t.Errorf("%d tokens kept, want at most the 100 live ones", n)
	}
}

func TestRevokeOnRenew(t *testing.T) {
	for _, revoke := range []bool{false, true} {
		p := newFake(t, newClock(), func(c *Config) { c.RevokeOnRenew = revoke })
		old := getToken(t, p)
		fresh := getToken(t, p)
		want := 201
		if revoke {
			want = 401
		}
		if r := do(t, p, orderReq(old, "o1", "")); r.code != want {
			t.Errorf("RevokeOnRenew %v: the older token: %d %s", revoke, r.code, r.raw)
		}
		if r := do(t, p, orderReq(fresh, "o2", "")); r.code != 201 {
			t.Errorf("RevokeOnRenew %v: the newer token: %d %s", revoke, r.code, r.raw)
		}
	}
}

func TestIdempotency(t *testing.T) {
	c := newClock()
	p := newFake(t, c, nil)
	tok := getToken(t, p)

	first := do(t, p, orderReq(tok, "order-1", ""))
	if first.code != 201 || first.str("reference") != "P-000001" || first.str("orderId") != "order-1" || first.str("status") != "accepted" {
		t.Fatalf("first: %d %s", first.code, first.raw)
	}
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first answer marked replayed")
	}
	c.Advance(time.Second)
	// The same order again, tokenId and unknown fields aside.
	again := do(t, p, orderReq(tok, "order-1", `{"orderId":"order-1","sale":"s1","shopper":"u-order-1","units":1,"tokenId":"other"}`))
	if again.code != 200 || again.raw != first.raw || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat: %d %v %s", again.code, again.header, again.raw)
	}
	if r := do(t, p, orderReq(tok, "order-2", "")); r.code != 201 || r.str("reference") != "P-000002" {
		t.Fatalf("second order: %d %s", r.code, r.raw)
	}

	orders := p.Orders()
	o := orders["order-1"]
	if len(orders) != 2 || o.Reference != "P-000001" || o.OrderID != "order-1" || o.Sale != "s1" || o.Shopper != "u-order-1" ||
		o.Units != 1 || o.Calls != 2 || !o.AcceptedAt.Equal(c.Now().Add(-time.Second)) {
		t.Fatalf("Orders() = %+v", orders)
	}

	for _, body := range []string{
		`{"orderId":"order-1","sale":"s2","shopper":"u-order-1","units":1}`,
		`{"orderId":"order-1","sale":"s1","shopper":"someone","units":1}`,
		`{"orderId":"order-1","sale":"s1","shopper":"u-order-1","units":2}`,
	} {
		if r := do(t, p, orderReq(tok, "order-1", body)); r.code != 422 || r.str("error") != "idempotency_key_reused" {
			t.Errorf("reuse %s: %d %s", body, r.code, r.raw)
		}
	}

	for name, req := range map[string]*http.Request{
		"no key":         orderReq(tok, "", `{"orderId":"x","sale":"s1","shopper":"u","units":1}`),
		"long key":       orderReq(tok, strings.Repeat("k", 129), ""),
		"control in key": orderReq(tok, "a\x01b", ""),
		"id not key":     orderReq(tok, "order-3", `{"orderId":"order-4","sale":"s1","shopper":"u","units":1}`),
		"not JSON":       orderReq(tok, "order-3", `{"orderId":`),
		"no sale":        orderReq(tok, "order-3", `{"orderId":"order-3","shopper":"u","units":1}`),
		"no units":       orderReq(tok, "order-3", `{"orderId":"order-3","sale":"s1","shopper":"u"}`),
		"units string":   orderReq(tok, "order-3", `{"orderId":"order-3","sale":"s1","shopper":"u","units":"1"}`),
	} {
		if r := do(t, p, req); r.code != 400 || r.str("error") != "invalid_request" || r.str("message") == "" {
			t.Errorf("%s: %d %s", name, r.code, r.raw)
		}
	}
	if r := do(t, p, orderReq(tok, strings.Repeat("k", 128), "")); r.code != 201 {
		t.Errorf("128-character key: %d %s", r.code, r.raw)
	}

	// GET answers the stored answer.
	get := func(id, token string) reply {
		req := httptest.NewRequest("GET", "/v1/orders/"+id, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return do(t, p, req)
	}
	if r := get("order-1", tok); r.code != 200 || r.raw != first.raw {
		t.Errorf("GET: %d %s", r.code, r.raw)
	}
	if r := get("order-9", tok); r.code != 404 || r.str("error") != "not_found" {
		t.Errorf("GET unknown: %d %s", r.code, r.raw)
	}
	if r := get("order-1", ""); r.code != 401 {
		t.Errorf("GET without a token: %d %s", r.code, r.raw)
	}
	if s := p.Stats(); s.OrdersAccepted != 3 || s.Replays != 1 {
		t.Errorf("%+v", s)
	}
}

func TestOrderCap(t *testing.T) {
	p := newFake(t, newClock(), nil)
	p.maxOrders = 2
	tok := getToken(t, p)
	for _, k := range []string{"a", "b"} {
		if r := do(t, p, orderReq(tok, k, "")); r.code != 201 {
			t.Fatalf("%s: %d %s", k, r.code, r.raw)
		}
	}
	if r := do(t, p, orderReq(tok, "c", "")); r.code != 507 || r.str("error") != "insufficient_storage" {
		t.Fatalf("beyond the cap: %d %s", r.code, r.raw)
	}
	if r := do(t, p, orderReq(tok, "a", "")); r.code != 200 {
		t.Fatalf("a replay beyond the cap: %d %s", r.code, r.raw)
	}
}

// faultRun makes n order calls with distinct keys and returns how many got
// each status.
func faultRun(t *testing.T, p *Provider, n int) (codes map[int]int, seq []int) {
	t.Helper()
	tok := getToken(t, p)
	codes = make(map[int]int)
	for i := range n {
		r := do(t, p, orderReq(tok, fmt.Sprintf("f-%d", i), ""))
		codes[r.code]++
		seq = append(seq, r.code)
		if _, taken := p.Orders()[fmt.Sprintf("f-%d", i)]; taken != (r.code == 201) {
			t.Fatalf("call %d answered %d, order taken: %v", i, r.code, taken)
		}
	}
	return codes, seq
}

func TestFaults(t *testing.T) {
	t.Run("503", func(t *testing.T) {
		p := newFake(t, newClock(), func(c *Config) { c.FailShare = 0.5; c.Seed = 42 })
		codes, seq := faultRun(t, p, 1000)
		if codes[503] < 400 || codes[503] > 600 || codes[201]+codes[503] != 1000 {
			t.Fatalf("codes %v", codes)
		}
		s := p.Stats()
		if s.Failures != codes[503] || s.OrdersAccepted != codes[201] || len(p.Orders()) != codes[201] {
			t.Fatalf("stats %+v, codes %v", s, codes)
		}
		// The same seed gives the same faults.
		_, again := faultRun(t, newFake(t, newClock(), func(c *Config) { c.FailShare = 0.5; c.Seed = 42 }), 1000)
		if fmt.Sprint(seq) != fmt.Sprint(again) {
			t.Errorf("seed 42 gave two fault sequences")
		}
	})
	t.Run("401", func(t *testing.T) {
		p := newFake(t, newClock(), func(c *Config) { c.Unauthorized = 0.3; c.Seed = 7 })
		codes, _ := faultRun(t, p, 1000)
		if codes[401] < 230 || codes[401] > 370 || codes[201]+codes[401] != 1000 {
			t.Fatalf("codes %v", codes)
		}
		s := p.Stats()
		if s.SpuriousUnauthorized != codes[401] || s.Unauthorized != codes[401] || s.OrdersAccepted != codes[201] {
			t.Fatalf("stats %+v, codes %v", s, codes)
		}
	})
	t.Run("a faulted call took nothing", func(t *testing.T) {
		p := newFake(t, newClock(), func(c *Config) { c.FailShare = 0.5; c.Unauthorized = 0.2; c.Seed = 3 })
		tok := getToken(t, p)
		var codes []int
		for range 200 {
			r := do(t, p, orderReq(tok, "same", ""))
			codes = append(codes, r.code)
		}
		first := true
		for i, c := range codes {
			switch {
			case c == 201 && first:
				first = false
			case c == 200 && !first:
			case c == 401 || c == 503:
			default:
				t.Fatalf("call %d: %d (%v)", i, c, codes)
			}
		}
		if s := p.Stats(); s.OrdersAccepted != 1 || s.Replays+1+s.Failures+s.SpuriousUnauthorized != 200 {
			t.Fatalf("%+v", s)
		}
	})
}

func TestConcurrentOrders(t *testing.T) {
	c := newClock()
	p := newFake(t, c, func(cfg *Config) { cfg.Rate = 1000 })
	tok := getToken(t, p)
	const goroutines, calls, keys = 50, 20, 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := make(map[int]int)
	for g := range goroutines {
		wg.Go(func() {
			for i := range calls {
				// Key k is called by calls k, k+300, ...: by several goroutines.
				key := fmt.Sprintf("k-%d", (g*calls+i)%keys)
				rec := httptest.NewRecorder()
				p.ServeHTTP(rec, orderReq(tok, key, ""))
				mu.Lock()
				codes[rec.Code]++
				mu.Unlock()
				if i%5 == 0 { // tokens, stats and time move meanwhile
					rec := httptest.NewRecorder()
					p.ServeHTTP(rec, tokenReq(grant()))
					if rec.Code != 200 {
						t.Errorf("token: %d %s", rec.Code, rec.Body)
					}
					_ = p.Stats()
					c.Advance(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	if codes[201] != keys || codes[200] != goroutines*calls-keys || s.OrdersAccepted != keys || s.Replays != codes[200] {
		t.Fatalf("codes %v, stats %+v", codes, s)
	}
	refs := make(map[string]bool)
	for _, o := range p.Orders() {
		if refs[o.Reference] {
			t.Fatalf("reference %s given twice", o.Reference)
		}
		refs[o.Reference] = true
	}
	if len(refs) != keys {
		t.Fatalf("%d references, want %d", len(refs), keys)
	}
}

// TestDevEndpoints bans and unbans over HTTP on a real listener, and reads
// the stats.
func TestDevEndpoints(t *testing.T) {
	c := newClock()
	p := newFake(t, c, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, stop, err := Listen(ctx, "127.0.0.1:0", p)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	call := func(method, path string) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		b, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %q", method, path, b)
		}
		return res.StatusCode, res.Header, m
	}
	if code, _, m := call("POST", "/_fake/ban?for=2s"); code != 200 || m["bannedUntil"] == nil {
		t.Fatalf("ban: %d %v", code, m)
	}
	if code, h, m := call("POST", "/oauth/token"); code != 403 || h.Get("Retry-After") != "2" || m["error"] != "banned" {
		t.Fatalf("token while banned: %d %v %v", code, h, m)
	}
	if code, _, m := call("GET", "/_fake/stats"); code != 200 || m["bans"] != 0.0 || m["tokenRequestsDuringBan"] != 1.0 {
		t.Fatalf("stats: %d %v", code, m)
	}
	if code, _, m := call("POST", "/_fake/ban?for=soon"); code != 400 || m["error"] != "invalid_request" {
		t.Fatalf("bad ban: %d %v", code, m)
	}
	if code, _, m := call("POST", "/_fake/unban"); code != 200 || m["bannedUntil"] != nil {
		t.Fatalf("unban: %d %v", code, m)
	}
	if code, _, m := call("POST", "/oauth/token"); code != 401 || m["error"] != "invalid_client" {
		t.Fatalf("token after unban: %d %v", code, m)
	}
	// for absent: the Penalty.
	call("POST", "/_fake/ban")
	if got, want := p.BannedUntil(), c.Now().Add(DefaultPenalty); !got.Equal(want) {
		t.Fatalf("BannedUntil %v, want %v", got, want)
	}
	p.Unban()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("a second stop: %v", err)
	}
	if _, err := http.Get(base + "/_fake/stats"); err == nil {
		t.Fatal("still serving after stop")
	}
}

func TestListenBadAddress(t *testing.T) {
	p := newFake(t, newClock(), nil)
	if _, _, err := Listen(context.Background(), "127.0.0.1:notaport", p); err == nil {
		t.Fatal("Listen accepted a bad address")
	}
}
