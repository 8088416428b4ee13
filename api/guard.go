package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/flashgate/flashgate/challenge"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/front"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/ratelimit"
	"github.com/flashgate/flashgate/signing"
)

// The bot defence of a sale's requests: the human check (a proof-of-work
// puzzle or a CAPTCHA) before token requests, and app signatures on every
// request of a sale that requires them. Both run after the cheap state checks
// (a sold-out sale answers without either) and before the request is
// appended, so refused traffic never reaches the stream.

// ChallengeHeader carries the solution of a sale's human check.
const ChallengeHeader = "X-Challenge-Solution"

// challengeFor answers POST /api/v1/sales/{sale}/challenge: a fresh puzzle,
// the CAPTCHA to show, or {"kind":"none"} for a sale without a check.
func (a *api) challengeFor(w http.ResponseWriter, r *http.Request, shopper string) error {
	v, err := a.lookup(r.PathValue("sale"))
	if err != nil {
		return err
	}
	// No check is worth solving for a request that is answered anyway; a
	// queue's pre-queue takes joins (and their checks) before the opening.
	if now := a.Now(); cheap(v, now) != nil && !preQueueOpen(v, now) {
		return cheap(v, now)
	}
	c := v.Sale.Challenge
	switch {
	case c == nil:
		writeJSON(w, http.StatusOK, map[string]any{"kind": "none"})
	case c.Kind == events.ChallengePoW:
		if a.PoW == nil {
			return challengeUnavailable("proof of work is not configured on this server")
		}
		p, err := a.PoW.Issue(v.Sale.ID, shopper, c.Difficulty)
		if err != nil {
			return err
		}
		a.challenged(c.Kind, "issued")
		writeJSON(w, http.StatusCreated, p)
	case c.Kind == events.ChallengeCaptcha:
		if a.Captcha == nil {
			return challengeUnavailable("no CAPTCHA provider is configured on this server")
		}
		writeJSON(w, http.StatusOK, map[string]any{"kind": "captcha", "provider": a.Captcha.Provider(), "siteKey": a.Captcha.SiteKey()})
	default:
		return fmt.Errorf("sale %s: challenge kind %q", v.Sale.ID, c.Kind)
	}
	return nil
}

// preQueueOpen reports whether sale v is not open yet but its waiting
// room already takes joins.
func preQueueOpen(v front.SaleView, now time.Time) bool {
	q := v.Sale.Queue
	return q != nil && !q.PreQueueOpensAt.IsZero() && !now.Before(q.PreQueueOpensAt) &&
		v.Sale.StatusAt(now, v.Head) == handlers.StatusScheduled
}

// checkChallenge verifies the solution a token request carries for sale v.
func (a *api) checkChallenge(r *http.Request, v front.SaleView, shopper string) error {
	c := v.Sale.Challenge
	if c == nil {
		return nil
	}
	solution := r.Header.Get(ChallengeHeader)
	var err error
	switch c.Kind {
	case events.ChallengePoW:
		if a.PoW == nil {
			return challengeUnavailable("proof of work is not configured on this server")
		}
		err = a.PoW.Verify(r.Context(), v.Sale.ID, shopper, solution)
	case events.ChallengeCaptcha:
		if a.Captcha == nil {
			return challengeUnavailable("no CAPTCHA provider is configured on this server")
		}
		ip := a.clientIP(r)
		if !a.captchaSlots.take(ratelimit.IPKey(ip)) {
			a.challenged(c.Kind, "busy")
			return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
				Message: "a CAPTCHA answer from this address is already being checked, retry in a moment", RetryAfter: 1}
		}
		err = a.Captcha.Verify(r.Context(), solution, ip)
		a.captchaSlots.give(ratelimit.IPKey(ip))
	default:
		return fmt.Errorf("sale %s: challenge kind %q", v.Sale.ID, c.Kind)
	}
	switch {
	case err == nil:
		a.challenged(c.Kind, "passed")
		return nil
	case errors.Is(err, challenge.ErrRequired):
		a.challenged(c.Kind, "required")
		return newError(http.StatusForbidden, "challenge_required",
			"this sale asks for a human check first: POST /api/v1/sales/"+v.Sale.ID+"/challenge, then send the solution in "+ChallengeHeader).
			with("challenge", c.Kind)
	case errors.Is(err, challenge.ErrFailed):
		a.challenged(c.Kind, "failed")
		return newError(http.StatusForbidden, "challenge_failed", err.Error()+"; ask for a new challenge").with("challenge", c.Kind)
	case errors.Is(err, challenge.ErrUnavailable):
		a.challenged(c.Kind, "unavailable")
		a.Log.Warn("challenge check unavailable", "request_id", reqID(r), "sale", v.Sale.ID, "err", err)
		return challengeUnavailable("the human check cannot be verified right now")
	}
	return err
}

