// Package api is flashgate's HTTP front: the shoppers' API, the admin API,
// and the cheap checks that answer from a sale's cached head without
// touching the stream.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/flashgate/flashgate/challenge"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/front"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/identity"
	"github.com/flashgate/flashgate/internal/jsonstr"
	"github.com/flashgate/flashgate/metrics"
	"github.com/flashgate/flashgate/projections"
	"github.com/flashgate/flashgate/queue"
	"github.com/flashgate/flashgate/ratelimit"
	"github.com/flashgate/flashgate/signing"
	"github.com/flashgate/flashgate/stream"
	"github.com/flashgate/flashgate/tokens"
	"golang.org/x/time/rate"
)

// Config is what the API is built from.
type Config struct {
	Front    *front.Front
	Store    *projections.Store
	Identity identity.Verifier  // verifies shoppers' bearer credentials
	Sessions *identity.Sessions // issues anonymous sessions; nil in external identity mode
	Purchase *tokens.Purchase   // signs and verifies purchase tokens
	IDs      *events.IDs        //
	Admin    string             // the admin bearer token
	Now      func() time.Time   // default time.Now
	Log      *slog.Logger       //
	// DecisionWait is how long a request waits for its decision before the
	// answer is 202 pending. Default 2 s.
	DecisionWait time.Duration
	// MaxBody limits request bodies. Default 64 KiB.
	MaxBody int64
	// SessionRate caps new anonymous sessions per second (burst the same);
	// 0: 1000/s; negative: no cap.
	SessionRate float64
	// Metrics, if set, measures every request; MetricsHere also serves
	// GET /metrics on this handler.
	Metrics     *metrics.Metrics
	MetricsHere bool
	// Ready reports readiness for GET /readyz: whether ready and, per check,
	// "ok" or what is wrong.
	Ready func(ctx context.Context) (bool, map[string]string)
	// Stopping is closed when the server begins to shut down: streams
	// (the admin feed) end then. Nil: never.
	Stopping <-chan struct{}
	// Pages, if set, serves the web pages (/, /sales/{sale}, /admin, /static/).
	Pages http.Handler
	// MaxStreams bounds concurrent admin event streams. Default 32.
	MaxStreams int
	// MaxQueueStreams bounds concurrent waiting-room event streams.
	// Default DefaultMaxQueueStreams (10,000).
	MaxQueueStreams int

	// Limiter, if set, applies the rate limits by route group; Proxies are
	// the trusted proxies whose X-Forwarded-For names the client; Limits
	// stores operators' policies (the admin limits endpoints).
	Limiter *ratelimit.Limiter
	Proxies ratelimit.Proxies
	Limits  LimitStore
	// LimitMode is the server's --rate-limit mode, named in the admin
	// listing so that an operator sees why policies show off.
	LimitMode string
	// The human checks a sale may ask for, and the app signature verifier;
	// nil: a sale asking for one is answered 503 (and cannot be created here).
	PoW        *challenge.PoW
	Captcha    *challenge.Captcha
	Signatures *signing.Verifier
	// Orders, if set, adds where each order stands at the fulfilment
	// provider, the order event streams and the dead-letter endpoints.
	Orders Orders
	// Cluster, if set, answers GET /api/v1/admin/cluster: the live
	// processes and the sales' writer leases.
	Cluster func(ctx context.Context) (any, error)
}

type api struct {
	Config
	captchaSlots perKey // CAPTCHA verifications in flight per client address
	sessions     *rate.Limiter
	streams      chan struct{} // a slot per open admin stream
	queueStreams chan struct{} // a slot per open waiting-room stream
	// queueStreamsPer counts each shopper's open waiting-room streams.
	queueStreamsPer perKey
	orderStreamsPer perKey // each shopper's open order streams
}

