package main

// The Redis-Lua reference: the design flashgate is measured against, built
// as a well-tuned peer. Per token request it verifies the session JWT, runs
// ONE Lua script (EVALSHA over a pooled connection) that decides atomically
// — sale open, the shopper's token if they hold one, stock, quota, per-shopper
// limit, expired tokens reclaimed — and signs the purchase token. Redis runs
// with --appendonly yes --appendfsync everysec (bench/internal/redisproc):
// each decision is written to the OS before the reply, fsynced within a
// second.
//
// What it does NOT do that flashgate does, on purpose — that is the point of
// the comparison:
//   - no durable event log: Redis keeps only the current state, so there is
//     no record of each request and its decision to audit, replay or rebuild
//     from;
//   - no audit (re-running the decisions over the recorded requests), no
//     SQLite projections (orders, request status), no admin event stream;
//   - no group commit, no waiting room, no rate limits, no human check, no
//     signed requests, no metrics, no per-request log.

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

var (
	//go:embed lua/token.lua
	tokenLua string
	//go:embed lua/purchase.lua
	purchaseLua string
	//go:embed lua/create.lua
	createLua string

	tokenScript    = redis.NewScript(tokenLua)
	purchaseScript = redis.NewScript(purchaseLua)
	createScript   = redis.NewScript(createLua)
)

// redisConfig configures newRedisServer. Now nil means time.Now.
type redisConfig struct {
	Addr       string // host:port or unix:/path
	Pool       int
	AdminToken string
	Now        func() time.Time
}

// redisServer is the reference server's HTTP front over Redis.
type redisServer struct {
	rdb   *redis.Client
	admin string
	now   func() time.Time
	sign  *signer
	ids   *events.IDs
}

// newRedisServer connects to Redis, checks it answers and loads the
// scripts, so that the first requests already hit EVALSHA.
func newRedisServer(ctx context.Context, c redisConfig) (*redisServer, error) {
	if c.Now == nil {
		c.Now = time.Now
	}
	network, addr := "tcp", c.Addr
	if p, ok := strings.CutPrefix(c.Addr, "unix:"); ok {
		network, addr = "unix", p
	}
	rdb := redis.NewClient(&redis.Options{
		Network:                  network,
		Addr:                     addr,
		Protocol:                 2,
		PoolSize:                 c.Pool,
		MinIdleConns:             min(c.Pool, 64),
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	sign, err := newSigner(c.Now)
	if err != nil {
		return nil, err
	}
	s := &redisServer{rdb: rdb, admin: c.AdminToken, now: c.Now, sign: sign, ids: events.NewIDs()}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", c.Addr, err)
	}
	for _, sc := range []*redis.Script{tokenScript, purchaseScript, createScript} {
		if err := sc.Load(ctx, rdb).Err(); err != nil {
			rdb.Close()
			return nil, fmt.Errorf("redis %s: load script: %w", c.Addr, err)
		}
	}
	return s, nil
}

// Close closes the connection pool.
func (s *redisServer) Close() error { return s.rdb.Close() }

// Handler returns the routes flashgate's front has for a token race.
func (s *redisServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/session", s.session)
	mux.HandleFunc("POST /api/v1/sales/{sale}/tokens", s.shopper(s.tokens))
	mux.HandleFunc("POST /api/v1/sales/{sale}/purchases", s.shopper(s.purchase))
	mux.HandleFunc("POST /api/v1/admin/sales", s.adminOnly(s.createSale))
	mux.HandleFunc("GET /api/v1/admin/sales/{sale}", s.adminOnly(s.adminSale))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	return mux
}

// saleKeys are the Redis keys of a sale, hash-tagged so that they live on
// one Redis Cluster slot.
func saleKeys(sale string) []string {
	k := "fg:{" + sale + "}"
	return []string{k, k + ":holders", k + ":tokens", k + ":expiry"}
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// shopper verifies the session before h.
func (s *redisServer) shopper(h func(w http.ResponseWriter, r *http.Request, shopper string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "Authorization: Bearer <session> required")
			return
		}
		shopper, err := s.sign.verifySession(tok)
		if err != nil {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "session is not valid: "+err.Error())
			return
		}
		h(w, r, shopper)
	}
}

