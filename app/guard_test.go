package app_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/challenge"
	"github.com/flashgate/flashgate/cluster"
	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/ratelimit"
	"github.com/flashgate/flashgate/signing"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The bot defence over real HTTP: rate limits (headers, policies set
// through the admin API, shadow and off modes, trusted proxies, the share of
// a global limit between processes, work without NATS), the human checks
// (proof of work, CAPTCHA) and app signatures. Tiny policies refill at 0.01
// tokens a second, so no stall of the machine between two requests can
// refill a token and change an answer.

// limitItems parses every line of a RateLimit or RateLimit-Policy field (a
// list may span lines, RFC 9651 4.2) into its members by policy name; nil
// when the field is absent.
func limitItems(t testing.TB, h http.Header, field string) map[string]ratelimit.Item {
	t.Helper()
	vals := h.Values(field)
	if len(vals) == 0 {
		return nil
	}
	items, err := ratelimit.ParseList(strings.Join(vals, ", "))
	if err != nil {
		t.Fatalf("%s %q does not parse: %v", field, vals, err)
	}
	out := make(map[string]ratelimit.Item, len(items))
	for _, it := range items {
		if _, dup := out[it.Name]; dup {
			t.Fatalf("%s %q names policy %q twice", field, vals, it.Name)
		}
		out[it.Name] = it
	}
	return out
}

// limitParam is parameter key of policy in field, -1 when either is absent.
func limitParam(t testing.TB, r reply, field, policy, key string) int64 {
	t.Helper()
	it, ok := limitItems(t, r.Header, field)[policy]
	if !ok {
		return -1
	}
	v, ok := it.Params[key]
	if !ok {
		return -1
	}
	return v
}

// quotaOf is the q= of policy in RateLimit-Policy, -1 if absent.
func quotaOf(t testing.TB, r reply, policy string) int64 {
	t.Helper()
	return limitParam(t, r, "RateLimit-Policy", policy, "q")
}

// remainingOf is the r= of policy in RateLimit, -1 if absent.
func remainingOf(t testing.TB, r reply, policy string) int64 {
	t.Helper()
	return limitParam(t, r, "RateLimit", policy, "r")
}

// putLimit stores a policy through the admin API.
func putLimit(t testing.TB, c *client, admin, name string, body map[string]any) {
	t.Helper()
	if r := c.do("PUT", "/api/v1/admin/limits/"+name, admin, nil, body); r.Status != http.StatusOK || r.Body["stored"] != true {
		t.Fatalf("PUT limit %s: %d %s", name, r.Status, r.Raw)
	}
}

// waitQuota repeats req until its answer shows policy with quota q (a
// policy change arrives through the KV watch) and returns that answer.
// Every try is a request, charged like any other.
func waitQuota(t testing.TB, policy string, q int64, req func() reply) reply {
	t.Helper()
	var got reply
	waitFor(t, 10*time.Second, func() error {
		got = req()
		if v := quotaOf(t, got, policy); v != q {
			return fmt.Errorf("%s q=%d, want %d (%d, RateLimit-Policy %q)", policy, v, q, got.Status, got.Header.Values("RateLimit-Policy"))
		}
		return nil
	})
	return got
}

// metric is one sample of a metric on /metrics, 0 when there is none.
func metric(t *testing.T, a *app.App, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := value(scrape(t, a.MetricsURL), name, labels)
	return v
}

// waitMetric polls /metrics until the sample equals want.
func waitMetric(t *testing.T, a *app.App, name string, labels map[string]string, want float64) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		if v := metric(t, a, name, labels); v != want {
			return fmt.Errorf("%s%v = %v, want %v", name, labels, v, want)
		}
		return nil
	})
}