// New returns the HTTP handler.
func New(c Config) http.Handler {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.DecisionWait <= 0 {
		c.DecisionWait = 2 * time.Second
	}
	if c.MaxBody <= 0 {
		c.MaxBody = 64 << 10
	}
	if c.SessionRate == 0 {
		c.SessionRate = 1000
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 32
	}
	if c.MaxQueueStreams <= 0 {
		c.MaxQueueStreams = DefaultMaxQueueStreams
	}
	a := &api{Config: c, streams: make(chan struct{}, c.MaxStreams), queueStreams: make(chan struct{}, c.MaxQueueStreams),
		captchaSlots: perKey{max: 2}, queueStreamsPer: perKey{max: MaxQueueStreamsPerShopper},
		orderStreamsPer: perKey{max: MaxOrderStreamsPerShopper}}
	if c.SessionRate > 0 {
		a.sessions = rate.NewLimiter(rate.Limit(c.SessionRate), int(math.Max(1, c.SessionRate)))
	}
	mux := http.NewServeMux()
	// Every shopper route belongs to a rate-limit group: the policies that
	// count by client address run first, those by shopper after the
	// session is verified.
	reads := func(h http.HandlerFunc) http.HandlerFunc { return a.limited(ratelimit.GroupReads, h) }
	mux.HandleFunc("GET /api/v1/time", reads(a.time))
	mux.HandleFunc("POST /api/v1/session", a.limited(ratelimit.GroupSession, a.session))
	mux.HandleFunc("GET /api/v1/sales", reads(a.publicSales))
	mux.HandleFunc("GET /api/v1/sales/{sale}", reads(a.sale))
	mux.HandleFunc("POST /api/v1/sales/{sale}/challenge", a.shopper(ratelimit.GroupTokens, a.challengeFor))
	mux.HandleFunc("POST /api/v1/sales/{sale}/tokens", a.shopper(ratelimit.GroupTokens, a.tokens))
	mux.HandleFunc("POST /api/v1/sales/{sale}/purchases", a.shopper(ratelimit.GroupPurchases, a.purchase))
	mux.HandleFunc("POST /api/v1/sales/{sale}/queue", a.shopper(ratelimit.GroupQueue, a.queueJoin))
	mux.HandleFunc("GET /api/v1/sales/{sale}/queue/{ticket}", a.shopper(ratelimit.GroupQueue, a.queueTicket))
	mux.HandleFunc("GET /api/v1/sales/{sale}/queue/{ticket}/events", a.shopper(ratelimit.GroupQueue, a.queueEvents))
	mux.HandleFunc("DELETE /api/v1/sales/{sale}/queue/{ticket}", a.shopper(ratelimit.GroupQueue, a.queueLeave))
	mux.HandleFunc("GET /api/v1/orders/{id}", a.shopper(ratelimit.GroupReads, a.order))
	mux.HandleFunc("GET /api/v1/orders/{id}/events", a.shopper(ratelimit.GroupReads, a.orderEvents))
	mux.HandleFunc("GET /api/v1/requests/{id}", a.shopper(ratelimit.GroupReads, a.request))
	mux.HandleFunc("POST /api/v1/admin/sales", a.admin(a.createSale))
	mux.HandleFunc("GET /api/v1/admin/sales", a.admin(a.listSales))
	mux.HandleFunc("GET /api/v1/admin/sales/{sale}", a.admin(a.adminSale))
	mux.HandleFunc("POST /api/v1/admin/sales/{sale}/open", a.admin(a.schedule(events.ActionOpen)))
	mux.HandleFunc("POST /api/v1/admin/sales/{sale}/close", a.admin(a.schedule(events.ActionClose)))
	mux.HandleFunc("GET /api/v1/admin/events", a.admin(a.adminEvents))
	mux.HandleFunc("GET /api/v1/admin/cluster", a.admin(a.clusterStatus))
	mux.HandleFunc("GET /api/v1/admin/orders/dlq", a.admin(a.deadOrders))
	mux.HandleFunc("POST /api/v1/admin/orders/dlq/{order}/retry", a.admin(a.requeueOrder))
	mux.HandleFunc("GET /api/v1/admin/limits", a.admin(a.listLimits))
	mux.HandleFunc("PUT /api/v1/admin/limits/{policy}", a.admin(a.putLimit))
	mux.HandleFunc("DELETE /api/v1/admin/limits/{policy}", a.admin(a.deleteLimit))
	if c.Pages != nil {
		mux.Handle("GET /{$}", c.Pages)
		mux.Handle("GET /sales/{sale}", c.Pages)
		mux.Handle("GET /admin", c.Pages)
		mux.Handle("GET /static/", c.Pages)
	} else {
		mux.HandleFunc("GET /{$}", a.index)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	if c.Metrics != nil && c.MetricsHere {
		mux.Handle("GET /metrics", c.Metrics.Handler())
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, a.Log, newError(http.StatusNotFound, "not_found", "no such endpoint"))
	})
	var h http.Handler = mux
	if c.Metrics != nil {
		h = c.Metrics.Middleware(h) // must wrap the mux: it reads the matched pattern
	}
	return a.requestID(a.limitBody(h))
}

type ctxKey struct{}

// requestID gives every request an id (a ULID, in X-Request-Id of the
// answer and on every log line about it; for token and purchase requests it
// is the request event's id, so the writer's decision names it too) and
// logs the request at debug level. A client's own X-Request-Id is kept as
// the client request id.
func (a *api) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := a.Now()
		id := a.IDs.New(start)
		w.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, id))
		sw := &codeWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		if a.Log.Enabled(r.Context(), slog.LevelDebug) {
			a.Log.Debug("request", "request_id", id, "method", r.Method, "route", r.Pattern, "status", sw.code,
				"duration", time.Since(start), "remote", r.RemoteAddr)
		}
	})
}

// reqID is the request's id (see requestID).
func reqID(r *http.Request) string {
	id, _ := r.Context().Value(ctxKey{}).(string)
	return id
}

type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }
func (w *codeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	if a.Ready == nil {
		writeJSON(w, http.StatusOK, map[string]any{"ready": true})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	ok, checks := a.Ready(ctx)
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, map[string]any{"ready": ok, "checks": checks})
}

// limitBody answers 413 for bodies over MaxBody.
func (a *api) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > a.MaxBody {
			writeError(w, r, a.Log, newError(http.StatusRequestEntityTooLarge, "body_too_large",
				fmt.Sprintf("request body over %d bytes", a.MaxBody)))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, a.MaxBody)
		next.ServeHTTP(w, r)
	})
}

