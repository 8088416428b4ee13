package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/flashgate/flashgate/ratelimit"
)

// LimitStore is where operators' rate-limit policies are kept (the
// FLASHGATE_LIMITS bucket; see ratelimit/kvpolicy).
type LimitStore interface {
	Stored(ctx context.Context) (map[string]ratelimit.Policy, map[string]error, error)
	Put(ctx context.Context, p ratelimit.Policy) error
	Delete(ctx context.Context, name string) error
}

// MaxStoredPolicies bounds the policies operators may store (each name is a
// metrics label).
const MaxStoredPolicies = 32

// ErrPolicyNotSet is what a LimitStore's Delete returns for a policy with no
// stored setting.
var ErrPolicyNotSet = errors.New("policy has no stored setting")

// The HTTP names of the draft-ietf-httpapi-ratelimit-headers fields.
const (
	headerRateLimit       = "RateLimit"
	headerRateLimitPolicy = "RateLimit-Policy"
)

// limited applies the rate limits of group that count by client address
// before h: a refusal is 429 before any other work. The policies that count
// by shopper run once the shopper is known (see limitShopper).
func (a *api) limited(group string, h http.HandlerFunc) http.HandlerFunc {
	if a.Limiter == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if a.Limiter.Applies(group, ratelimit.KeyIP) { // else the address is not worth parsing
			key := ratelimit.IPKey(a.clientIP(r))
			if err := a.limit(w, r, group, ratelimit.KeyIP, key); err != nil {
				writeError(w, r, a.Log, err)
				return
			}
		}
		h(w, r)
	}
}

// limitShopper applies the policies of group that count by shopper.
func (a *api) limitShopper(w http.ResponseWriter, r *http.Request, group, shopper string) error {
	if a.Limiter == nil {
		return nil
	}
	return a.limit(w, r, group, ratelimit.KeyShopper, shopper)
}

// limit checks one kind of key and writes the RateLimit fields. Every
// policy applied adds its member to the fields' lists (a list field may
// span several lines, RFC 9651 4.2); a refusal answers 429 with
// Retry-After.
func (a *api) limit(w http.ResponseWriter, r *http.Request, group, kind, key string) error {
	d := a.Limiter.Check(group, r.Pattern, kind, key)
	rs := d.Results()
	if len(rs) == 0 {
		return nil
	}
	// Shadow policies are counted, not shown: clients that pace themselves
	// by the headers must not slow down for a limit that is not enforced.
	shown := rs
	for i := range rs {
		if rs[i].Shadow {
			shown = make([]ratelimit.Result, 0, len(rs))
			for _, res := range rs {
				if !res.Shadow {
					shown = append(shown, res)
				}
			}
			break
		}
	}
	if len(shown) > 0 {
		h := w.Header()
		h.Add(headerRateLimitPolicy, ratelimit.PolicyHeader(shown))
		h.Add(headerRateLimit, ratelimit.RateLimitHeader(shown))
	}
	var refused *ratelimit.Result
	for i := range rs {
		res := &rs[i]
		switch {
		case res.Allowed:
			a.rateLimit(res.Policy, "allowed")
		case res.Shadow:
			a.rateLimit(res.Policy, "shadow_rejected")
		default:
			a.rateLimit(res.Policy, "rejected")
			refused = res
		}
	}
	if d.Allowed {
		return nil
	}
	return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message:    fmt.Sprintf("too many requests (policy %s), retry in %d s", refused.Policy, d.RetryAfterSeconds()),
		Fields:     map[string]any{"policy": refused.Policy},
		RetryAfter: d.RetryAfterSeconds()}
}

// clientIP is the client's address, through trusted proxies only.
func (a *api) clientIP(r *http.Request) string {
	return a.Proxies.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
}

// limitsJSON is the admin view of the policies: the ones in force here,
// and which of them an operator set.
func (a *api) listLimits(w http.ResponseWriter, r *http.Request) error {
	if a.Limits == nil || a.Limiter == nil {
		return newError(http.StatusNotFound, "limits_unavailable", "this server runs without rate limits")
	}
	stored, bad, err := a.Limits.Stored(r.Context())
	if err != nil {
		return err
	}
	inForce := a.Limiter.Policies()
	out := make([]map[string]any, 0, len(inForce))
	for _, p := range inForce {
		_, rate, quota, window := p.Shared(a.Limiter.Share())
		out = append(out, map[string]any{"policy": p, "stored": stored[p.Name].Name != "",
			"quota": quota, "rate": rate, "window": window.String()})
	}
	broken := map[string]string{}
	for k, e := range bad {
		broken[k] = e.Error()
	}
	writeJSON(w, http.StatusOK, map[string]any{"enabled": a.Limiter.Enabled(), "mode": a.LimitMode,
		"processes": a.Limiter.Share(), "policies": out, "broken": broken})
	return nil
}

func (a *api) putLimit(w http.ResponseWriter, r *http.Request) error {
	if a.Limits == nil {
		return newError(http.StatusNotFound, "limits_unavailable", "this server runs without rate limits")
	}
	var p ratelimit.Policy
	if err := a.decodeBody(r, &p); err != nil {
		return err
	}
	name := r.PathValue("policy")
	if p.Name == "" {
		p.Name = name
	}
	if p.Name != name {
		return invalid("name", fmt.Sprintf("the body names %q, the path %q", p.Name, name))
	}
	if err := p.Validate(); err != nil {
		return newError(http.StatusBadRequest, "invalid_field", err.Error())
	}
	// Policy names are metric labels: their number stays small.
	stored, _, err := a.Limits.Stored(r.Context())
	if err != nil {
		return err
	}
	if _, ok := stored[p.Name]; !ok && len(stored) >= MaxStoredPolicies {
		return newError(http.StatusConflict, "too_many_policies",
			fmt.Sprintf("at most %d stored policies; reset one first", MaxStoredPolicies))
	}
	if err := a.Limits.Put(r.Context(), p); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"policy": p, "stored": true,
		"message": "stored; every process applies it within a moment"})
	return nil
}

func (a *api) deleteLimit(w http.ResponseWriter, r *http.Request) error {
	if a.Limits == nil {
		return newError(http.StatusNotFound, "limits_unavailable", "this server runs without rate limits")
	}
	name := r.PathValue("policy")
	if err := (ratelimit.Policy{Name: name}).Validate(); err != nil && strings.HasPrefix(err.Error(), "name:") {
		return newError(http.StatusBadRequest, "invalid_field", err.Error()).with("field", "name")
	}
	if err := a.Limits.Delete(r.Context(), name); errors.Is(err, ErrPolicyNotSet) {
		return newError(http.StatusNotFound, "policy_not_set", "no stored setting for policy "+strconv.Quote(name))
	} else if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