// startNATS starts an embedded NATS server on a loopback port for apps to
// share; it stops after the apps (cleanups run last-in first-out).
func startNATS(t *testing.T) *embed.Server {
	t.Helper()
	ns, err := embed.Start(embed.Options{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// startPeer starts a second app on a's NATS server with a's purchase and
// session keys, as every process of one installation has.
func startPeer(t *testing.T, a *app.App, natsURL string, c app.Config) *app.App {
	t.Helper()
	c.NATSURL = natsURL
	c.PurchaseKeyFile = filepath.Join(a.DataDir, "keys", "purchase-tokens.json")
	c.SessionKeyFile = filepath.Join(a.DataDir, "keys", "sessions.json")
	return startApp(t, c)
}

// limitsListing is GET /api/v1/admin/limits, its policies by name.
func limitsListing(t *testing.T, c *client, admin string) (reply, map[string]map[string]any) {
	t.Helper()
	r := c.do("GET", "/api/v1/admin/limits", admin, nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET limits: %d %s", r.Status, r.Raw)
	}
	out := map[string]map[string]any{}
	list, _ := r.Body["policies"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		p, _ := m["policy"].(map[string]any)
		name, _ := p["name"].(string)
		out[name] = m
	}
	return r, out
}

// TestRateLimitHeaders: every limited route answers with the RateLimit and
// RateLimit-Policy fields of draft-ietf-httpapi-ratelimit-headers, figures
// as the built-in policies say; a policy set through the admin API is
// applied, enforced with 429 and Retry-After, listed, and deleted again.
func TestRateLimitHeaders(t *testing.T) {
	a := startApp(t, app.Config{RateLimit: app.RateLimitOn, Demo: true})
	c := newClient(t, a)
	admin := a.AdminToken
	defaults := map[string]ratelimit.Policy{}
	for _, p := range ratelimit.Defaults() {
		defaults[p.Name] = p
	}
	_, sess := c.session()

	// check asserts that r carries exactly the policies named, with q and
	// w as the built-in policies say and r and t in range.
	check := func(t *testing.T, r reply, names ...string) {
		t.Helper()
		pol, lim := limitItems(t, r.Header, "RateLimit-Policy"), limitItems(t, r.Header, "RateLimit")
		for _, m := range []map[string]ratelimit.Item{pol, lim} {
			got := make([]string, 0, len(m))
			for n := range m {
				got = append(got, n)
			}
			slices.Sort(got)
			if want := slices.Sorted(slices.Values(names)); !slices.Equal(got, want) {
				t.Fatalf("policies %v in the headers, want %v (RateLimit-Policy %q, RateLimit %q)", got, want,
					r.Header.Values("RateLimit-Policy"), r.Header.Values("RateLimit"))
			}
		}
		for _, n := range names {
			p := defaults[n]
			q, w := int64(math.Floor(p.Capacity)), max(int64(math.Ceil(p.Capacity/p.Rate)), 1)
			pp, lp := pol[n].Params, lim[n].Params
			if len(pp) != 2 || pp["q"] != q || pp["w"] != w {
				t.Errorf("%s: RateLimit-Policy params %v, want q=%d w=%d", n, pp, q, w)
			}
			if _, hasR := lp["r"]; len(lp) != 2 || !hasR || lp["r"] < 0 || lp["r"] > q-1 {
				t.Errorf("%s: RateLimit params %v, want r in 0..%d (this request was charged)", n, lp, q-1)
			}
			if _, hasT := lp["t"]; !hasT || lp["t"] < 1 || lp["t"] > w {
				t.Errorf("%s: RateLimit params %v, want t in 1..%d", n, lp, w)
			}
		}
	}
	var token string
	for _, tc := range []struct {
		name, method, path, bearer string
		status                     int
		policies                   []string
	}{
		{"sale", "GET", "/api/v1/sales/demo", "", 200, []string{"reads-ip"}},
		{"sales", "GET", "/api/v1/sales", "", 200, []string{"reads-ip"}},
		{"time", "GET", "/api/v1/time", "", 200, []string{"reads-ip"}},
		{"session", "POST", "/api/v1/session", "", 201, []string{"session-ip"}},
		{"challenge", "POST", "/api/v1/sales/demo/challenge", sess, 200, []string{"tokens-ip", "tokens-shopper"}},
		{"token", "POST", "/api/v1/sales/demo/tokens", sess, 201, []string{"tokens-ip", "tokens-shopper"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do(tc.method, tc.path, tc.bearer, nil, nil)
			if r.Status != tc.status {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			check(t, r, tc.policies...)
			if tc.name == "token" {
				token = r.str("token")
			}
		})
	}
	t.Run("purchase", func(t *testing.T) {
		r := c.do("POST", "/api/v1/sales/demo/purchases", sess, map[string]string{"X-Purchase-Token": token}, nil)
		if r.Status != http.StatusAccepted {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		check(t, r, "purchases-shopper")
	})

	// Bad policies are refused and change nothing.
	for _, bad := range []struct {
		name string
		body map[string]any
	}{
		{"reads-ip", map[string]any{"group": "reads", "key": "ip", "capacity": 0, "rate": 1}},
		{"reads-ip", map[string]any{"name": "other", "group": "reads", "key": "ip", "capacity": 3, "rate": 1}},
		{"reads-ip", map[string]any{"group": "nope", "key": "ip", "capacity": 3, "rate": 1}},
		{"Bad.Name", map[string]any{"group": "reads", "key": "ip", "capacity": 3, "rate": 1}},
	} {
		if r := c.do("PUT", "/api/v1/admin/limits/"+bad.name, admin, nil, bad.body); r.Status != http.StatusBadRequest || r.str("error") != "invalid_field" {
			t.Errorf("PUT %s %v: %d %s, want 400 invalid_field", bad.name, bad.body, r.Status, r.Raw)
		}
	}

	// A tiny policy: in force once the header says so (that request took
	// the first of its 3 tokens), then one token a request, then 429.
	putLimit(t, c, admin, "reads-ip", map[string]any{"group": "reads", "key": "ip", "capacity": 3, "rate": 0.01})
	get := func() reply { return c.do("GET", "/api/v1/sales/demo", "", nil, nil) }
	first := waitQuota(t, "reads-ip", 3, get)
	if first.Status != 200 || remainingOf(t, first, "reads-ip") != 2 || limitParam(t, first, "RateLimit-Policy", "reads-ip", "w") != 300 {
		t.Fatalf("first request under the new policy: %d RateLimit %q RateLimit-Policy %q", first.Status,
			first.Header.Values("RateLimit"), first.Header.Values("RateLimit-Policy"))
	}
	for _, want := range []int64{1, 0} {
		r := get()
		if r.Status != 200 || remainingOf(t, r, "reads-ip") != want {
			t.Fatalf("want 200 with r=%d: %d RateLimit %q", want, r.Status, r.Header.Values("RateLimit"))
		}
	}
	refused := get()
	if refused.Status != http.StatusTooManyRequests || refused.str("error") != "rate_limited" || refused.str("policy") != "reads-ip" || refused.str("message") == "" {
		t.Fatalf("exhausted: %d %s, want 429 rate_limited of reads-ip", refused.Status, refused.Raw)
	}
	ra, err := strconv.Atoi(refused.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 100 { // a token comes in 100 s at 0.01/s
		t.Errorf("Retry-After %q, want whole seconds 1..100", refused.Header.Get("Retry-After"))
	}
	if r := remainingOf(t, refused, "reads-ip"); r != 0 {
		t.Errorf("429 with RateLimit %q, want r=0", refused.Header.Values("RateLimit"))
	}
	if tt := limitParam(t, refused, "RateLimit", "reads-ip", "t"); tt < int64(ra) {
		t.Errorf("429: t=%d before Retry-After %d", tt, ra)
	}
	if ct := refused.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("429 Content-Type %q", ct)
	}

	listing, byName := limitsListing(t, c, admin)
	if listing.Body["enabled"] != true || listing.Body["mode"] != "on" || listing.Body["processes"] != float64(1) {
		t.Errorf("limits listing: %s", listing.Raw)
	}
	for name := range defaults {
		m, ok := byName[name]
		if !ok {
			t.Errorf("policy %s not listed: %s", name, listing.Raw)
			continue
		}
		if stored := name == "reads-ip"; m["stored"] != stored {
			t.Errorf("policy %s listed with stored %v, want %v", name, m["stored"], stored)
		}
	}
	if p, _ := byName["reads-ip"]["policy"].(map[string]any); p["capacity"] != float64(3) || byName["reads-ip"]["quota"] != float64(3) {
		t.Errorf("reads-ip listed as %v", byName["reads-ip"])
	}

	if v := metric(t, a, "flashgate_rate_limit_total", map[string]string{"policy": "reads-ip", "result": "rejected"}); v != 1 {
		t.Errorf("rejected reads-ip counted %v times, want 1", v)
	}

	// Deleted: the built-in policy is back, with a full bucket.
	if r := c.do("DELETE", "/api/v1/admin/limits/reads-ip", admin, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.Status, r.Raw)
	}
	back := waitQuota(t, "reads-ip", 600, get)
	if back.Status != 200 || remainingOf(t, back, "reads-ip") != 599 {
		t.Errorf("built-in policy back: %d RateLimit %q", back.Status, back.Header.Values("RateLimit"))
	}
	if _, byName := limitsListing(t, c, admin); byName["reads-ip"]["stored"] != false {
		t.Errorf("reads-ip still listed as stored: %v", byName["reads-ip"])
	}
	if r := c.do("DELETE", "/api/v1/admin/limits/reads-ip", admin, nil, nil); r.Status != http.StatusNotFound || r.str("error") != "policy_not_set" {
		t.Errorf("DELETE again: %d %s, want 404 policy_not_set", r.Status, r.Raw)
	}
	if r := c.do("GET", "/api/v1/admin/limits", "", nil, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("limits without the admin token: %d", r.Status)
	}

	// A policy of an operator's own joins the built-in ones of its group,
	// and is gone when deleted.
	putLimit(t, c, admin, "reads-extra", map[string]any{"group": "reads", "key": "ip", "capacity": 2, "rate": 0.01})
	if r := waitQuota(t, "reads-extra", 2, get); r.Status != 200 || quotaOf(t, r, "reads-ip") != 600 || remainingOf(t, r, "reads-extra") != 1 {
		t.Fatalf("own policy: %d RateLimit-Policy %q RateLimit %q", r.Status, r.Header.Values("RateLimit-Policy"), r.Header.Values("RateLimit"))
	}
	get()
	if r := get(); r.Status != http.StatusTooManyRequests || r.str("policy") != "reads-extra" {
		t.Fatalf("own policy exhausted: %d %s", r.Status, r.Raw)
	}
	if r := c.do("DELETE", "/api/v1/admin/limits/reads-extra", admin, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE own policy: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 10*time.Second, func() error {
		if r := get(); r.Status != 200 || quotaOf(t, r, "reads-extra") != -1 || quotaOf(t, r, "reads-ip") != 600 {
			return fmt.Errorf("after deleting reads-extra: %d RateLimit-Policy %q", r.Status, r.Header.Values("RateLimit-Policy"))
		}
		return nil
	})
	if _, byName := limitsListing(t, c, admin); byName["reads-extra"] != nil {
		t.Errorf("deleted own policy still listed: %v", byName["reads-extra"])
	}
}

// TestRateLimitPerShopper: a per-shopper policy refuses one shopper while
// another on the same address goes on; a per-address session policy
// refuses the third new session.
func TestRateLimitPerShopper(t *testing.T) {
	a := startApp(t, app.Config{RateLimit: app.RateLimitOn})
	c := newClient(t, a)
	admin := a.AdminToken
	c.createSale(admin, map[string]any{"id": "s", "stock": 100})
	_, alice := c.session()
	_, bob := c.session()
	_, probe := c.session()
	_, carol := c.session()
	_, dave := c.session()
	challengeReq := func() reply { return c.do("POST", "/api/v1/sales/s/challenge", probe, nil, nil) }
	token := func(sess string) reply { return c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil) }

	t.Run("tokens-shopper", func(t *testing.T) {
		putLimit(t, c, admin, "tokens-shopper", map[string]any{"group": "tokens", "key": "shopper", "capacity": 2, "rate": 0.01})
		// Challenges are in the tokens group and change nothing: the probe
		// shopper's tell when the policy is in force.
		waitQuota(t, "tokens-shopper", 2, challengeReq)
		for i, want := range []struct {
			status int
			r      int64
		}{{http.StatusCreated, 1}, {http.StatusOK, 0}} {
			r := token(alice)
			if r.Status != want.status || remainingOf(t, r, "tokens-shopper") != want.r {
				t.Fatalf("alice's request %d: %d %s RateLimit %q, want %d with r=%d", i+1, r.Status, r.Raw, r.Header.Values("RateLimit"), want.status, want.r)
			}
		}
		r := token(alice)
		if r.Status != http.StatusTooManyRequests || r.str("error") != "rate_limited" || r.str("policy") != "tokens-shopper" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("alice's third request: %d %s, want 429 of tokens-shopper with Retry-After", r.Status, r.Raw)
		}
		// Both kinds of key are in the answer: the address policy allowed.
		if remainingOf(t, r, "tokens-ip") < 0 || remainingOf(t, r, "tokens-shopper") != 0 {
			t.Errorf("429 RateLimit %q: want tokens-ip and tokens-shopper r=0", r.Header.Values("RateLimit"))
		}
		if r := token(bob); r.Status != http.StatusCreated || remainingOf(t, r, "tokens-shopper") != 1 {
			t.Fatalf("bob after alice was refused: %d %s", r.Status, r.Raw)
		}
	})

	t.Run("policy off", func(t *testing.T) {
		putLimit(t, c, admin, "tokens-shopper", map[string]any{"group": "tokens", "key": "shopper", "capacity": 2, "rate": 0.01, "off": true})
		waitFor(t, 10*time.Second, func() error {
			if r := challengeReq(); quotaOf(t, r, "tokens-shopper") != -1 || quotaOf(t, r, "tokens-ip") != 200 {
				return fmt.Errorf("RateLimit-Policy %q, want tokens-ip alone", r.Header.Values("RateLimit-Policy"))
			}
			return nil
		})
		if r := token(alice); r.Status != http.StatusOK || r.str("status") != "already_issued" {
			t.Fatalf("alice with tokens-shopper off: %d %s", r.Status, r.Raw)
		}
	})

	// A policy's cost by route: the ServeMux pattern selects it.
	t.Run("per-route cost", func(t *testing.T) {
		putLimit(t, c, admin, "tokens-ip", map[string]any{"group": "tokens", "key": "ip", "capacity": 10, "rate": 0.01,
			"costs": map[string]float64{"POST /api/v1/sales/{sale}/tokens": 4}})
		waitQuota(t, "tokens-ip", 10, challengeReq) // r=9
		for i, st := range []struct {
			do     func() reply
			status int
			r      int64
		}{
			{func() reply { return token(carol) }, http.StatusCreated, 5},
			{challengeReq, http.StatusOK, 4},
			{func() reply { return token(dave) }, http.StatusCreated, 0},
			{challengeReq, http.StatusTooManyRequests, 0},
		} {
			if r := st.do(); r.Status != st.status || remainingOf(t, r, "tokens-ip") != st.r {
				t.Fatalf("step %d: %d %s RateLimit %q, want %d with r=%d", i, r.Status, r.Raw, r.Header.Values("RateLimit"), st.status, st.r)
			}
		}
	})

	t.Run("session-ip", func(t *testing.T) {
		putLimit(t, c, admin, "session-ip", map[string]any{"group": "session", "key": "ip", "capacity": 2, "rate": 0.01})
		session := func() reply { return c.do("POST", "/api/v1/session", "", nil, nil) }
		first := waitQuota(t, "session-ip", 2, session)
		if first.Status != http.StatusCreated || remainingOf(t, first, "session-ip") != 1 {
			t.Fatalf("first session under the policy: %d %s", first.Status, first.Raw)
		}
		if r := session(); r.Status != http.StatusCreated || remainingOf(t, r, "session-ip") != 0 {
			t.Fatalf("second session: %d %s", r.Status, r.Raw)
		}
		r := session()
		if r.Status != http.StatusTooManyRequests || r.str("error") != "rate_limited" || r.str("policy") != "session-ip" || r.str("session") != "" {
			t.Fatalf("third session: %d %s, want 429 of session-ip", r.Status, r.Raw)
		}
	})
}

// TestShadowRateLimit: a shadow policy, by mode or by its own setting,
// decides and counts but never refuses.
func TestShadowRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode string
		body map[string]any
	}{
		{"mode shadow", app.RateLimitShadow, map[string]any{"group": "reads", "key": "ip", "capacity": 3, "rate": 0.01}},
		{"policy shadow", app.RateLimitOn, map[string]any{"group": "reads", "key": "ip", "capacity": 3, "rate": 0.01, "shadow": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startApp(t, app.Config{RateLimit: tc.mode})
			c := newClient(t, a)
			putLimit(t, c, a.AdminToken, "reads-ip", tc.body)
			get := func() reply { return c.do("GET", "/api/v1/time", "", nil, nil) }
			// Wait until the policy is in force (the listing shows what the
			// limiter applies) without spending requests.
			waitFor(t, 10*time.Second, func() error {
				_, byName := limitsListing(t, c, a.AdminToken)
				if q, _ := byName["reads-ip"]["quota"].(float64); q != 3 || byName["reads-ip"]["policy"].(map[string]any)["shadow"] != true {
					return fmt.Errorf("reads-ip listed as %v", byName["reads-ip"])
				}
				return nil
			})
			// Shadow policies are counted, not shown: no header, no refusal.
			for i := 0; i < 10; i++ {
				if r := get(); r.Status != http.StatusOK || len(r.Header.Values("RateLimit")) != 0 || len(r.Header.Values("RateLimit-Policy")) != 0 {
					t.Fatalf("request %d: %d %s RateLimit %q %q, want 200 without the fields", i, r.Status, r.Raw,
						r.Header.Values("RateLimit"), r.Header.Values("RateLimit-Policy"))
				}
			}
			labels := func(result string) map[string]string {
				return map[string]string{"policy": "reads-ip", "result": result}
			}
			if v := metric(t, a, "flashgate_rate_limit_total", labels("shadow_rejected")); v != 7 {
				t.Errorf("shadow_rejected %v, want 7 (capacity 3 of 10)", v)
			}
			if v := metric(t, a, "flashgate_rate_limit_total", labels("rejected")); v != 0 {
				t.Errorf("rejected %v, want 0", v)
			}
			if _, byName := limitsListing(t, c, a.AdminToken); byName["reads-ip"]["policy"].(map[string]any)["shadow"] != true {
				t.Errorf("reads-ip listed as %v, want shadow", byName["reads-ip"])
			}
			if tc.mode == app.RateLimitShadow {
				return
			}
			// The policy enforced again: new settings, a new full bucket.
			putLimit(t, c, a.AdminToken, "reads-ip", map[string]any{"group": "reads", "key": "ip", "capacity": 4, "rate": 0.01})
			waitQuota(t, "reads-ip", 4, get) // r=3
			for i := 0; i < 3; i++ {
				if r := get(); r.Status != http.StatusOK {
					t.Fatalf("enforced, request %d: %d %s", i, r.Status, r.Raw)
				}
			}
			if r := get(); r.Status != http.StatusTooManyRequests {
				t.Fatalf("enforced, exhausted: %d %s", r.Status, r.Raw)
			}
			if v := metric(t, a, "flashgate_rate_limit_total", labels("rejected")); v != 1 {
				t.Errorf("rejected %v, want 1", v)
			}
		})
	}
}