// decodeBody reads a JSON body strictly into v.
func (a *api) decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return newError(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body over %d bytes", a.MaxBody))
		case errors.Is(err, io.EOF):
			return newError(http.StatusBadRequest, "bad_request", "request body is empty; JSON expected")
		case errors.As(err, &syn):
			return newError(http.StatusBadRequest, "bad_request", fmt.Sprintf("malformed JSON at byte %d", syn.Offset))
		case errors.As(err, &typ):
			return newError(http.StatusBadRequest, "invalid_field", fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type)).with("field", typ.Field)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return newError(http.StatusBadRequest, "invalid_field", fmt.Sprintf("unknown field %q", f)).with("field", f)
		}
		return newError(http.StatusBadRequest, "bad_request", "malformed JSON: "+err.Error())
	}
	if dec.More() {
		return newError(http.StatusBadRequest, "bad_request", "trailing data after the JSON body")
	}
	return nil
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

type shopperHandler func(w http.ResponseWriter, r *http.Request, shopper string) error

// shopper authenticates the shopper's session before h, with the rate
// limits of group around it: by client address before, by shopper after.
func (a *api) shopper(group string, h shopperHandler) http.HandlerFunc {
	return a.limited(group, func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" {
			writeError(w, r, a.Log, newError(http.StatusUnauthorized, "unauthenticated", "Authorization: Bearer <session> required"))
			return
		}
		shopper, err := a.Identity.Verify(tok)
		if err != nil {
			writeError(w, r, a.Log, newError(http.StatusUnauthorized, "unauthenticated", "session is not valid: "+err.Error()))
			return
		}
		if err := a.limitShopper(w, r, group, shopper); err != nil {
			writeError(w, r, a.Log, err)
			return
		}
		if err := h(w, r, shopper); err != nil {
			writeError(w, r, a.Log, err)
		}
	})
}

// admin checks the admin token before h.
func (a *api) admin(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(a.Admin)) != 1 {
			writeError(w, r, a.Log, newError(http.StatusUnauthorized, "unauthenticated", "Authorization: Bearer <admin token> required"))
			return
		}
		if err := h(w, r); err != nil {
			writeError(w, r, a.Log, err)
		}
	}
}

// index tells a person who opened the printed URL how to use the API.
func (a *api) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	base := "http://" + r.Host
	fmt.Fprintf(w, `flashgate is running.

Buy a unit in the demo sale (if the server runs with --demo; flashgate solve
does its proof-of-work check):

  S=$(curl -s -X POST %[1]s/api/v1/session | jq -r .session)
  X=$(curl -s -X POST -H "Authorization: Bearer $S" %[1]s/api/v1/sales/demo/challenge | flashgate solve)
  T=$(curl -s -X POST -H "Authorization: Bearer $S" -H "X-Challenge-Solution: $X" %[1]s/api/v1/sales/demo/tokens | jq -r .token)
  curl -s -X POST -H "Authorization: Bearer $S" -H "X-Purchase-Token: $T" %[1]s/api/v1/sales/demo/purchases

The sale:   %[1]s/api/v1/sales/demo
The API is described in the README.
`, base)
}

func (a *api) time(w http.ResponseWriter, r *http.Request) {
	now := a.Now()
	writeJSON(w, http.StatusOK, map[string]any{"now": now.UTC().Format(time.RFC3339Nano), "unixMs": now.UnixMilli()})
}

func (a *api) session(w http.ResponseWriter, r *http.Request) {
	if a.Sessions == nil {
		writeError(w, r, a.Log, newError(http.StatusForbidden, "anonymous_sessions_disabled",
			"shoppers sign in with the shop's identity provider"))
		return
	}
	if a.sessions != nil {
		if !a.sessions.Allow() {
			a.rateLimit("session-rate", "rejected")
			writeError(w, r, a.Log, &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
				Message: "too many new sessions, retry shortly", RetryAfter: 1})
			return
		}
		a.rateLimit("session-rate", "allowed")
	}
	shopper := a.IDs.New(a.Now())
	tok, exp, err := a.Sessions.Issue(shopper)
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"shopper": shopper, "session": tok, "expiresAt": exp.UTC().Format(time.RFC3339)})
}

// saleJSON is a sale as shoppers see it.
func saleJSON(v front.SaleView, now time.Time) map[string]any {
	s, h := v.Sale, v.Head
	m := map[string]any{
		"id": s.ID, "state": s.StatusAt(now, h), "stock": s.Stock, "stockLeft": h.StockLeft(),
		"quota": s.Quota, "quotaLeft": h.QuotaLeft(), "tokensOutstanding": h.Outstanding(),
		"perUserLimit": s.PerUserLimit, "tokenTTL": s.TokenTTL.String(),
		"opensAt": s.OpensAt.UTC().Format(time.RFC3339Nano), "closesAt": nil,
	}
	if !s.ClosesAt.IsZero() {
		m["closesAt"] = s.ClosesAt.UTC().Format(time.RFC3339Nano)
	}
	m["challenge"] = nil
	if s.Challenge != nil {
		m["challenge"] = s.Challenge
	}
	m["signedRequests"] = s.SignedRequests
	m["queue"] = queueJSON(v)
	return m
}

func (a *api) lookup(id string) (front.SaleView, error) {
	select {
	case <-a.Front.Ready():
	default:
		return front.SaleView{}, front.ErrNotReady
	}
	v, ok := a.Front.Sale(id)
	if !ok {
		return v, newError(http.StatusNotFound, "sale_not_found", fmt.Sprintf("no sale %q", id))
	}
	return v, nil
}

func (a *api) sale(w http.ResponseWriter, r *http.Request) {
	v, err := a.lookup(r.PathValue("sale"))
	if err != nil {
		writeError(w, r, a.Log, err)
		return
	}
	writeJSON(w, http.StatusOK, saleJSON(v, a.Now()))
}

