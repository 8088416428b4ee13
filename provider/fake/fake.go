// Package fake is a stand-in order provider (the payment, carrier or
// ticketing back office an accepted purchase is handed to) for development
// and tests. It speaks the protocol the client in package provider speaks:
// OAuth 2.0 client-credentials tokens from POST /oauth/token, orders by
// POST /v1/orders with an Idempotency-Key, and GET /v1/orders/{orderId}.
// Run it in-process with Listen (127.0.0.1:0 in tests) or as
// `flashgate provider fake`.
//
// # The quota, and the ban
//
// It copies a real carrier's rule for its token endpoint: "3 hits per
// second, continuously, during a span of 5 seconds; a public IP that breaks
// it is penalised for 10 minutes and every request in that time gets 403
// Forbidden". The fake reads that as a sliding window: a token request that
// arrives when the token requests of the last Window (the half-open
// interval (now-Window, now]) already number Rate × Window (3/s × 5 s = 15)
// is refused with 403 and starts a ban. So 15 requests in one burst pass
// and the 16th inside the same 5 seconds is banned, while a steady 3 per
// second (or 2.5, one every 400 ms) never is. Every token request counts,
// whatever it is answered (a bad password too), except those refused during
// a ban; the request that starts a ban counts in Stats.MaxInWindow, so a
// MaxInWindow above Stats.Quota means the quota was broken.
//
// During a ban (Penalty, 10 minutes by default) every request to
// /oauth/token and /v1/orders* is answered 403 {"error":"banned"} with
// Retry-After (the remaining whole seconds, rounded up, at least 1). All
// clients of one fake share it, as all the processes behind one public IP
// share the carrier's. Requests during a ban are counted in Stats but do
// not extend it, and a ban forgets the window: when it ends the client
// starts afresh.
//
// # Tokens and orders
//
// A token is 32 random bytes, base64url; it lives TokenTTL (expires_in is
// TokenTTL in whole seconds, rounded down, so a client that trusts it
// renews in time). With RevokeOnRenew every new token revokes the earlier
// ones, as some carriers do. Expired tokens are pruned as new ones are
// issued.
//
// An order is taken once per Idempotency-Key (201 with a reference
// P-000001, P-000002, ...); a repeat of the same order is answered 200 with
// the same body and Idempotent-Replayed: true; the same key for a
// different order is 422. Faults are injected per order call from a seeded
// generator (FailShare: 503; Unauthorized: a spurious 401 even for a valid
// token); a faulted call took nothing. Orders are kept in memory for the
// life of the Provider: this is a development tool, and beyond MaxOrders
// orders it answers 507.
//
// # Development endpoints
//
// GET /_fake/stats returns Stats as JSON; POST /_fake/ban?for=30s starts a
// ban now (for absent: Penalty); POST /_fake/unban ends it. They are not
// authenticated and not banned: never expose a fake beyond a development
// machine.
package fake

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The defaults of Config's zero fields.
const (
	DefaultTokenTTL = time.Hour
	DefaultRate     = 3.0
	DefaultWindow   = 5 * time.Second
	DefaultPenalty  = 10 * time.Minute
)

// MaxOrders is how many distinct orders a Provider keeps; beyond it an
// order call is answered 507.
const MaxOrders = 1_000_000

// maxBody is the largest request body read, for the token and order calls.
const maxBody = 64 << 10

// Config configures a Provider. Only ClientID and ClientSecret are
// required; the zero value of every other field is the default.
type Config struct {
	ClientID, ClientSecret string        // required (New returns an error if empty)
	Scopes                 []string      // allowed scopes; empty: any scope is granted
	TokenTTL               time.Duration // default 1h; at least 1s
	Rate                   float64       // token requests per second allowed on average over Window; default 3
	Window                 time.Duration // default 5s; at least 1s
	Penalty                time.Duration // default 10m; at least 1s
	RevokeOnRenew          bool          // a new token revokes every earlier one
	FailShare              float64       // share of order calls answered 503, 0..1
	Unauthorized           float64       // share of order calls answered with a spurious 401, 0..1
	Seed                   uint64        // RNG seed for the faults; 0: random
	Now                    func() time.Time
	Log                    *slog.Logger // optional
}