// TestRateLimitOff: --rate-limit off applies nothing, not even a stored
// tiny policy, and says nothing in the headers.
func TestRateLimitOff(t *testing.T) {
	a := startApp(t, app.Config{RateLimit: app.RateLimitOff, Demo: true})
	c := newClient(t, a)
	putLimit(t, c, a.AdminToken, "reads-ip", map[string]any{"group": "reads", "key": "ip", "capacity": 1, "rate": 0.01})
	putLimit(t, c, a.AdminToken, "session-ip", map[string]any{"group": "session", "key": "ip", "capacity": 1, "rate": 0.01})
	waitFor(t, 10*time.Second, func() error {
		r, byName := limitsListing(t, c, a.AdminToken)
		if r.Body["enabled"] != false || r.Body["mode"] != "off" {
			return fmt.Errorf("listing says enabled, or not mode off: %s", r.Raw)
		}
		if p, _ := byName["reads-ip"]["policy"].(map[string]any); p["capacity"] != float64(1) {
			return fmt.Errorf("stored policy not applied yet: %v", byName["reads-ip"])
		}
		return nil
	})
	_, sess := c.session()
	for i := 0; i < 5; i++ {
		for _, rq := range []struct{ method, path, bearer string }{
			{"GET", "/api/v1/sales/demo", ""},
			{"GET", "/api/v1/time", ""},
			{"POST", "/api/v1/session", ""},
			{"POST", "/api/v1/sales/demo/challenge", sess},
			{"POST", "/api/v1/sales/demo/tokens", sess},
		} {
			r := c.do(rq.method, rq.path, rq.bearer, nil, nil)
			if r.Status >= 300 {
				t.Fatalf("%s %s: %d %s", rq.method, rq.path, r.Status, r.Raw)
			}
			for _, h := range []string{"RateLimit", "RateLimit-Policy"} {
				if v := r.Header.Values(h); len(v) > 0 {
					t.Fatalf("%s %s: %s %q with the limits off", rq.method, rq.path, h, v)
				}
			}
		}
	}
	if fam := scrape(t, a.MetricsURL)["flashgate_rate_limit_total"]; len(fam.GetMetric()) > 0 {
		t.Errorf("rate-limit decisions counted with the limits off: %v", fam)
	}
}