// cheap answers a token request from the cached head when the outcome is
// certain without the writer: not open yet, closed, sold out. Stock never
// grows, so a cached "sold out" is never wrong.
func cheap(v front.SaleView, now time.Time) error {
	switch v.Sale.StatusAt(now, v.Head) {
	case handlers.StatusScheduled:
		return reasonError(events.ReasonNotOpen).with("opensAt", v.Sale.OpensAt.UTC().Format(time.RFC3339Nano))
	case handlers.StatusClosed:
		return reasonError(events.ReasonClosed)
	case handlers.StatusSoldOut:
		return reasonError(events.ReasonSoldOut)
	}
	return nil
}

// clientRequestID is the client's own id for a request (Idempotency-Key,
// else X-Request-Id), kept only when it is 1 to 128 printable ASCII
// characters: it is recorded in the event and ends up in exports.
func clientRequestID(r *http.Request) string {
	id := r.Header.Get("Idempotency-Key")
	if id == "" {
		id = r.Header.Get("X-Request-Id")
	}
	if len(id) > 128 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return ""
		}
	}
	return id
}

func (a *api) rateLimit(policy, result string) {
	if a.Metrics != nil {
		a.Metrics.RateLimit(policy, result)
	}
}

func (a *api) answered(kind, outcome string) {
	if a.Metrics != nil {
		a.Metrics.Answer(kind, outcome)
	}
}

func kindOf(t events.Type) string {
	switch t {
	case events.TypeTokenRequested:
		return "token"
	case events.TypePurchaseRequested:
		return "purchase"
	case events.TypeQueueJoinRequested, events.TypeQueueLeaveRequested:
		return "queue"
	}
	return "operator"
}

func (a *api) tokens(w http.ResponseWriter, r *http.Request, shopper string) error {
	v, err := a.lookup(r.PathValue("sale"))
	if err != nil {
		return err
	}
	now := a.Now()
	if err := cheap(v, now); err != nil {
		a.answered("token", "cheap")
		return err
	}
	if v.Sale.Queue != nil {
		// Tokens of a sale with a waiting room come only by admission.
		a.answered("token", "cheap")
		return reasonError(handlers.ReasonQueueRequired).with("queue", "/api/v1/sales/"+v.Sale.ID+"/queue")
	}
	if err := a.checkSignature(r, v); err != nil {
		return err
	}
	if err := a.checkChallenge(r, v, shopper); err != nil {
		return err
	}
	req := events.Event{ID: reqID(r), Type: events.TypeTokenRequested, Version: events.SchemaVersion,
		Sale: v.Sale.ID, Time: now.UTC(), Shopper: shopper, ClientRequestID: clientRequestID(r), Data: &events.TokenRequested{}}
	// A solution spent on a request surely not stored (503) is given
	// back, so the client's retry with it passes.
	return a.submit(w, r, req, func() { a.releaseChallenge(r, v) })
}

func (a *api) purchase(w http.ResponseWriter, r *http.Request, shopper string) error {
	v, err := a.lookup(r.PathValue("sale"))
	if err != nil {
		return err
	}
	if err := a.checkSignature(r, v); err != nil {
		return err
	}
	raw := strings.TrimSpace(r.Header.Get("X-Purchase-Token"))
	if raw == "" {
		return newError(http.StatusUnauthorized, "token_required", "X-Purchase-Token header required")
	}
	// An expired token is genuine (its signature was checked) and still goes
	// to the writer: a retried purchase must learn the order its token
	// bought (409 token_used); an unused one is answered token_expired.
	c, err := a.Purchase.Verify(raw)
	switch {
	case err != nil && !errors.Is(err, tokens.ErrTokenExpired):
		return reasonError(events.ReasonTokenUnknown)
	case c.Sale != v.Sale.ID:
		return newError(http.StatusForbidden, "token_wrong_sale", "purchase token is for another sale")
	case c.Shopper != shopper:
		return reasonError(events.ReasonTokenNotYours)
	}
	now := a.Now()
	// Purchases skip the sold-out shortcut: a retried purchase must learn
	// the order its token already bought, and only token holders get here.
	if v.Sale.StatusAt(now, v.Head) == handlers.StatusScheduled {
		return cheap(v, now)
	}
	req := events.Event{ID: reqID(r), Type: events.TypePurchaseRequested, Version: events.SchemaVersion,
		Sale: v.Sale.ID, Time: now.UTC(), Shopper: shopper, ClientRequestID: clientRequestID(r),
		Data: &events.PurchaseRequested{TokenID: c.TokenID}}
	return a.submit(w, r, req, nil)
}

// submit appends the request and answers with its decision, or 202 pending
// when the decision takes longer than DecisionWait. notTaken, if set, runs
// when the request was surely not appended (not when an append failed: a
// timed-out one may have landed).
func (a *api) submit(w http.ResponseWriter, r *http.Request, req events.Event, notTaken func()) error {
	d, pending, err := a.decide(r, req, kindOf(req.Type), notTaken)
	if err != nil {
		return err
	}
	if pending {
		w.Header().Set("Location", "/api/v1/requests/"+req.ID)
		writeJSON(w, http.StatusAccepted, map[string]any{"requestId": req.ID, "status": "pending"})
		return nil
	}
	status, body, err := a.answer(d, false)
	if err != nil {
		return err
	}
	writeJSON(w, status, body)
	return nil
}