// Stats counts what a Provider has seen since New.
type Stats struct {
	TokenRequests          int       `json:"tokenRequests"` // every request to the token endpoint
	TokensIssued           int       `json:"tokensIssued"`
	TokenRequestsDuringBan int       `json:"tokenRequestsDuringBan"`
	Bans                   int       `json:"bans"` // bans started by the quota (not by Ban())
	BannedUntil            time.Time `json:"bannedUntil,omitzero"`
	Quota                  int       `json:"quota"`       // token requests a Window allows: Rate × Window
	MaxInWindow            int       `json:"maxInWindow"` // the most token requests seen in any Window (sliding), the quota's headroom at a glance
	OrderCalls             int       `json:"orderCalls"`  // every request to /v1/orders*
	OrderCallsDuringBan    int       `json:"orderCallsDuringBan"`
	OrdersAccepted         int       `json:"ordersAccepted"` // distinct orders taken
	Replays                int       `json:"replays"`        // idempotent repeats answered 200
	Unauthorized           int       `json:"unauthorized"`   // 401s on order calls, spurious ones included
	SpuriousUnauthorized   int       `json:"spuriousUnauthorized"`
	Failures               int       `json:"failures"` // injected 503s
}

// Order is an accepted order.
type Order struct {
	Reference, OrderID, Sale, Shopper string
	Units                             int64
	Calls                             int // answered calls with its key: the first and every replay
	AcceptedAt                        time.Time
}

// Provider is the fake provider, an http.Handler. Its methods are safe for
// concurrent use.
type Provider struct {
	c         Config
	now       func() time.Time
	log       *slog.Logger
	quota     int // token requests a window allows
	maxOrders int
	mux       *http.ServeMux

	mu          sync.Mutex
	rng         *mrand.Rand
	window      []time.Time // token requests counted, oldest first, all inside the window
	bannedUntil time.Time
	tokens      map[string]time.Time // live token -> when it expires
	pruneAt     int                  // prune expired tokens when there are this many
	orders      map[string]*order    // by idempotency key
	seq         int                  // the last reference number given
	stats       Stats
}

// order is an accepted order with the answer every replay repeats.
type order struct {
	Order
	body []byte
}

// New returns a Provider for c, or an error naming the first bad field.
func New(c Config) (*Provider, error) {
	if c.ClientID == "" || c.ClientSecret == "" {
		return nil, errors.New("fake provider: ClientID and ClientSecret are required")
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Penalty == 0 {
		c.Penalty = DefaultPenalty
	}
	switch {
	case c.TokenTTL < time.Second:
		return nil, fmt.Errorf("fake provider: TokenTTL %v: want at least 1s", c.TokenTTL)
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0):
		return nil, fmt.Errorf("fake provider: Rate %v: want a number above 0", c.Rate)
	case c.Window < time.Second:
		return nil, fmt.Errorf("fake provider: Window %v: want at least 1s", c.Window)
	case c.Penalty < time.Second:
		return nil, fmt.Errorf("fake provider: Penalty %v: want at least 1s", c.Penalty)
	case !(c.FailShare >= 0 && c.FailShare <= 1):
		return nil, fmt.Errorf("fake provider: FailShare %v: want 0 to 1", c.FailShare)
	case !(c.Unauthorized >= 0 && c.Unauthorized <= 1):
		return nil, fmt.Errorf("fake provider: Unauthorized %v: want 0 to 1", c.Unauthorized)
	}
	for _, s := range c.Scopes {
		if !validScope(s) {
			return nil, fmt.Errorf("fake provider: scope %q: want printable ASCII without spaces, quotes or backslashes", s)
		}
	}
	c.Scopes = append([]string(nil), c.Scopes...)
	p := &Provider{
		c:         c,
		now:       c.Now,
		log:       c.Log,
		maxOrders: MaxOrders,
		tokens:    make(map[string]time.Time),
		orders:    make(map[string]*order),
		pruneAt:   64,
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	// 3/s × 5s = 15; a fractional product is rounded up, and one request
	// always passes.
	p.quota = max(1, int(math.Ceil(c.Rate*c.Window.Seconds()-1e-9)))
	p.stats.Quota = p.quota
	seed := c.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	p.rng = mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/token", p.token)
	mux.HandleFunc("POST /v1/orders", p.createOrder)
	mux.HandleFunc("GET /v1/orders/{orderId}", p.getOrder)
	mux.HandleFunc("GET /_fake/stats", p.statsHandler)
	mux.HandleFunc("POST /_fake/ban", p.banHandler)
	mux.HandleFunc("POST /_fake/unban", p.unbanHandler)
	p.mux = mux
	return p, nil
}

// ServeHTTP serves the provider's endpoints.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mux.ServeHTTP(w, r)
}