func (s *redisServer) adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := bearer(r); tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.admin)) != 1 {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "Authorization: Bearer <admin token> required")
			return
		}
		h(w, r)
	}
}

type sessionAnswer struct {
	ExpiresAt string `json:"expiresAt"`
	Session   string `json:"session"`
	Shopper   string `json:"shopper"`
}

func (s *redisServer) session(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	shopper := s.ids.New(now)
	w.Header().Set("X-Request-Id", shopper)
	tok, exp, err := s.sign.session(shopper)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	writeJSON(w, http.StatusCreated, sessionAnswer{ExpiresAt: exp.UTC().Format(time.RFC3339), Session: tok, Shopper: shopper})
}

type tokenAnswer struct {
	ExpiresAt string `json:"expiresAt"`
	Status    string `json:"status"`
	Token     string `json:"token"`
	TokenID   string `json:"tokenId"`
}

// tokens decides a token request with one script run.
func (s *redisServer) tokens(w http.ResponseWriter, r *http.Request, shopper string) {
	sale := r.PathValue("sale")
	if !events.ValidSaleID(sale) {
		writeError(w, http.StatusNotFound, "sale_not_found", fmt.Sprintf("no sale %q", sale))
		return
	}
	now := s.now()
	id := s.ids.New(now) // the request's id, and the token's if one is issued
	w.Header().Set("X-Request-Id", id)
	res, err := tokenScript.Run(r.Context(), s.rdb, saleKeys(sale), shopper, id, now.UnixMilli()).StringSlice()
	if err != nil {
		unavailable(w, err)
		return
	}
	switch res[0] {
	case "missing":
		writeError(w, http.StatusNotFound, "sale_not_found", fmt.Sprintf("no sale %q", sale))
		return
	case "deny":
		writeReason(w, res[1], "")
		return
	}
	iat, _ := strconv.ParseInt(res[2], 10, 64)
	exp, _ := strconv.ParseInt(res[3], 10, 64)
	tok, err := s.sign.purchase(purchaseClaims{Sub: shopper, Sale: sale, Jti: res[1], Iat: iat / 1000, Exp: exp / 1000})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	a := tokenAnswer{ExpiresAt: time.UnixMilli(exp).UTC().Format(time.RFC3339), Status: "issued", Token: tok, TokenID: res[1]}
	status := http.StatusCreated
	if res[0] == "already" {
		a.Status, status = "already_issued", http.StatusOK
	}
	writeJSON(w, status, a)
}

type purchaseAnswer struct {
	OrderID string `json:"orderId"`
	Status  string `json:"status"`
}

// purchase decides a purchase with one script run.
func (s *redisServer) purchase(w http.ResponseWriter, r *http.Request, shopper string) {
	sale := r.PathValue("sale")
	if !events.ValidSaleID(sale) {
		writeError(w, http.StatusNotFound, "sale_not_found", fmt.Sprintf("no sale %q", sale))
		return
	}
	raw := strings.TrimSpace(r.Header.Get("X-Purchase-Token"))
	if raw == "" {
		writeError(w, http.StatusUnauthorized, "token_required", "X-Purchase-Token header required")
		return
	}
	// An expired token still goes to the script: a retried purchase must
	// learn the order its token bought.
	c, _, err := s.sign.verifyPurchase(raw)
	switch {
	case err != nil:
		writeReason(w, "token_unknown", "")
		return
	case c.Sale != sale:
		writeError(w, http.StatusForbidden, "token_wrong_sale", "purchase token is for another sale")
		return
	case c.Sub != shopper:
		writeReason(w, "token_not_yours", "")
		return
	}
	now := s.now()
	id := s.ids.New(now) // the request's id, and the order's if accepted
	w.Header().Set("X-Request-Id", id)
	res, err := purchaseScript.Run(r.Context(), s.rdb, saleKeys(sale), shopper, c.Jti, id, now.UnixMilli()).StringSlice()
	if err != nil {
		unavailable(w, err)
		return
	}
	switch res[0] {
	case "missing":
		writeError(w, http.StatusNotFound, "sale_not_found", fmt.Sprintf("no sale %q", sale))
	case "refuse":
		order := ""
		if len(res) > 2 {
			order = res[2]
		}
		writeReason(w, res[1], order)
	default:
		writeJSON(w, http.StatusAccepted, purchaseAnswer{OrderID: res[1], Status: "accepted"})
	}
}