// decide appends req and waits up to DecisionWait for its decision;
// pending means it takes longer (it will be decided: poll). notTaken, if
// set, runs when the request was surely not appended. The answer is counted
// under kind.
func (a *api) decide(r *http.Request, req events.Event, kind string, notTaken func()) (d events.Event, pending bool, err error) {
	p, err := a.Front.Submit(req)
	if err != nil {
		a.answered(kind, outcomeOf(err))
		if notTaken != nil {
			notTaken()
		}
		return d, false, err
	}
	d, ok, err := p.Wait(r.Context(), a.DecisionWait)
	if err != nil {
		a.answered(kind, outcomeOf(err))
		if notTaken != nil && errors.Is(err, front.ErrNotAppended) {
			notTaken()
		}
		return d, false, err
	}
	if !ok {
		a.answered(kind, "pending")
		return d, true, nil
	}
	a.answered(kind, "decided")
	return d, false, nil
}

// answer renders a decision as the reply to its request. polled selects the
// shape used by GET /requests/{id}.
//
// The answers to the hot requests (a token, a purchase) are structs whose
// fields are in the order a map would give, so the JSON is the same as the
// other answers' but cheaper to write.
func (a *api) answer(d events.Event, polled bool) (int, any, error) {
	switch x := d.Data.(type) {
	case *events.TokenIssued:
		tok, err := a.Purchase.Sign(tokens.Claims{Shopper: d.Shopper, Sale: d.Sale, TokenID: x.TokenID, IssuedAt: x.IssuedAt, ExpiresAt: x.ExpiresAt})
		if err != nil {
			return 0, nil, err
		}
		body := tokenAnswer{ExpiresAt: x.ExpiresAt.UTC().Format(time.RFC3339), Status: "issued", Token: tok, TokenID: x.TokenID}
		status := http.StatusCreated
		if x.AlreadyIssued {
			body.Status, status = "already_issued", http.StatusOK
		}
		if polled {
			body.RequestID, status = d.Request, http.StatusOK
		}
		return status, body, nil
	case *events.PurchaseAccepted:
		body := orderAnswer{OrderID: x.OrderID, Status: "accepted"}
		if polled {
			body.RequestID = d.Request
			return http.StatusOK, body, nil
		}
		return http.StatusAccepted, body, nil
	case *events.SaleUpdated:
		body := map[string]any{"requestId": d.Request, "status": "decided", "opensAt": x.OpensAt.UTC().Format(time.RFC3339Nano), "closesAt": nil}
		if !x.ClosesAt.IsZero() {
			body["closesAt"] = x.ClosesAt.UTC().Format(time.RFC3339Nano)
		}
		return http.StatusOK, body, nil
	case *events.TokenDenied:
		return a.refusal(d, a.withOpensAt(reasonError(x.Reason), d.Sale), polled)
	case *events.QueueJoined:
		body := map[string]any{"requestId": d.Request, "status": "joined", "ticket": a.joinedTicket(d, x)}
		return http.StatusOK, body, nil
	case *events.QueueJoinDenied:
		if x.Reason == "" { // rebuilt from the projection, which does not keep it
			return a.refusal(d, newError(http.StatusConflict, "join_refused", "the join was refused; join again to learn why"), polled)
		}
		e := reasonError(x.Reason)
		if v, ok := a.Front.Sale(d.Sale); ok {
			e = joinError(v.Sale, x.Reason)
		}
		return a.refusal(d, e, polled)
	case *events.QueueLeft:
		status := queue.Left
		switch x.Reason {
		case events.LeftByShopper:
		case "": // rebuilt from the projection, which does not keep it
			status = "decided"
		default:
			status = "unchanged" // nothing to leave
		}
		return http.StatusOK, map[string]any{"requestId": d.Request, "status": status, "ticket": x.Ticket}, nil
	case *events.PurchaseRefused:
		e := a.withOpensAt(reasonError(x.Reason), d.Sale)
		if x.OrderID != "" {
			e = e.with("orderId", x.OrderID)
		}
		return a.refusal(d, e, polled)
	}
	return 0, nil, fmt.Errorf("request %s: unexpected decision %s", d.Request, d.Type)
}

// joinedTicket is the ticket a QueueJoined gave. A decision rebuilt from the
// projection does not carry it: a first join's ticket is its request id, a
// repeated join's is the shopper's active ticket.
func (a *api) joinedTicket(d events.Event, x *events.QueueJoined) string {
	if x.Ticket != "" {
		return x.Ticket
	}
	if _, ok := a.Front.QueueTicket(d.Sale, d.Request); ok {
		return d.Request
	}
	if q, ok := a.Front.QueueActive(d.Sale, d.Shopper); ok {
		return q.Ticket
	}
	return d.Request
}

// withOpensAt adds the opening time to a not_open refusal.
func (a *api) withOpensAt(e *Error, sale string) *Error {
	if e.Code != events.ReasonNotOpen {
		return e
	}
	if v, ok := a.Front.Sale(sale); ok {
		e = e.with("opensAt", v.Sale.OpensAt.UTC().Format(time.RFC3339Nano))
	}
	return e
}

// tokenAnswer is the answer that hands a purchase token over.
type tokenAnswer struct {
	ExpiresAt string `json:"expiresAt"`
	RequestID string `json:"requestId,omitempty"` // when polled
	Status    string `json:"status"`
	Token     string `json:"token"`
	TokenID   string `json:"tokenId"`
}