// Stats returns the counters so far.
func (p *Provider) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statsLocked(p.now())
}

func (p *Provider) statsLocked(now time.Time) Stats {
	s := p.stats
	s.BannedUntil = p.bannedUntilLocked(now)
	return s
}

// Ban starts a ban of d now, as if the quota had been broken (but it is not
// counted in Stats.Bans). It replaces a ban under way; d <= 0 ends it.
func (p *Provider) Ban(d time.Duration) {
	if d <= 0 {
		p.Unban()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.startBanLocked(p.now(), d)
	p.log.Info("fake provider: ban started by hand", "for", d, "until", p.bannedUntil)
}

// Unban ends a ban under way, and forgets the token requests counted so far.
func (p *Provider) Unban() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bannedUntil = time.Time{}
	p.window = p.window[:0]
	p.log.Info("fake provider: ban lifted by hand")
}

// BannedUntil returns when the ban under way ends, or the zero time if
// there is none.
func (p *Provider) BannedUntil() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bannedUntilLocked(p.now())
}

// Orders returns a copy of the accepted orders by idempotency key.
func (p *Provider) Orders() map[string]Order {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]Order, len(p.orders))
	for k, o := range p.orders {
		m[k] = o.Order
	}
	return m
}

func (p *Provider) bannedUntilLocked(now time.Time) time.Time {
	if now.Before(p.bannedUntil) {
		return p.bannedUntil
	}
	return time.Time{}
}

func (p *Provider) startBanLocked(now time.Time, d time.Duration) {
	p.bannedUntil = now.Add(d)
	p.window = p.window[:0]
}

// refuseBannedLocked returns the 403 of a ban under way, or nil if there is
// none.
func (p *Provider) refuseBannedLocked(now time.Time) *answer {
	if !now.Before(p.bannedUntil) {
		return nil
	}
	left := p.bannedUntil.Sub(now)
	secs := max(1, int64((left+time.Second-1)/time.Second))
	a := errorAnswer(http.StatusForbidden, "banned", fmt.Sprintf(
		"too many token requests (more than %d in %v): every request is refused until %s",
		p.quota, p.c.Window, p.bannedUntil.UTC().Format(time.RFC3339)))
	a.header = append(a.header, "Retry-After", strconv.FormatInt(secs, 10))
	return a
}

// token serves POST /oauth/token.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	formErr := r.ParseForm()
	p.mu.Lock()
	a := p.tokenLocked(p.now(), r, formErr)
	p.mu.Unlock()
	a.write(w)
}