// releaseChallenge gives back the proof-of-work solution of a token request
// that could not be stored. (A CAPTCHA token cannot be given back: the
// provider accepts it once.)
func (a *api) releaseChallenge(r *http.Request, v front.SaleView) {
	if c := v.Sale.Challenge; c == nil || c.Kind != events.ChallengePoW || a.PoW == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Second)
	defer cancel()
	if err := a.PoW.Release(ctx, r.Header.Get(ChallengeHeader)); err != nil {
		a.Log.Warn("challenge: a solution could not be given back", "request_id", reqID(r), "err", err)
	}
}

// perKey bounds concurrent work per key (a client address): a few
// addresses sending garbage CAPTCHA answers cannot hold every outgoing
// verification slot while real shoppers wait.
type perKey struct {
	mu  sync.Mutex
	max int
	n   map[string]int
}

func (p *perKey) take(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[string]int{}
	}
	if p.n[key] >= p.max {
		return false
	}
	p.n[key]++
	return true
}

func (p *perKey) give(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[key]--; p.n[key] <= 0 {
		delete(p.n, key)
	}
}

func challengeUnavailable(msg string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "challenge_unavailable", Message: msg + ", retry shortly", RetryAfter: 1}
}

// signedHeaders are the headers a signed request may carry at most once: the
// signature and the headers it binds (signing.Bound).
var signedHeaders = []string{signing.Header, "Authorization", "X-Purchase-Token", ChallengeHeader}

// checkSignature verifies the app signature of a request to a sale that
// requires one. The body is read (within MaxBody) and put back.
func (a *api) checkSignature(r *http.Request, v front.SaleView) error {
	if !v.Sale.SignedRequests {
		return nil
	}
	if a.Signatures == nil {
		return &Error{Status: http.StatusServiceUnavailable, Code: "signature_unavailable",
			Message: "this sale requires signed requests but the server has no signing keys", RetryAfter: 5}
	}
	// Header.Get, here and where the values are used, sees only the first
	// of several: a second one would be neither signed nor checked.
	for _, name := range signedHeaders {
		if len(r.Header.Values(name)) > 1 {
			a.signed("invalid")
			return newError(http.StatusUnauthorized, "signature_invalid", "more than one "+name+" header")
		}
	}
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return newError(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body over %d bytes", a.MaxBody))
			}
			return newError(http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	_, err := a.Signatures.Verify(r.Context(), r.Method, r.RequestURI, body, signing.BoundOf(r.Header), r.Header.Get(signing.Header))
	var e *Error
	switch {
	case err == nil:
		a.signed("valid")
		return nil
	case errors.Is(err, signing.ErrMissing):
		a.signed("missing")
		e = newError(http.StatusUnauthorized, "signature_required", "this sale takes requests signed by the shop's app ("+signing.Header+")")
	case errors.Is(err, signing.ErrStale):
		a.signed("stale")
		e = newError(http.StatusUnauthorized, "signature_stale", err.Error()+"; sync the clock with GET /api/v1/time").
			with("serverTime", a.Now().UTC().Format(time.RFC3339Nano))
	case errors.Is(err, signing.ErrReplayed):
		a.signed("replayed")
		e = newError(http.StatusUnauthorized, "signature_replayed", "this request was seen before; sign every request with a new nonce")
	case errors.Is(err, signing.ErrUnavailable):
		a.signed("unavailable")
		a.Log.Warn("signature nonce store unavailable", "request_id", reqID(r), "err", err)
		return &Error{Status: http.StatusServiceUnavailable, Code: "signature_unavailable",
			Message: "the signature cannot be checked right now; retry with a new nonce", RetryAfter: 1}
	case errors.Is(err, signing.ErrMalformed), errors.Is(err, signing.ErrUnknownKey), errors.Is(err, signing.ErrBadSignature):
		a.signed("invalid")
		e = newError(http.StatusUnauthorized, "signature_invalid", err.Error())
	default:
		return err
	}
	return e
}

func (a *api) challenged(kind, result string) {
	if a.Metrics != nil {
		a.Metrics.Challenge(kind, result)
	}
}

func (a *api) signed(result string) {
	if a.Metrics != nil {
		a.Metrics.Signature(result)
	}
}