// orderAnswer is the answer to an accepted purchase.
type orderAnswer struct {
	OrderID   string `json:"orderId"`
	RequestID string `json:"requestId,omitempty"` // when polled
	Status    string `json:"status"`
}

// appendJSON and its twin below write what json.Marshal writes for the
// answer (see writeJSON).
func (t tokenAnswer) appendJSON(b []byte) []byte {
	b = append(b, `{"expiresAt":`...)
	b = jsonstr.Append(b, t.ExpiresAt)
	if t.RequestID != "" {
		b = append(b, `,"requestId":`...)
		b = jsonstr.Append(b, t.RequestID)
	}
	b = append(b, `,"status":`...)
	b = jsonstr.Append(b, t.Status)
	b = append(b, `,"token":`...)
	b = jsonstr.Append(b, t.Token)
	b = append(b, `,"tokenId":`...)
	b = jsonstr.Append(b, t.TokenID)
	return append(b, '}')
}

func (o orderAnswer) appendJSON(b []byte) []byte {
	b = append(b, `{"orderId":`...)
	b = jsonstr.Append(b, o.OrderID)
	if o.RequestID != "" {
		b = append(b, `,"requestId":`...)
		b = jsonstr.Append(b, o.RequestID)
	}
	b = append(b, `,"status":`...)
	b = jsonstr.Append(b, o.Status)
	return append(b, '}')
}

func (a *api) refusal(d events.Event, e *Error, polled bool) (int, any, error) {
	if !polled {
		return 0, nil, e
	}
	body := map[string]any{"requestId": d.Request, "status": "refused", "error": e.Code, "message": e.Message, "httpStatus": e.Status}
	for k, v := range e.Fields {
		body[k] = v
	}
	return http.StatusOK, body, nil
}

func (a *api) request(w http.ResponseWriter, r *http.Request, shopper string) error {
	id := r.PathValue("id")
	notFound := newError(http.StatusNotFound, "request_not_found", "no such request (yet)")
	d, ok := a.Front.Recent(id)
	if !ok {
		rs, err := a.Store.Request(r.Context(), id)
		if errors.Is(err, projections.ErrNotFound) {
			return notFound
		}
		if err != nil {
			return err
		}
		if rs.Shopper != shopper {
			return notFound
		}
		if !rs.Decided {
			writeJSON(w, http.StatusOK, map[string]any{"requestId": id, "status": "pending"})
			return nil
		}
		d = a.decisionFromRow(rs)
	}
	if d.Shopper != shopper {
		return notFound
	}
	status, body, err := a.answer(d, true)
	if err != nil {
		return err
	}
	writeJSON(w, status, body)
	return nil
}

// decisionFromRow rebuilds a decision event from the projection.
func (a *api) decisionFromRow(rs projections.RequestStatus) events.Event {
	x := rs.Decision
	d := events.Event{Type: events.Type(x.Type), Sale: rs.Sale, Shopper: rs.Shopper, Request: rs.ID, Time: x.DecidedAt}
	switch d.Type {
	case events.TypeTokenIssued:
		d.Data = &events.TokenIssued{TokenID: x.TokenID, IssuedAt: x.IssuedAt, ExpiresAt: x.ExpiresAt, AlreadyIssued: x.AlreadyIssued}
	case events.TypeTokenDenied:
		d.Data = &events.TokenDenied{Reason: x.Reason}
	case events.TypePurchaseAccepted:
		d.Data = &events.PurchaseAccepted{TokenID: x.TokenID, OrderID: x.OrderID, Units: 1}
	case events.TypePurchaseRefused:
		d.Data = &events.PurchaseRefused{TokenID: x.TokenID, Reason: x.Reason, OrderID: x.OrderID}
	case events.TypeQueueJoined:
		d.Data = &events.QueueJoined{}
	case events.TypeQueueJoinDenied:
		d.Data = &events.QueueJoinDenied{Reason: x.Reason}
	case events.TypeQueueLeft:
		d.Data = &events.QueueLeft{Reason: x.Reason}
	}
	return d
}