func (p *Provider) tokenLocked(now time.Time, r *http.Request, formErr error) *answer {
	p.stats.TokenRequests++
	if a := p.refuseBannedLocked(now); a != nil {
		p.stats.TokenRequestsDuringBan++
		return a
	}
	// The quota: drop what left the window, then count this request.
	from := now.Add(-p.c.Window)
	i := 0
	for i < len(p.window) && !p.window[i].After(from) {
		i++
	}
	p.window = p.window[:copy(p.window, p.window[i:])]
	p.stats.MaxInWindow = max(p.stats.MaxInWindow, len(p.window)+1)
	if len(p.window) >= p.quota {
		p.startBanLocked(now, p.c.Penalty)
		p.stats.Bans++
		p.log.Warn("fake provider: token quota broken, ban started",
			"quota", p.quota, "window", p.c.Window, "penalty", p.c.Penalty, "until", p.bannedUntil)
		return p.refuseBannedLocked(now)
	}
	p.window = append(p.window, now)

	if formErr != nil {
		return errorAnswer(http.StatusBadRequest, "invalid_request", "unreadable form body: "+formErr.Error())
	}
	id, secret, err := clientCredentials(r)
	if err != nil {
		return errorAnswer(http.StatusBadRequest, "invalid_request", err.Error())
	}
	if !p.client(id, secret) {
		a := errorAnswer(http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
		a.header = append(a.header, "WWW-Authenticate", `Basic realm="fake-provider"`)
		return a
	}
	switch g := r.PostForm.Get("grant_type"); g {
	case "client_credentials":
	case "":
		return errorAnswer(http.StatusBadRequest, "invalid_request", "grant_type is missing")
	default:
		return errorAnswer(http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q: only client_credentials is supported", g))
	}
	scope, ok := p.grant(r.PostForm.Get("scope"))
	if !ok {
		return errorAnswer(http.StatusBadRequest, "invalid_scope", fmt.Sprintf("scope %q: allowed are %q", r.PostForm.Get("scope"), strings.Join(p.c.Scopes, " ")))
	}

	if p.c.RevokeOnRenew {
		clear(p.tokens)
	} else if len(p.tokens) >= p.pruneAt {
		for t, exp := range p.tokens {
			if !now.Before(exp) {
				delete(p.tokens, t)
			}
		}
		p.pruneAt = max(64, 2*len(p.tokens))
	}
	tok := newToken()
	p.tokens[tok] = now.Add(p.c.TokenTTL)
	p.stats.TokensIssued++
	p.log.Debug("fake provider: token issued", "scope", scope, "expires", now.Add(p.c.TokenTTL))
	return jsonAnswer(http.StatusOK, struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
		Scope       string `json:"scope"`
	}{tok, "Bearer", max(1, int64(p.c.TokenTTL/time.Second)), scope})
}

// clientCredentials returns the client id and secret of a token request,
// by HTTP Basic (each part form-encoded, RFC 6749 §2.3.1) or form fields.
// Neither gives empty strings; both is an error.
func clientCredentials(r *http.Request) (id, secret string, err error) {
	user, pass, basic := r.BasicAuth()
	_, formID := r.PostForm["client_id"]
	_, formSecret := r.PostForm["client_secret"]
	if basic && (formID || formSecret) {
		return "", "", errors.New("client authenticated twice: use HTTP Basic or client_id and client_secret fields, not both")
	}
	if !basic {
		return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"), nil
	}
	// A part that is not form-encoded cannot match: leave it as it is.
	if u, err := url.QueryUnescape(user); err == nil {
		user = u
	}
	if p, err := url.QueryUnescape(pass); err == nil {
		pass = p
	}
	return user, pass, nil
}

// client reports whether id and secret are the configured client's.
func (p *Provider) client(id, secret string) bool {
	okID := subtle.ConstantTimeCompare([]byte(id), []byte(p.c.ClientID))
	okSecret := subtle.ConstantTimeCompare([]byte(secret), []byte(p.c.ClientSecret))
	return okID&okSecret == 1
}

// grant returns the scope granted for the requested one: all of it if every
// requested scope is allowed (or no scopes are configured), every allowed
// scope if none is requested.
func (p *Provider) grant(requested string) (string, bool) {
	want := strings.Fields(requested)
	if len(p.c.Scopes) == 0 {
		return strings.Join(want, " "), true
	}
	if len(want) == 0 {
		return strings.Join(p.c.Scopes, " "), true
	}
	for _, s := range want {
		found := false
		for _, a := range p.c.Scopes {
			if s == a {
				found = true
				break
			}
		}
		if !found {
			return "", false
		}
	}
	return strings.Join(want, " "), true
}

// validScope reports whether s is a scope-token of RFC 6749 §3.3.
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// validTokenLocked reports whether the Authorization header of r carries a
// live token; it forgets an expired one.
func (p *Provider) validTokenLocked(now time.Time, r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	tok = strings.TrimSpace(tok)
	exp, ok := p.tokens[tok]
	if !ok {
		return false
	}
	if !now.Before(exp) {
		delete(p.tokens, tok)
		return false
	}
	return true
}

func invalidToken(message string) *answer {
	a := errorAnswer(http.StatusUnauthorized, "invalid_token", message)
	a.header = append(a.header, "WWW-Authenticate", `Bearer error="invalid_token"`)
	return a
}

// orderRequest is the body of POST /v1/orders.
type orderRequest struct {
	OrderID string `json:"orderId"`
	Sale    string `json:"sale"`
	Shopper string `json:"shopper"`
	Units   int64  `json:"units"`
	TokenID string `json:"tokenId"`
}

// readOrder reads and checks the idempotency key and body of an order call.
func readOrder(w http.ResponseWriter, r *http.Request) (key string, o orderRequest, err error) {
	key = r.Header.Get("Idempotency-Key")
	if key == "" {
		return "", o, errors.New("the Idempotency-Key header is required (the order id)")
	}
	if len(key) > 128 {
		return "", o, errors.New("Idempotency-Key: longer than 128 characters")
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return "", o, errors.New("Idempotency-Key: want printable ASCII")
		}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return "", o, fmt.Errorf("reading the body: %v", err)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return "", o, fmt.Errorf("the body is not an order: %v", err)
	}
	switch {
	case o.OrderID != key:
		return "", o, fmt.Errorf("orderId %q must equal the Idempotency-Key %q", o.OrderID, key)
	case o.Sale == "":
		return "", o, errors.New("sale is required")
	case o.Shopper == "":
		return "", o, errors.New("shopper is required")
	case o.Units < 1:
		return "", o, fmt.Errorf("units %d: want at least 1", o.Units)
	}
	return key, o, nil
}