// saleRequest is the part of flashgate's POST /api/v1/admin/sales body the
// reference understands.
type saleRequest struct {
	ID           string   `json:"id"`
	Stock        int64    `json:"stock"`
	QuotaBuffer  *float64 `json:"quotaBuffer"`
	PerUserLimit *int64   `json:"perUserLimit"`
	TokenTTL     string   `json:"tokenTTL"`
	OpensAt      string   `json:"opensAt"`
	ClosesAt     string   `json:"closesAt"`
}

// sale is a sale's settings and counters, as kept in its hash.
type sale struct {
	Stock, Quota, PerUser     int64
	Buffer                    float64
	TTL                       time.Duration
	Opens, Closes             time.Time // Closes zero: never
	Issued, Expired, Redeemed int64
}

// quota is flashgate's handlers.Quota: ceil(stock x buffer) in integers to
// six decimal places, never below the stock.
func quota(stock int64, buffer float64) int64 {
	const scale = 1_000_000
	b := int64(math.Round(buffer * scale))
	return max((stock*b+scale-1)/scale, stock)
}

func (sr saleRequest) validate(now time.Time) (sale, error) {
	// flashgate's defaults (api.SaleRequest.Validate): quota buffer 1.2,
	// one unit a shopper, tokens valid 5 minutes, open now.
	s := sale{Stock: sr.Stock, Buffer: 1.2, PerUser: 1, TTL: 5 * time.Minute, Opens: now}
	if !events.ValidSaleID(sr.ID) {
		return s, errors.New("id: 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit")
	}
	if sr.Stock < 1 || sr.Stock > 100_000_000 {
		return s, errors.New("stock: must be 1 to 100000000")
	}
	if sr.QuotaBuffer != nil {
		if b := *sr.QuotaBuffer; math.IsNaN(b) || b < 1 || b > 10 {
			return s, errors.New("quotaBuffer: must be 1 to 10")
		}
		s.Buffer = *sr.QuotaBuffer
	}
	if sr.PerUserLimit != nil {
		if *sr.PerUserLimit < 1 || *sr.PerUserLimit > sr.Stock {
			return s, errors.New("perUserLimit: must be 1 to the stock")
		}
		s.PerUser = *sr.PerUserLimit
	}
	if sr.TokenTTL != "" {
		d, err := time.ParseDuration(sr.TokenTTL)
		if err != nil || d < time.Second || d > 24*time.Hour {
			return s, errors.New(`tokenTTL: a Go duration from 1s to 24h, like "5m"`)
		}
		s.TTL = d
	}
	if sr.OpensAt != "" {
		t, err := time.Parse(time.RFC3339Nano, sr.OpensAt)
		if err != nil {
			return s, errors.New("opensAt: an RFC 3339 time")
		}
		s.Opens = t
	}
	if sr.ClosesAt != "" {
		t, err := time.Parse(time.RFC3339Nano, sr.ClosesAt)
		if err != nil || !t.After(s.Opens) {
			return s, errors.New("closesAt: an RFC 3339 time after opensAt")
		}
		s.Closes = t
	}
	s.Quota = quota(s.Stock, s.Buffer)
	return s, nil
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func (s *redisServer) createSale(w http.ResponseWriter, r *http.Request) {
	var sr saleRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&sr); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_json", err.Error())
		return
	}
	now := s.now()
	sl, err := sr.validate(now)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_field", err.Error())
		return
	}
	created, err := createScript.Run(r.Context(), s.rdb, saleKeys(sr.ID)[:1],
		"stock", sl.Stock, "quota", sl.Quota, "buffer", sl.Buffer, "perUser", sl.PerUser,
		"ttl", sl.TTL.Milliseconds(), "opens", unixMs(sl.Opens), "closes", unixMs(sl.Closes),
		"issued", 0, "expired", 0, "redeemed", 0).Int()
	if err != nil {
		unavailable(w, err)
		return
	}
	if created == 0 {
		writeError(w, http.StatusConflict, "sale_exists", fmt.Sprintf("sale %q already exists", sr.ID))
		return
	}
	writeJSON(w, http.StatusCreated, adminSaleJSON(sr.ID, sl, now))
}