// TestRateLimitShopperMode: --rate-limit shopper enforces the policies that
// count by shopper and turns off those that count by address, stored ones
// too: many shoppers from one address pass, and one shopper asking again
// and again is refused.
func TestRateLimitShopperMode(t *testing.T) {
	a := startApp(t, app.Config{RateLimit: app.RateLimitShopper})
	c := newClient(t, a)
	admin := a.AdminToken
	c.createSale(admin, map[string]any{"id": "s", "stock": 100})
	// Stored, it would refuse this address its second token request.
	putLimit(t, c, admin, "tokens-ip", map[string]any{"group": "tokens", "key": "ip", "capacity": 1, "rate": 0.01})
	waitFor(t, 10*time.Second, func() error {
		r, byName := limitsListing(t, c, admin)
		if r.Body["mode"] != "shopper" || r.Body["enabled"] != true {
			return fmt.Errorf("listing does not say mode shopper, enabled: %s", r.Raw)
		}
		if p, _ := byName["tokens-ip"]["policy"].(map[string]any); p["capacity"] != float64(1) || p["off"] != true {
			return fmt.Errorf("stored tokens-ip not applied, off, yet: %v", byName["tokens-ip"])
		}
		return nil
	})
	// More sessions from one address than session-ip allows (20 at once).
	sessions := make([]string, 30)
	for i := range sessions {
		_, sessions[i] = c.session()
	}
	for i, sess := range sessions {
		r := c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil)
		if r.Status != http.StatusCreated || quotaOf(t, r, "tokens-ip") != -1 || quotaOf(t, r, "tokens-shopper") != 10 {
			t.Fatalf("shopper %d: %d %s RateLimit-Policy %q, want 201 under tokens-shopper alone", i, r.Status, r.Raw, r.Header.Values("RateLimit-Policy"))
		}
	}
	// The first shopper has spent one of tokens-shopper's 10 at once.
	for i := 2; ; i++ {
		r := c.do("POST", "/api/v1/sales/s/tokens", sessions[0], nil, nil)
		if r.Status == http.StatusTooManyRequests {
			if r.str("policy") != "tokens-shopper" || r.Header.Get("Retry-After") == "" || i < 11 {
				t.Fatalf("request %d refused: %s Retry-After %q, want tokens-shopper's refusal after 10", i, r.Raw, r.Header.Get("Retry-After"))
			}
			break
		}
		if r.Status != http.StatusOK || i > 40 {
			t.Fatalf("request %d: %d %s, want 200 already issued until tokens-shopper refuses", i, r.Status, r.Raw)
		}
	}
}

// TestTrustedProxies: X-Forwarded-For names the client only when the peer
// is a trusted proxy.
func TestTrustedProxies(t *testing.T) {
	type step struct {
		xff    string
		status int
		r      int64
	}
	for _, tc := range []struct {
		name    string
		proxies []string
		steps   []step
	}{
		// The probe used the 127.0.0.1 bucket (r=1): every forwarded
		// address shares it.
		{"untrusted", nil, []step{{"203.0.113.1", 200, 0}, {"203.0.113.2", 429, 0}}},
		// Each forwarded address has its own bucket of capacity 2; the
		// walk goes from the right, so a client cannot choose its key by
		// prepending entries.
		{"trusted", []string{"127.0.0.1/32"}, []step{
			{"203.0.113.1", 200, 1}, {"203.0.113.1", 200, 0}, {"203.0.113.1", 429, 0},
			{"203.0.113.2", 200, 1}, {"203.0.113.2", 200, 0},
			{"", 200, 1}, // the proxy's own requests
			{"203.0.113.77, 203.0.113.2", 429, 0},
			// IPv6 clients are counted by /64.
			{"2001:db8::1", 200, 1}, {"[2001:db8::2]:4711", 200, 0}, {"2001:db8::3", 429, 0},
			{"2001:db8:0:1::1", 200, 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startApp(t, app.Config{RateLimit: app.RateLimitOn, TrustedProxies: tc.proxies})
			c := newClient(t, a)
			putLimit(t, c, a.AdminToken, "reads-ip", map[string]any{"group": "reads", "key": "ip", "capacity": 2, "rate": 0.01})
			get := func(xff string) reply {
				var h map[string]string
				if xff != "" {
					h = map[string]string{"X-Forwarded-For": xff}
				}
				return c.do("GET", "/api/v1/time", "", h, nil)
			}
			if r := waitQuota(t, "reads-ip", 2, func() reply { return get("198.51.100.9") }); remainingOf(t, r, "reads-ip") != 1 {
				t.Fatalf("probe: RateLimit %q", r.Header.Values("RateLimit"))
			}
			for i, s := range tc.steps {
				r := get(s.xff)
				if r.Status != s.status || remainingOf(t, r, "reads-ip") != s.r {
					t.Fatalf("step %d (X-Forwarded-For %q): %d RateLimit %q, want %d with r=%d", i, s.xff, r.Status,
						r.Header.Values("RateLimit"), s.status, s.r)
				}
			}
		})
	}
}

// TestRateLimitSharedAcrossProcesses: processes on one NATS installation
// share the global limits: each enforces its part of the built-in and the
// stored policies, and takes the whole again when the other stops, cleanly
// or not.
func TestRateLimitSharedAcrossProcesses(t *testing.T) {
	ns := startNATS(t)
	a := startApp(t, app.Config{RateLimit: app.RateLimitOn, NATSURL: ns.ClientURL()})
	b := startPeer(t, a, ns.ClientURL(), app.Config{RateLimit: app.RateLimitOn})
	ca, cb := newClient(t, a), newClient(t, b)
	reads := func(c *client) func() reply {
		return func() reply { return c.do("GET", "/api/v1/time", "", nil, nil) }
	}
	type proc struct {
		name string
		a    *app.App
		c    *client
	}
	both := []proc{{"a", a, ca}, {"b", b, cb}}
	for _, p := range both {
		waitMetric(t, p.a, "flashgate_rate_limit_processes", nil, 2)
		if r := waitQuota(t, "reads-ip", 300, reads(p.c)); limitParam(t, r, "RateLimit-Policy", "reads-ip", "w") != 2 {
			t.Errorf("%s: RateLimit-Policy %q, want w=2 (300 at 150/s)", p.name, r.Header.Values("RateLimit-Policy"))
		}
		if r, byName := limitsListing(t, p.c, p.a.AdminToken); r.Body["processes"] != float64(2) || byName["reads-ip"]["quota"] != float64(300) {
			t.Errorf("%s: limits listing %s", p.name, r.Raw)
		}
	}
	// A policy stored through one process is shared by both.
	putLimit(t, ca, a.AdminToken, "reads-ip", map[string]any{"group": "reads", "key": "ip", "capacity": 10, "rate": 0.01})
	for _, p := range both {
		waitQuota(t, "reads-ip", 5, reads(p.c))
	}
	if r := cb.do("DELETE", "/api/v1/admin/limits/reads-ip", b.AdminToken, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE at b: %d %s", r.Status, r.Raw)
	}
	waitQuota(t, "reads-ip", 300, reads(ca))

	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, a, "flashgate_rate_limit_processes", nil, 1)
	waitQuota(t, "reads-ip", 600, reads(ca))

	// A process that dies without saying goodbye: one heartbeat, then
	// silence. It counts until its heartbeats are overdue (3 intervals).
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), events.NodesBucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	beat, _ := json.Marshal(cluster.Member{Node: "ghost", Started: now, Beat: now})
	if _, err := kv.Put(context.Background(), "ghost", beat); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, a, "flashgate_rate_limit_processes", nil, 2)
	waitFor(t, 15*time.Second, func() error {
		if v := metric(t, a, "flashgate_rate_limit_processes", nil); v != 1 {
			return fmt.Errorf("%v processes, want 1 once the ghost's heartbeats are overdue", v)
		}
		return nil
	})
	waitQuota(t, "reads-ip", 600, reads(ca))
}