// createOrder serves POST /v1/orders.
func (p *Provider) createOrder(w http.ResponseWriter, r *http.Request) {
	key, req, reqErr := readOrder(w, r)
	p.mu.Lock()
	a := p.createOrderLocked(p.now(), r, key, req, reqErr)
	p.mu.Unlock()
	a.write(w)
}

func (p *Provider) createOrderLocked(now time.Time, r *http.Request, key string, req orderRequest, reqErr error) *answer {
	p.stats.OrderCalls++
	if a := p.refuseBannedLocked(now); a != nil {
		p.stats.OrderCallsDuringBan++
		return a
	}
	// Both faults are drawn for every call, so call n meets the same faults
	// whatever the calls before it were answered.
	spurious := p.rng.Float64() < p.c.Unauthorized
	fail := p.rng.Float64() < p.c.FailShare
	if spurious {
		p.stats.Unauthorized++
		p.stats.SpuriousUnauthorized++
		return invalidToken("the access token is invalid (injected fault)")
	}
	if !p.validTokenLocked(now, r) {
		p.stats.Unauthorized++
		return invalidToken("missing, unknown, expired or revoked access token")
	}
	if fail {
		p.stats.Failures++
		return errorAnswer(http.StatusServiceUnavailable, "unavailable", "the provider is unavailable (injected fault); nothing was done, retry")
	}
	if reqErr != nil {
		return errorAnswer(http.StatusBadRequest, "invalid_request", reqErr.Error())
	}
	if o, ok := p.orders[key]; ok {
		if o.Sale != req.Sale || o.Shopper != req.Shopper || o.Units != req.Units {
			return errorAnswer(http.StatusUnprocessableEntity, "idempotency_key_reused",
				fmt.Sprintf("Idempotency-Key %q was used for another order", key))
		}
		o.Calls++
		p.stats.Replays++
		return &answer{status: http.StatusOK, header: []string{"Idempotent-Replayed", "true"}, body: o.body}
	}
	if len(p.orders) >= p.maxOrders {
		return errorAnswer(http.StatusInsufficientStorage, "insufficient_storage",
			fmt.Sprintf("the fake provider keeps at most %d orders", p.maxOrders))
	}
	p.seq++
	o := &order{Order: Order{
		Reference:  fmt.Sprintf("P-%06d", p.seq),
		OrderID:    req.OrderID,
		Sale:       req.Sale,
		Shopper:    req.Shopper,
		Units:      req.Units,
		Calls:      1,
		AcceptedAt: now,
	}}
	o.body = marshal(struct {
		Reference string `json:"reference"`
		OrderID   string `json:"orderId"`
		Status    string `json:"status"`
	}{o.Reference, o.OrderID, "accepted"})
	p.orders[key] = o
	p.stats.OrdersAccepted++
	return &answer{status: http.StatusCreated, body: o.body}
}