// clusterStatus answers GET /api/v1/admin/cluster.
func (a *api) clusterStatus(w http.ResponseWriter, r *http.Request) error {
	if a.Cluster == nil {
		return newError(http.StatusNotFound, "not_found", "cluster status is not served here")
	}
	v, err := a.Cluster(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// SaleRequest is the body of POST /api/v1/admin/sales.
type SaleRequest struct {
	ID           string   `json:"id"`
	Stock        int64    `json:"stock"`
	QuotaBuffer  *float64 `json:"quotaBuffer"`
	PerUserLimit *int64   `json:"perUserLimit"`
	TokenTTL     string   `json:"tokenTTL"`
	OpensAt      string   `json:"opensAt"`
	ClosesAt     string   `json:"closesAt"`
	// A human check before token requests: {"kind": "pow", "difficulty": n}
	// (difficulty defaults to challenge.DefaultDifficulty) or {"kind":
	// "captcha"}. Absent: none.
	Challenge      *events.Challenge `json:"challenge"`
	SignedRequests bool              `json:"signedRequests"`
	// A waiting room in front of the tokens: {"enabled": true, ...} (see
	// QueueRequest). Absent or not enabled: none.
	Queue *QueueRequest `json:"queue"`
}

// Limits on sale settings.
const (
	MaxStock       = 100_000_000
	MaxQuotaBuffer = 10.0
	MinTokenTTL    = time.Second
	MaxTokenTTL    = 24 * time.Hour
)

func invalid(field, msg string) *Error {
	return newError(http.StatusBadRequest, "invalid_field", field+": "+msg).with("field", field)
}

// Validate turns a sale request into a sale, naming the first bad field.
func (sr SaleRequest) Validate(now time.Time) (handlers.Sale, error) {
	s := handlers.Sale{ID: sr.ID, Stock: sr.Stock, QuotaBuffer: 1.2, PerUserLimit: 1, TokenTTL: 5 * time.Minute, OpensAt: now.UTC()}
	if !events.ValidSaleID(sr.ID) {
		return s, invalid("id", "1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit")
	}
	if sr.Stock < 1 || sr.Stock > MaxStock {
		return s, invalid("stock", fmt.Sprintf("must be 1 to %d", MaxStock))
	}
	if sr.QuotaBuffer != nil {
		if b := *sr.QuotaBuffer; math.IsNaN(b) || b < 1 || b > MaxQuotaBuffer {
			return s, invalid("quotaBuffer", fmt.Sprintf("must be 1 to %g", MaxQuotaBuffer))
		}
		s.QuotaBuffer = *sr.QuotaBuffer
	}
	if sr.PerUserLimit != nil {
		if *sr.PerUserLimit < 1 || *sr.PerUserLimit > sr.Stock {
			return s, invalid("perUserLimit", "must be 1 to the stock")
		}
		s.PerUserLimit = *sr.PerUserLimit
	}
	if sr.TokenTTL != "" {
		d, err := time.ParseDuration(sr.TokenTTL)
		if err != nil || d < MinTokenTTL || d > MaxTokenTTL {
			return s, invalid("tokenTTL", "a Go duration from 1s to 24h, like \"5m\"")
		}
		s.TokenTTL = d
	}
	if sr.OpensAt != "" {
		t, err := time.Parse(time.RFC3339Nano, sr.OpensAt)
		if err != nil {
			return s, invalid("opensAt", "an RFC 3339 time, like \"2026-12-01T10:00:00Z\"")
		}
		if !events.ValidScheduleTime(t) {
			return s, invalid("opensAt", "must be between the years 2000 and 2200")
		}
		s.OpensAt = t.UTC()
	}
	if sr.ClosesAt != "" {
		t, err := time.Parse(time.RFC3339Nano, sr.ClosesAt)
		if err != nil {
			return s, invalid("closesAt", "an RFC 3339 time, like \"2026-12-01T12:00:00Z\"")
		}
		if !events.ValidScheduleTime(t) {
			return s, invalid("closesAt", "must be between the years 2000 and 2200")
		}
		if !t.After(s.OpensAt) {
			return s, invalid("closesAt", "must be after opensAt")
		}
		s.ClosesAt = t.UTC()
	}
	if c := sr.Challenge; c != nil {
		c := *c
		if c.Kind == events.ChallengePoW && c.Difficulty == 0 {
			c.Difficulty = challenge.DefaultDifficulty
		}
		if err := c.Check(); err != nil {
			return s, invalid("challenge", err.Error()+fmt.Sprintf(`; {"kind": "pow", "difficulty": %d..%d} or {"kind": "captcha"}`,
				events.MinPoWDifficulty, events.MaxPoWDifficulty))
		}
		s.Challenge = &c
	}
	s.SignedRequests = sr.SignedRequests
	if err := sr.validateQueue(&s); err != nil {
		return s, err
	}
	s.Quota = handlers.Quota(s.Stock, s.QuotaBuffer)
	return s, nil
}

func (a *api) createSale(w http.ResponseWriter, r *http.Request) error {
	var sr SaleRequest
	if err := a.decodeBody(r, &sr); err != nil {
		return err
	}
	now := a.Now()
	s, err := sr.Validate(now)
	if err != nil {
		return err
	}
	if s.Challenge != nil && s.Challenge.Kind == events.ChallengeCaptcha && a.Captcha == nil {
		return invalid("challenge", "this server has no CAPTCHA provider configured (--captcha-provider)")
	}
	if s.SignedRequests && a.Signatures == nil {
		return invalid("signedRequests", "this server has no app signing keys (--signing-keys-file)")
	}
	ev := SaleCreatedEvent(a.IDs, s, now)
	if err := a.Front.CreateSale(r.Context(), ev); err != nil {
		if errors.Is(err, stream.ErrSaleExists) {
			return newError(http.StatusConflict, "sale_exists", fmt.Sprintf("sale %q already exists", s.ID))
		}
		return err
	}
	v, _ := a.Front.Sale(s.ID)
	writeJSON(w, http.StatusCreated, adminSaleJSON(v, now))
	return nil
}

// SaleCreatedEvent is the event that creates sale s.
func SaleCreatedEvent(ids *events.IDs, s handlers.Sale, now time.Time) events.Event {
	return events.Event{ID: ids.New(now), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: s.ID, Time: now.UTC(),
		Data: &events.SaleCreated{Stock: s.Stock, QuotaBuffer: s.QuotaBuffer, Quota: s.Quota, PerUserLimit: s.PerUserLimit,
			TokenTTL: events.Duration(s.TokenTTL), OpensAt: s.OpensAt, ClosesAt: s.ClosesAt,
			Challenge: s.Challenge, SignedRequests: s.SignedRequests, Queue: s.Queue}}
}

func adminSaleJSON(v front.SaleView, now time.Time) map[string]any {
	m := saleJSON(v, now)
	m["quotaBuffer"] = v.Sale.QuotaBuffer
	m["tokensIssued"] = v.Head.Issued
	m["tokensExpired"] = v.Head.Expired
	m["tokensRedeemed"] = v.Head.Redeemed
	m["sold"] = v.Head.Redeemed
	m["batchVersion"] = v.Head.Version
	return m
}

func (a *api) listSales(w http.ResponseWriter, r *http.Request) error {
	select {
	case <-a.Front.Ready():
	default:
		return front.ErrNotReady
	}
	now := a.Now()
	vs := a.Front.Sales()
	out := make([]map[string]any, 0, len(vs))
	for _, v := range vs {
		out = append(out, adminSaleJSON(v, now))
	}
	sortByID(out)
	writeJSON(w, http.StatusOK, map[string]any{"sales": out})
	return nil
}

func (a *api) adminSale(w http.ResponseWriter, r *http.Request) error {
	v, err := a.lookup(r.PathValue("sale"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, adminSaleJSON(v, a.Now()))
	return nil
}

func (a *api) publicSales(w http.ResponseWriter, r *http.Request) {
	select {
	case <-a.Front.Ready():
	default:
		writeError(w, r, a.Log, front.ErrNotReady)
		return
	}
	now := a.Now()
	vs := a.Front.Sales()
	out := make([]map[string]any, 0, len(vs))
	for _, v := range vs {
		out = append(out, saleJSON(v, now))
	}
	sortByID(out)
	writeJSON(w, http.StatusOK, map[string]any{"sales": out})
}

// schedule opens or closes a sale now. The change is a request decided by
// the sale's writer in stream order, like every other.
func (a *api) schedule(action string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		v, err := a.lookup(r.PathValue("sale"))
		if err != nil {
			return err
		}
		now := a.Now()
		req := events.Event{ID: reqID(r), Type: events.TypeSaleUpdateRequested, Version: events.SchemaVersion,
			Sale: v.Sale.ID, Time: now.UTC(), Shopper: "operator", ClientRequestID: clientRequestID(r),
			Data: &events.SaleUpdateRequested{Action: action}}
		p, err := a.Front.Submit(req)
		if err != nil {
			return err
		}
		d, ok, err := p.Wait(r.Context(), a.DecisionWait)
		if err != nil {
			return err
		}
		if !ok {
			// Stored, decided soon: the sale's view shows the schedule then.
			w.Header().Set("Location", "/api/v1/admin/sales/"+v.Sale.ID)
			writeJSON(w, http.StatusAccepted, map[string]any{"requestId": req.ID, "status": "pending",
				"message": "the change is stored and will be decided in order; GET the sale to see it"})
			return nil
		}
		if d.Type != events.TypeSaleUpdated {
			return fmt.Errorf("sale %s: %s answered by %s", v.Sale.ID, action, d.Type)
		}
		v, _ = a.Front.Sale(v.Sale.ID)
		writeJSON(w, http.StatusOK, adminSaleJSON(v, a.Now()))
		return nil
	}
}

// figures is one sale in the admin event stream.
func (a *api) figures(v front.SaleView, now time.Time) map[string]any {
	m := adminSaleJSON(v, now)
	st := a.Front.SaleStats(v.Sale.ID)
	m["decisions"] = st.Decisions
	batches := map[string]any{"count": st.Batches, "avgRequests": 0.0, "avgCommitMs": 0.0}
	if st.Batches > 0 {
		batches["avgRequests"] = float64(st.Requests) / float64(st.Batches)
	}
	if st.Commits > 0 {
		batches["avgCommitMs"] = float64(st.CommitNanos) / float64(st.Commits) / 1e6
	}
	m["batches"] = batches
	return m
}

// adminEvents streams every sale's figures once a second as Server-Sent
// Events (event: figures). Streams are bounded (503 beyond MaxStreams) and
// end when the server shuts down.
func (a *api) adminEvents(w http.ResponseWriter, r *http.Request) error {
	select {
	case a.streams <- struct{}{}:
		defer func() { <-a.streams }()
	default:
		return &Error{Status: http.StatusServiceUnavailable, Code: "too_many_streams", Message: "too many admin streams open", RetryAfter: 5}
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		now := a.Now()
		vs := a.Front.Sales()
		sales := make([]map[string]any, 0, len(vs))
		for _, v := range vs {
			sales = append(sales, a.figures(v, now))
		}
		sortByID(sales)
		b, err := json.Marshal(map[string]any{"time": now.UTC().Format(time.RFC3339Nano), "sales": sales})
		if err != nil {
			return err
		}
		// A client that stops reading must not hold the stream (and a slot)
		// forever: every write has a deadline.
		_ = rc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(w, "event: figures\ndata: %s\n\n", b); err != nil {
			return nil // the client went away
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-a.Stopping:
			return nil
		case <-tick.C:
		}
	}
}

func outcomeOf(err error) string {
	switch {
	case errors.Is(err, front.ErrOverloaded):
		return "overloaded"
	case errors.Is(err, context.Canceled):
		return "client_closed"
	}
	return "unavailable"
}