// TestRateLimitDegraded: without NATS the limiter goes on with the last
// known policies and says it is degraded; with NATS back it is not.
func TestRateLimitDegraded(t *testing.T) {
	dir := t.TempDir()
	ns, err := embed.Start(embed.Options{Dir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	natsURL := ns.ClientURL()
	a := startApp(t, app.Config{RateLimit: app.RateLimitOn, NATSURL: natsURL})
	c := newClient(t, a)
	putLimit(t, c, a.AdminToken, "reads-ip", map[string]any{"group": "reads", "key": "ip", "capacity": 2, "rate": 0.01})
	get := func() reply { return c.do("GET", "/api/v1/time", "", nil, nil) }
	waitQuota(t, "reads-ip", 2, get) // r=1
	if r := get(); r.Status != http.StatusOK || remainingOf(t, r, "reads-ip") != 0 {
		t.Fatalf("second request: %d %s", r.Status, r.Raw)
	}
	if r := get(); r.Status != http.StatusTooManyRequests {
		t.Fatalf("exhausted before NATS goes: %d %s", r.Status, r.Raw)
	}
	if v := metric(t, a, "flashgate_rate_limit_degraded", nil); v != 0 {
		t.Fatalf("degraded %v with NATS up", v)
	}

	ns.Shutdown()
	waitMetric(t, a, "flashgate_rate_limit_degraded", nil, 1)
	r := get()
	if r.Status != http.StatusTooManyRequests || r.str("policy") != "reads-ip" || quotaOf(t, r, "reads-ip") != 2 {
		t.Fatalf("exhausted while degraded: %d %s RateLimit-Policy %q, want 429 of the stored policy", r.Status, r.Raw,
			r.Header.Values("RateLimit-Policy"))
	}

	// NATS back on the same address and store.
	u, err := url.Parse(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	ns2, err := embed.Start(embed.Options{Dir: dir, Listen: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns2.Shutdown)
	waitMetric(t, a, "flashgate_rate_limit_degraded", nil, 0)
	if r := get(); r.Status != http.StatusTooManyRequests {
		t.Errorf("the bucket refilled when NATS came back: %d %s", r.Status, r.Raw)
	}
	if err := a.Shutdown(); err != nil { // before ns2 stops
		t.Fatal(err)
	}
}

// puzzle asks for a proof-of-work puzzle and checks its form.
func puzzle(t *testing.T, c *client, sale, sess string, difficulty int) string {
	t.Helper()
	r := c.do("POST", "/api/v1/sales/"+sale+"/challenge", sess, nil, nil)
	if r.Status != http.StatusCreated || r.str("kind") != "pow" || r.str("algorithm") != "sha256" ||
		r.Body["difficulty"] != float64(difficulty) || r.str("challenge") == "" {
		t.Fatalf("puzzle: %d %s", r.Status, r.Raw)
	}
	exp, err := time.Parse(time.RFC3339Nano, r.str("expiresAt"))
	if err != nil || !exp.After(time.Now()) || exp.After(time.Now().Add(challenge.DefaultTTL+time.Minute)) {
		t.Errorf("puzzle expiresAt %q (%v)", r.str("expiresAt"), err)
	}
	return r.str("challenge")
}

// solve solves a puzzle as a client would.
func solve(t *testing.T, ch string, difficulty int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := challenge.Solve(ctx, ch, difficulty)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsolved is a well-formed answer to ch without the work: the first
// counter whose hash falls short of difficulty.
func unsolved(ch string, difficulty int) string {
	for n := 0; ; n++ {
		s := ch + ":" + strconv.Itoa(n)
		if sum := sha256.Sum256([]byte(s)); challenge.LeadingZeroBits(sum[:]) < difficulty {
			return s
		}
	}
}

// TestProofOfWork: a sale with a proof-of-work check asks for a solution
// before a token; a solution passes once, for its own shopper only.
func TestProofOfWork(t *testing.T) {
	clk := &clock{}
	a := startApp(t, app.Config{Now: clk.Now, Demo: true, DemoDifficulty: 8})
	c := newClient(t, a)
	admin := a.AdminToken
	c.createSale(admin, map[string]any{"id": "p", "stock": 5, "challenge": map[string]any{"kind": "pow", "difficulty": 8}})
	c.createSale(admin, map[string]any{"id": "plain", "stock": 5})
	_, alice := c.session()
	_, bob := c.session()
	token := func(sess, solution string) reply {
		var h map[string]string
		if solution != "" {
			h = map[string]string{"X-Challenge-Solution": solution}
		}
		return c.do("POST", "/api/v1/sales/p/tokens", sess, h, nil)
	}

	for _, sale := range []string{"p", "demo"} {
		if r := c.do("GET", "/api/v1/sales/"+sale, "", nil, nil); fmt.Sprint(r.Body["challenge"]) != fmt.Sprint(map[string]any{"kind": "pow", "difficulty": 8.0}) {
			t.Errorf("sale view of %s: %s", sale, r.Raw)
		}
	}
	aliceP, bobP := puzzle(t, c, "p", alice, 8), puzzle(t, c, "p", bob, 8)
	aliceS, bobS := solve(t, aliceP, 8), solve(t, bobP, 8)
	// The puzzle with the first character of its MAC changed, solved.
	dot := strings.IndexByte(aliceP, '.')
	swap := byte('A')
	if aliceP[dot+1] == 'A' {
		swap = 'B'
	}
	tampered := solve(t, aliceP[:dot+1]+string(swap)+aliceP[dot+2:], 8)

	for _, tc := range []struct {
		name     string
		sess     string
		solution string
		status   int
		code     string
	}{
		{"no solution", alice, "", 403, "challenge_required"},
		{"without the work", alice, unsolved(aliceP, 8), 403, "challenge_failed"},
		{"garbage", alice, "garbage", 403, "challenge_failed"},
		{"forged puzzle", alice, tampered, 403, "challenge_failed"},
		{"another shopper's puzzle", alice, bobS, 403, "challenge_failed"},
		{"solved", alice, aliceS, 201, ""},
		{"used again", alice, aliceS, 403, "challenge_failed"},
		{"used by another shopper", bob, aliceS, 403, "challenge_failed"},
		// Refused elsewhere, so never used: bob's own solution still passes.
		{"own solution after a refusal", bob, bobS, 201, ""},
	} {
		r := token(tc.sess, tc.solution)
		if r.Status != tc.status || r.str("error") != tc.code {
			t.Errorf("%s: %d %s, want %d %q", tc.name, r.Status, r.Raw, tc.status, tc.code)
			continue
		}
		if tc.code != "" && (r.str("challenge") != "pow" || r.str("message") == "") {
			t.Errorf("%s: %s, want the challenge kind and a message", tc.name, r.Raw)
		}
		if tc.status == 201 && r.str("token") == "" {
			t.Errorf("%s: no token: %s", tc.name, r.Raw)
		}
	}

	// A sale without a check says so, and takes tokens without a solution.
	if r := c.do("POST", "/api/v1/sales/plain/challenge", alice, nil, nil); r.Status != http.StatusOK || r.Raw != `{"kind":"none"}`+"\n" {
		t.Errorf("challenge of a sale without one: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/v1/sales/plain/tokens", alice, nil, nil); r.Status != http.StatusCreated {
		t.Errorf("token of a sale without a check: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/v1/sales/p/challenge", "", nil, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("puzzle without a session: %d %s", r.Status, r.Raw)
	}
	// The difficulty defaults, and is bounded.
	c.createSale(admin, map[string]any{"id": "dflt", "stock": 5, "challenge": map[string]any{"kind": "pow"}})
	if r := c.do("GET", "/api/v1/sales/dflt", "", nil, nil); fmt.Sprint(r.Body["challenge"]) != fmt.Sprint(map[string]any{"kind": "pow", "difficulty": float64(challenge.DefaultDifficulty)}) {
		t.Errorf("default difficulty: %s", r.Raw)
	}
	for _, ch := range []map[string]any{{"kind": "pow", "difficulty": 33}, {"kind": "pow", "difficulty": -1}, {"kind": "riddle"}, {"kind": "captcha", "difficulty": 3}} {
		if r := c.do("POST", "/api/v1/admin/sales", admin, nil, map[string]any{"id": "bad", "stock": 5, "challenge": ch}); r.Status != 400 || r.str("error") != "invalid_field" || r.str("field") != "challenge" {
			t.Errorf("sale with challenge %v: %d %s", ch, r.Status, r.Raw)
		}
	}

	// A puzzle solved too late.
	_, carol := c.session()
	late := solve(t, puzzle(t, c, "p", carol, 8), 8)
	clk.Advance(challenge.DefaultTTL + time.Second)
	if r := token(carol, late); r.Status != http.StatusForbidden || r.str("error") != "challenge_failed" {
		t.Errorf("expired puzzle: %d %s, want 403 challenge_failed", r.Status, r.Raw)
	}

	for result, want := range map[string]float64{"issued": 3, "required": 1, "failed": 7, "passed": 2} {
		if v := metric(t, a, "flashgate_challenges_total", map[string]string{"kind": "pow", "result": result}); v != want {
			t.Errorf("challenges_total{pow,%s} = %v, want %v", result, v, want)
		}
	}
}

// TestProofOfWorkAcrossProcesses: processes that share the purchase key
// (and so the puzzle key) take each other's puzzles, each solution once in
// the whole installation.
func TestProofOfWorkAcrossProcesses(t *testing.T) {
	ns := startNATS(t)
	a := startApp(t, app.Config{NATSURL: ns.ClientURL()})
	b := startPeer(t, a, ns.ClientURL(), app.Config{})
	ca, cb := newClient(t, a), newClient(t, b)
	ca.createSale(a.AdminToken, map[string]any{"id": "p", "stock": 5, "challenge": map[string]any{"kind": "pow", "difficulty": 8}})
	waitFor(t, 10*time.Second, func() error {
		if r := cb.do("GET", "/api/v1/sales/p", "", nil, nil); r.Status != http.StatusOK {
			return fmt.Errorf("b does not know the sale yet: %d %s", r.Status, r.Raw)
		}
		return nil
	})
	token := func(c *client, sess, solution string) reply {
		return c.do("POST", "/api/v1/sales/p/tokens", sess, map[string]string{"X-Challenge-Solution": solution}, nil)
	}
	_, alice := ca.session()
	_, bob := ca.session()

	fromA := solve(t, puzzle(t, ca, "p", alice, 8), 8)
	if r := token(ca, alice, fromA); r.Status != http.StatusCreated {
		t.Fatalf("solution at a: %d %s", r.Status, r.Raw)
	}
	if r := token(cb, alice, fromA); r.Status != http.StatusForbidden || r.str("error") != "challenge_failed" {
		t.Fatalf("the same solution at b: %d %s, want 403 challenge_failed", r.Status, r.Raw)
	}
	// A puzzle from a, solved first at b: taken there, refused at a.
	fromA2 := solve(t, puzzle(t, ca, "p", bob, 8), 8)
	if r := token(cb, bob, fromA2); r.Status != http.StatusCreated {
		t.Fatalf("a's puzzle at b: %d %s", r.Status, r.Raw)
	}
	if r := token(ca, bob, fromA2); r.Status != http.StatusForbidden || r.str("error") != "challenge_failed" {
		t.Fatalf("the same solution back at a: %d %s, want 403 challenge_failed", r.Status, r.Raw)
	}
	// One solution sent at once to both processes, many times: one copy
	// passes in the whole installation.
	_, carol := cb.session()
	sol := solve(t, puzzle(t, cb, "p", carol, 8), 8)
	answers := make([]string, 16)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := token([]*client{ca, cb}[i%2], carol, sol)
			answers[i] = fmt.Sprintf("%d %s", r.Status, r.str("error"))
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for _, ans := range answers {
		counts[ans]++
	}
	if counts["201 "] != 1 || counts["403 challenge_failed"] != len(answers)-1 {
		t.Errorf("one solution sent %d times at once to two processes: %v, want one 201 and the rest 403 challenge_failed", len(answers), counts)
	}
}

// TestCaptcha: a sale with a CAPTCHA check asks the provider's siteverify
// about each response token and takes each once; a provider out of reach
// is 503, not the shopper's fault.
func TestCaptcha(t *testing.T) {
	var (
		mu    sync.Mutex
		forms []url.Values
	)
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		forms = append(forms, r.PostForm)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		resp := r.PostForm.Get("response")
		switch {
		case r.Method == http.MethodPost && r.PostForm.Get("secret") == "s3cret" && strings.HasPrefix(resp, "good-"):
			io.WriteString(w, `{"success":true,"hostname":"shop.example"}`)
		case r.Method == http.MethodPost && r.PostForm.Get("secret") == "s3cret" && strings.HasPrefix(resp, "elsewhere-"):
			io.WriteString(w, `{"success":true,"hostname":"evil.example"}`)
		default:
			io.WriteString(w, `{"success":false,"error-codes":["invalid-input-response"]}`)
		}
	}))
	defer fake.Close()
	secretFile := filepath.Join(t.TempDir(), "captcha-secret")
	if err := os.WriteFile(secretFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, app.Config{CaptchaProvider: challenge.ProviderTurnstile, CaptchaSecretFile: secretFile,
		CaptchaVerifyURL: fake.URL, CaptchaSiteKey: "site-key-1", CaptchaHostname: "shop.example"})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "c", "stock": 5, "challenge": map[string]any{"kind": "captcha"}})
	if r := c.do("GET", "/api/v1/sales/c", "", nil, nil); fmt.Sprint(r.Body["challenge"]) != fmt.Sprint(map[string]any{"kind": "captcha"}) {
		t.Errorf("sale view: %s", r.Raw)
	}
	_, alice := c.session()
	_, bob := c.session()
	_, carol := c.session()
	r := c.do("POST", "/api/v1/sales/c/challenge", alice, nil, nil)
	if r.Status != http.StatusOK || r.str("kind") != "captcha" || r.str("provider") != "turnstile" || r.str("siteKey") != "site-key-1" || len(r.Body) != 3 {
		t.Fatalf("challenge: %d %s", r.Status, r.Raw)
	}
	token := func(sess, response string) reply {
		var h map[string]string
		if response != "" {
			h = map[string]string{"X-Challenge-Solution": response}
		}
		return c.do("POST", "/api/v1/sales/c/tokens", sess, h, nil)
	}
	for _, tc := range []struct {
		name     string
		sess     string
		response string
		status   int
		code     string
	}{
		{"no response", alice, "", 403, "challenge_required"},
		{"refused by the provider", alice, "bad", 403, "challenge_failed"},
		{"solved on another host", alice, "elsewhere-1", 403, "challenge_failed"},
		{"too long", alice, "good-" + strings.Repeat("x", 2048), 403, "challenge_failed"},
		{"good", alice, "good-1", 201, ""},
		{"used again", bob, "good-1", 403, "challenge_failed"},
		{"another good one", bob, "good-2", 201, ""},
	} {
		r := token(tc.sess, tc.response)
		if r.Status != tc.status || r.str("error") != tc.code {
			t.Errorf("%s: %d %s, want %d %q", tc.name, r.Status, r.Raw, tc.status, tc.code)
		}
	}
	mu.Lock()
	for _, f := range forms {
		if f.Get("secret") != "s3cret" || f.Get("remoteip") != "127.0.0.1" {
			t.Errorf("siteverify form %v: want the secret from the file and the client address", f)
		}
	}
	if len(forms) != 5 { // bad, elsewhere-1, good-1 twice, good-2; too long is refused without a call
		t.Errorf("%d siteverify calls, want 5", len(forms))
	}
	mu.Unlock()

	fake.Close()
	r = token(carol, "good-3")
	if r.Status != http.StatusServiceUnavailable || r.str("error") != "challenge_unavailable" || r.Header.Get("Retry-After") == "" {
		t.Errorf("provider out of reach: %d %s Retry-After %q, want 503 challenge_unavailable with Retry-After", r.Status, r.Raw, r.Header.Get("Retry-After"))
	}
	for result, want := range map[string]float64{"required": 1, "failed": 4, "passed": 2, "unavailable": 1} {
		if v := metric(t, a, "flashgate_challenges_total", map[string]string{"kind": "captcha", "result": result}); v != want {
			t.Errorf("challenges_total{captcha,%s} = %v, want %v", result, v, want)
		}
	}

	// A server without a provider cannot create a CAPTCHA sale.
	plain := startApp(t, app.Config{})
	pc := newClient(t, plain)
	if r := pc.do("POST", "/api/v1/admin/sales", plain.AdminToken, nil, map[string]any{"id": "c", "stock": 5, "challenge": map[string]any{"kind": "captcha"}}); r.Status != http.StatusBadRequest || r.str("error") != "invalid_field" || r.str("field") != "challenge" {
		t.Errorf("captcha sale without a provider: %d %s, want 400 invalid_field of challenge", r.Status, r.Raw)
	}
}

// TestSignedRequests: a sale that takes only requests signed by the shop's
// app checks the signature of token requests and purchases; each nonce is
// taken once in the whole installation; a signature holds only with the
// session, purchase token and challenge solution it was made for.
func TestSignedRequests(t *testing.T) {
	const keyID = "app-1"
	secret := []byte(strings.Repeat("0123456789abcdef", 4))
	keys := filepath.Join(t.TempDir(), "signing-keys")
	if err := os.WriteFile(keys, []byte("# the shop's apps\n"+keyID+" "+string(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := startNATS(t)
	a := startApp(t, app.Config{NATSURL: ns.ClientURL(), SigningKeysFile: keys})
	b := startPeer(t, a, ns.ClientURL(), app.Config{SigningKeysFile: keys})
	ca, cb := newClient(t, a), newClient(t, b)
	ca.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 5, "signedRequests": true})
	if r := ca.do("GET", "/api/v1/sales/s", "", nil, nil); r.Body["signedRequests"] != true {
		t.Errorf("sale view: %s", r.Raw)
	}
	waitFor(t, 10*time.Second, func() error {
		if r := cb.do("GET", "/api/v1/sales/s", "", nil, nil); r.Status != http.StatusOK {
			return fmt.Errorf("b does not know the sale yet: %d %s", r.Status, r.Raw)
		}
		return nil
	})
	_, alice := ca.session()
	_, bob := cb.session()
	const tokens, purchases = "/api/v1/sales/s/tokens", "/api/v1/sales/s/purchases"
	// The requests below go out with Authorization "Bearer <session>" (as
	// client.do sends it) and the headers of hdr; a signature binds those
	// values, so each is signed with the bound headers it is sent with.
	signBound := func(id string, secret []byte, path string, body []byte, bound [32]byte, at time.Time) map[string]string {
		return map[string]string{signing.Header: signing.Sign(id, secret, "POST", path, body, bound, at, signing.NewNonce())}
	}
	asAlice := signing.Bound("Bearer "+alice, "", "")
	signBody := func(id string, secret []byte, path string, body []byte, at time.Time) map[string]string {
		return signBound(id, secret, path, body, asAlice, at)
	}
	sign := func(id string, secret []byte, path string, at time.Time) map[string]string {
		return signBody(id, secret, path, nil, at)
	}
	valid := sign(keyID, secret, tokens, time.Now())
	r := ca.do("POST", tokens, alice, valid, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("signed token request: %d %s", r.Status, r.Raw)
	}
	tok := r.str("token")
	// withHeader returns h with name: value added.
	withHeader := func(h map[string]string, name, value string) map[string]string {
		out := map[string]string{name: value}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	withToken := func(h map[string]string) map[string]string { return withHeader(h, "X-Purchase-Token", tok) }
	// signPurchase signs a purchase by alice for the purchase token boundTok.
	signPurchase := func(path, boundTok string) map[string]string {
		return signBound(keyID, secret, path, nil, signing.Bound("Bearer "+alice, boundTok, ""), time.Now())
	}

	for _, tc := range []struct {
		name   string
		c      *client
		path   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"missing", ca, tokens, nil, 401, "signature_required"},
		{"wrong secret", ca, tokens, sign(keyID, []byte(strings.Repeat("x", 64)), tokens, time.Now()), 401, "signature_invalid"},
		{"unknown key", ca, tokens, sign("app-2", secret, tokens, time.Now()), 401, "signature_invalid"},
		{"signed for another path", ca, tokens, sign(keyID, secret, purchases, time.Now()), 401, "signature_invalid"},
		{"malformed", ca, tokens, map[string]string{signing.Header: "keyId=app-1"}, 401, "signature_invalid"},
		{"stale", ca, tokens, sign(keyID, secret, tokens, time.Now().Add(-2*time.Minute)), 401, "signature_stale"},
		{"from the future", ca, tokens, sign(keyID, secret, tokens, time.Now().Add(2*time.Minute)), 401, "signature_stale"},
		{"replayed", ca, tokens, valid, 401, "signature_replayed"},
		{"replayed at another process", cb, tokens, valid, 401, "signature_replayed"},
		{"new nonce at another process", cb, tokens, sign(keyID, secret, tokens, time.Now()), 200, ""}, // already issued
		{"query signed", ca, tokens + "?from=app", sign(keyID, secret, tokens+"?from=app", time.Now()), 200, ""},
		{"query not signed", ca, tokens + "?from=app", sign(keyID, secret, tokens, time.Now()), 401, "signature_invalid"},
		{"body signed", ca, tokens, signBody(keyID, secret, tokens, []byte(`{"a":1}`), time.Now()), 200, ""},
		{"body not signed", ca, tokens, sign(keyID, secret, tokens, time.Now()), 401, "signature_invalid"},
		{"signed for another session", ca, tokens, signBound(keyID, secret, tokens, nil, signing.Bound("Bearer "+bob, "", ""), time.Now()), 401, "signature_invalid"},
		{"challenge solution not signed", ca, tokens, withHeader(sign(keyID, secret, tokens, time.Now()), "X-Challenge-Solution", "1.2.3"), 401, "signature_invalid"},
		{"purchase unsigned", ca, purchases, withToken(nil), 401, "signature_required"},
		{"purchase signed for tokens", ca, purchases, withToken(signPurchase(tokens, tok)), 401, "signature_invalid"},
		{"purchase signed without its token", ca, purchases, withToken(sign(keyID, secret, purchases, time.Now())), 401, "signature_invalid"},
		{"purchase signed for another token", ca, purchases, withToken(signPurchase(purchases, tok+"x")), 401, "signature_invalid"},
		{"purchase signed", ca, purchases, withToken(signPurchase(purchases, tok)), 202, ""},
	} {
		var body any
		if strings.HasPrefix(tc.name, "body") {
			body = []byte(`{"a":1}`)
		}
		r := tc.c.do("POST", tc.path, alice, tc.hdr, body)
		if r.Status != tc.status || r.str("error") != tc.code {
			t.Errorf("%s: %d %s, want %d %q", tc.name, r.Status, r.Raw, tc.status, tc.code)
			continue
		}
		if tc.code == "signature_stale" {
			if st, err := time.Parse(time.RFC3339Nano, r.str("serverTime")); err != nil || time.Since(st).Abs() > time.Minute {
				t.Errorf("%s: serverTime %q (%v)", tc.name, r.str("serverTime"), err)
			}
		}
	}

	// A second value of a bound header would be neither signed nor
	// checked (Header.Get sees the first): such a request is refused even
	// when its first values are the signed ones.
	for _, tc := range []struct {
		name, path string
		bound      [32]byte
		hdr        http.Header
	}{
		{"two Authorization headers", tokens, asAlice,
			http.Header{"Authorization": {"Bearer " + alice, "Bearer " + bob}}},
		{"two X-Purchase-Token headers", purchases, signing.Bound("Bearer "+alice, tok, ""),
			http.Header{"Authorization": {"Bearer " + alice}, "X-Purchase-Token": {tok, tok + "x"}}},
		{"two X-Challenge-Solution headers", tokens, signing.Bound("Bearer "+alice, "", "1.2.3"),
			http.Header{"Authorization": {"Bearer " + alice}, "X-Challenge-Solution": {"1.2.3", "4.5.6"}}},
	} {
		req, err := http.NewRequest("POST", ca.base+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = tc.hdr
		req.Header.Set(signing.Header, signing.Sign(keyID, secret, "POST", tc.path, nil, tc.bound, time.Now(), signing.NewNonce()))
		resp, err := ca.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(raw), `"signature_invalid"`) {
			t.Errorf("%s: %d %s, want 401 signature_invalid", tc.name, resp.StatusCode, raw)
		}
	}

	for result, want := range map[string]float64{"valid": 4, "missing": 2, "invalid": 14, "stale": 2, "replayed": 1} {
		if v := metric(t, a, "flashgate_signatures_total", map[string]string{"result": result}); v != want {
			t.Errorf("signatures_total{%s} at a = %v, want %v", result, v, want)
		}
	}

	// One signed request sent at once to both processes, many times: one
	// copy passes in the whole installation.
	once := signBound(keyID, secret, tokens, nil, signing.Bound("Bearer "+bob, "", ""), time.Now())
	answers := make([]string, 16)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := []*client{ca, cb}[i%2].do("POST", tokens, bob, once, nil)
			answers[i] = fmt.Sprintf("%d %s", r.Status, r.str("error"))
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for _, ans := range answers {
		counts[ans]++
	}
	if counts["201 "] != 1 || counts["401 signature_replayed"] != len(answers)-1 {
		t.Errorf("one signed request sent %d times at once to two processes: %v, want one 201 and the rest 401 signature_replayed", len(answers), counts)
	}

	// A server without signing keys cannot create such a sale.
	plain := startApp(t, app.Config{})
	pc := newClient(t, plain)
	if r := pc.do("POST", "/api/v1/admin/sales", plain.AdminToken, nil, map[string]any{"id": "s", "stock": 5, "signedRequests": true}); r.Status != http.StatusBadRequest || r.str("error") != "invalid_field" || r.str("field") != "signedRequests" {
		t.Errorf("signed sale without keys: %d %s, want 400 invalid_field of signedRequests", r.Status, r.Raw)
	}
}

// TestCheapAnswersFirst: a sale whose outcome is certain answers from its
// cached state before it asks for a solution or a signature.
func TestCheapAnswersFirst(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "signing-keys")
	if err := os.WriteFile(keys, []byte("app-1 "+strings.Repeat("k", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startApp(t, app.Config{SigningKeysFile: keys})
	c := newClient(t, a)
	admin := a.AdminToken
	pow := map[string]any{"kind": "pow", "difficulty": 8}
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	c.createSale(admin, map[string]any{"id": "gone", "stock": 1, "challenge": pow})
	c.createSale(admin, map[string]any{"id": "later", "stock": 5, "challenge": pow, "opensAt": later})
	c.createSale(admin, map[string]any{"id": "closed", "stock": 5, "challenge": pow})
	c.createSale(admin, map[string]any{"id": "later-signed", "stock": 5, "signedRequests": true, "opensAt": later})
	if r := c.do("POST", "/api/v1/admin/sales/closed/close", admin, nil, nil); r.Status != http.StatusOK && r.Status != http.StatusAccepted {
		t.Fatalf("close: %d %s", r.Status, r.Raw)
	}
	// Sell the one unit of "gone".
	_, alice := c.session()
	sol := solve(t, puzzle(t, c, "gone", alice, 8), 8)
	tok := c.do("POST", "/api/v1/sales/gone/tokens", alice, map[string]string{"X-Challenge-Solution": sol}, nil)
	if tok.Status != http.StatusCreated {
		t.Fatalf("token: %d %s", tok.Status, tok.Raw)
	}
	if r := c.do("POST", "/api/v1/sales/gone/purchases", alice, map[string]string{"X-Purchase-Token": tok.str("token")}, nil); r.Status != http.StatusAccepted {
		t.Fatalf("purchase: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 10*time.Second, func() error {
		for sale, state := range map[string]string{"gone": "sold_out", "closed": "closed", "later": "scheduled"} {
			if r := c.do("GET", "/api/v1/sales/"+sale, "", nil, nil); r.str("state") != state {
				return fmt.Errorf("sale %s not %s yet: %s", sale, state, r.Raw)
			}
		}
		return nil
	})
	before := metric(t, a, "flashgate_challenges_total", map[string]string{"kind": "pow", "result": "required"})

	_, bob := c.session()
	for _, tc := range []struct {
		sale   string
		status int
		code   string
	}{
		{"gone", http.StatusGone, "sold_out"},
		{"later", http.StatusTooEarly, "not_open"},
		{"closed", http.StatusGone, "sale_closed"},
		{"later-signed", http.StatusTooEarly, "not_open"},
	} {
		r := c.do("POST", "/api/v1/sales/"+tc.sale+"/tokens", bob, nil, nil)
		if r.Status != tc.status || r.str("error") != tc.code {
			t.Errorf("%s: %d %s, want %d %q without being asked for a solution or signature", tc.sale, r.Status, r.Raw, tc.status, tc.code)
		}
	}
	if after := metric(t, a, "flashgate_challenges_total", map[string]string{"kind": "pow", "result": "required"}); after != before {
		t.Errorf("cheap refusals counted as challenges required: %v -> %v", before, after)
	}
	if v := metric(t, a, "flashgate_signatures_total", map[string]string{"result": "missing"}); v != 0 {
		t.Errorf("a cheap refusal checked the signature: missing = %v", v)
	}
}

// TestGuardConfigErrors: a bad bot-defence setting stops the start with an
// error that names it, and releases the data directory for the next try.
func TestGuardConfigErrors(t *testing.T) {
	t.Setenv("FLASHGATE_CAPTCHA_SECRET", "")
	tmp := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := write("captcha-secret", "s3cret\n")
	shortKey := write("short-keys", "app-1 tooshort\n")
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		c    app.Config
		want string
	}{
		{"rate limit mode", app.Config{RateLimit: "sometimes"}, "--rate-limit"},
		{"trusted proxy", app.Config{TrustedProxies: []string{"10.0.0.0/33"}}, "--trusted-proxies"},
		{"no signing keys file", app.Config{SigningKeysFile: filepath.Join(tmp, "nope")}, "--signing-keys-file"},
		{"short signing secret", app.Config{SigningKeysFile: shortKey}, "--signing-keys-file"},
		{"unknown captcha provider", app.Config{CaptchaProvider: "riddles", CaptchaSecretFile: secret}, "captcha"},
		{"captcha without a secret", app.Config{CaptchaProvider: challenge.ProviderTurnstile}, "captcha"},
		{"no captcha secret file", app.Config{CaptchaProvider: challenge.ProviderTurnstile, CaptchaSecretFile: filepath.Join(tmp, "nope")}, "--captcha-secret-file"},
		{"captcha verify URL", app.Config{CaptchaProvider: challenge.ProviderTurnstile, CaptchaSecretFile: secret, CaptchaVerifyURL: "ftp://example.com/x"}, "captcha"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.Data, c.HTTP = dir, "127.0.0.1:0"
			c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, err := app.Start(ctx, c)
			if err == nil {
				a.Shutdown()
				t.Fatalf("started; want an error naming %s", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s", err, tc.want)
			}
		})
	}
	// The secret may come from the environment instead of a file.
	t.Setenv("FLASHGATE_CAPTCHA_SECRET", "from-env")
	a := startApp(t, app.Config{Data: dir, CaptchaProvider: challenge.ProviderHCaptcha, CaptchaSiteKey: "k"})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "c", "stock": 1, "challenge": map[string]any{"kind": "captcha"}})
	_, sess := c.session()
	if r := c.do("POST", "/api/v1/sales/c/challenge", sess, nil, nil); r.Status != http.StatusOK || r.str("provider") != "hcaptcha" || r.str("siteKey") != "k" {
		t.Errorf("challenge: %d %s", r.Status, r.Raw)
	}
}