// getOrder serves GET /v1/orders/{orderId}.
func (p *Provider) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("orderId")
	p.mu.Lock()
	a := p.getOrderLocked(p.now(), r, id)
	p.mu.Unlock()
	a.write(w)
}

func (p *Provider) getOrderLocked(now time.Time, r *http.Request, id string) *answer {
	p.stats.OrderCalls++
	if a := p.refuseBannedLocked(now); a != nil {
		p.stats.OrderCallsDuringBan++
		return a
	}
	if !p.validTokenLocked(now, r) {
		p.stats.Unauthorized++
		return invalidToken("missing, unknown, expired or revoked access token")
	}
	o, ok := p.orders[id]
	if !ok {
		return errorAnswer(http.StatusNotFound, "not_found", fmt.Sprintf("no order %q", id))
	}
	return &answer{status: http.StatusOK, body: o.body}
}

func (p *Provider) statsHandler(w http.ResponseWriter, r *http.Request) {
	jsonAnswer(http.StatusOK, p.Stats()).write(w)
}

func (p *Provider) banHandler(w http.ResponseWriter, r *http.Request) {
	d := p.c.Penalty
	if v := r.URL.Query().Get("for"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			errorAnswer(http.StatusBadRequest, "invalid_request", fmt.Sprintf("for=%q: want a duration above 0, like 30s", v)).write(w)
			return
		}
	}
	p.Ban(d)
	jsonAnswer(http.StatusOK, p.Stats()).write(w)
}

func (p *Provider) unbanHandler(w http.ResponseWriter, r *http.Request) {
	p.Unban()
	jsonAnswer(http.StatusOK, p.Stats()).write(w)
}

// answer is a response decided under the lock and written after it.
type answer struct {
	status int
	header []string // name, value, ...
	body   []byte   // JSON
}

func (a *answer) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	for i := 0; i+1 < len(a.header); i += 2 {
		h.Set(a.header[i], a.header[i+1])
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

func jsonAnswer(status int, v any) *answer {
	return &answer{status: status, body: marshal(v)}
}

// errorAnswer is the house error body {"error": code, "message": text}.
func errorAnswer(status int, code, message string) *answer {
	return jsonAnswer(status, struct {
		Error   string `json:"error"`
		Message string `json:"message,omitempty"`
	}{code, message})
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fake provider: marshal %T: %v", v, err)) // only plain structs are marshalled
	}
	return append(b, '\n')
}