func (s *redisServer) adminSale(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("sale")
	sl, ok, err := s.readSale(r.Context(), id)
	if err != nil {
		unavailable(w, err)
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, "sale_not_found", fmt.Sprintf("no sale %q", id))
		return
	}
	writeJSON(w, http.StatusOK, adminSaleJSON(id, sl, s.now()))
}

// readSale reads a sale's hash; ok is false when there is none.
func (s *redisServer) readSale(ctx context.Context, id string) (sl sale, ok bool, err error) {
	if !events.ValidSaleID(id) {
		return sl, false, nil
	}
	v, err := s.rdb.HMGet(ctx, saleKeys(id)[0], "stock", "quota", "buffer", "perUser", "ttl", "opens", "closes",
		"issued", "expired", "redeemed").Result()
	if err != nil {
		return sl, false, err
	}
	if v[0] == nil {
		return sl, false, nil
	}
	n := func(i int) int64 {
		str, _ := v[i].(string)
		x, _ := strconv.ParseInt(str, 10, 64)
		return x
	}
	str, _ := v[2].(string)
	sl.Buffer, _ = strconv.ParseFloat(str, 64)
	sl.Stock, sl.Quota, sl.PerUser, sl.TTL = n(0), n(1), n(3), time.Duration(n(4))*time.Millisecond
	sl.Opens = time.UnixMilli(n(5))
	if c := n(6); c > 0 {
		sl.Closes = time.UnixMilli(c)
	}
	sl.Issued, sl.Expired, sl.Redeemed = n(7), n(8), n(9)
	return sl, true, nil
}

// adminSaleJSON has the field names of flashgate's admin sale answer.
func adminSaleJSON(id string, s sale, now time.Time) map[string]any {
	state := "open"
	switch {
	case !s.Closes.IsZero() && !now.Before(s.Closes):
		state = "closed"
	case s.Stock-s.Redeemed <= 0:
		state = "sold_out"
	case now.Before(s.Opens):
		state = "scheduled"
	}
	m := map[string]any{
		"id": id, "state": state, "stock": s.Stock, "stockLeft": s.Stock - s.Redeemed,
		"quota": s.Quota, "quotaLeft": s.Quota - s.Issued + s.Expired, "quotaBuffer": s.Buffer,
		"perUserLimit": s.PerUser, "tokenTTL": s.TTL.String(),
		"opensAt": s.Opens.UTC().Format(time.RFC3339Nano), "closesAt": nil,
		"sold": s.Redeemed, "tokensIssued": s.Issued, "tokensExpired": s.Expired, "tokensRedeemed": s.Redeemed,
		"tokensOutstanding": s.Issued - s.Expired - s.Redeemed,
	}
	if !s.Closes.IsZero() {
		m["closesAt"] = s.Closes.UTC().Format(time.RFC3339Nano)
	}
	return m
}

// reasons maps a script's refusal to flashgate's status and message
// (api/errors.go reasonError).
var reasons = map[string]struct {
	status int
	msg    string
}{
	"not_open":        {http.StatusTooEarly, "sale is not open yet"},
	"closed":          {http.StatusGone, "sale is closed"},
	"sold_out":        {http.StatusGone, "sold out"},
	"quota_exhausted": {http.StatusGone, "no purchase tokens left for now"},
	"limit_reached":   {http.StatusConflict, "per-shopper limit reached"},
	"token_used":      {http.StatusConflict, "purchase token already used"},
	"token_unknown":   {http.StatusUnauthorized, "purchase token is not valid for this sale"},
	"token_expired":   {http.StatusUnauthorized, "purchase token expired"},
	"token_not_yours": {http.StatusForbidden, "purchase token belongs to another shopper"},
}

func writeReason(w http.ResponseWriter, reason, orderID string) {
	rs, ok := reasons[reason]
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "unknown decision "+reason)
		return
	}
	body := map[string]any{"error": reason, "message": rs.msg}
	if orderID != "" {
		body["orderId"] = orderID
	}
	writeJSON(w, rs.status, body)
}

// unavailable answers a Redis failure: 503, as flashgate answers an
// unavailable stream.
func unavailable(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "unavailable", "redis: "+err.Error())
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": code, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
