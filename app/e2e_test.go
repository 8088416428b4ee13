package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/audit"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/loadgen"
)

// clock is an injectable clock: real time plus an offset tests move.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

func startApp(t testing.TB, c app.Config) *app.App {
	t.Helper()
	if c.Data == "" {
		c.Data = t.TempDir()
	}
	c.HTTP = "127.0.0.1:0"
	c.SessionRate = -1
	if c.RateLimit == "" {
		c.RateLimit = app.RateLimitOff // these tests are many shoppers on one address; the limits have tests of their own
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		if os.Getenv("FLASHGATE_TEST_LOG") != "" { // see what the service says
			c.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Start(ctx, c)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	return a
}

type client struct {
	t    testing.TB
	base string
	hc   *http.Client
}

type reply struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (r reply) str(k string) string { s, _ := r.Body[k].(string); return s }

func (c *client) do(method, path, bearer string, hdr map[string]string, body any) reply {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

func newClient(t testing.TB, a *app.App) *client {
	return &client{t: t, base: a.URL, hc: &http.Client{Timeout: 30 * time.Second}}
}

func (c *client) session() (shopper, session string) {
	c.t.Helper()
	r := c.do("POST", "/api/v1/session", "", nil, nil)
	if r.Status != http.StatusCreated {
		c.t.Fatalf("session: %d %s", r.Status, r.Raw)
	}
	return r.str("shopper"), r.str("session")
}

func (c *client) createSale(admin string, body map[string]any) {
	c.t.Helper()
	if r := c.do("POST", "/api/v1/admin/sales", admin, nil, body); r.Status != http.StatusCreated {
		c.t.Fatalf("create sale: %d %s", r.Status, r.Raw)
	}
}

// waitFor polls fn until it returns nil or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	fgtest.WaitFor(t, timeout, fn)
}

func runAudit(t testing.TB, a *app.App) *audit.Report {
	t.Helper()
	rep, err := audit.Run(context.Background(), a.JS, filepath.Join(t.TempDir(), "audit.db"))
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	var out bytes.Buffer
	rep.Write(&out)
	if !rep.OK() {
		t.Fatalf("audit failed:\n%s", out.String())
	}
	t.Logf("audit:\n%s", out.String())
	return rep
}

// TestRaceForStock: 10,000 distinct shoppers over real HTTP race for stock
// 200 (quota 240), then every token holder buys.
func TestRaceForStock(t *testing.T) {
	shoppers := 10000
	if testing.Short() {
		shoppers = 2000
	}
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "race", "stock": 200, "quotaBuffer": 1.2, "tokenTTL": "10m"})
	res, err := loadgen.Run(context.Background(), loadgen.Config{URL: a.URL, AdminToken: a.AdminToken, Sale: "race",
		Shoppers: shoppers, Concurrency: 64, Buy: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res.Write(&out)
	t.Logf("\n%s", out.String())
	if len(res.Verdict) > 0 {
		t.Fatalf("verdict: %v", res.Verdict)
	}
	// Requests answered 202 pending are resolved by polling.
	for _, s := range res.Shoppers {
		if s.TokenStatus == http.StatusAccepted || s.PurchaseStatus == http.StatusAccepted && s.OrderID == "" {
			resolvePending(t, c, s)
		}
	}
	tokens, orders := map[string]string{}, map[string]string{}
	buyers := map[string]bool{}
	for _, s := range res.Shoppers {
		switch s.TokenStatus {
		case http.StatusCreated:
			tokens[s.TokenID] = s.ID
		case http.StatusGone:
			if s.TokenErr != "quota_exhausted" && s.TokenErr != "sold_out" {
				t.Errorf("token refused with %q", s.TokenErr)
			}
		default:
			t.Errorf("shopper %s: token status %d (%s)", s.ID, s.TokenStatus, s.TokenErr)
		}
		if s.OrderID != "" {
			if buyers[s.ID] {
				t.Errorf("shopper %s bought twice", s.ID)
			}
			buyers[s.ID] = true
			orders[s.OrderID] = s.ID
		}
	}
	if len(tokens) != 240 {
		t.Errorf("%d tokens issued, want the quota 240", len(tokens))
	}
	if len(orders) != 200 {
		t.Errorf("%d purchases accepted, want exactly the stock 200", len(orders))
	}
	// Every success reply matches an event (through the projections).
	waitFor(t, 30*time.Second, func() error {
		var n int
		if err := a.Store.DB().QueryRow(`SELECT COUNT(*) FROM orders WHERE sale = 'race'`).Scan(&n); err != nil {
			return err
		}
		if n != len(orders) {
			return fmt.Errorf("projection has %d orders, want %d", n, len(orders))
		}
		return nil
	})
	for id, shopper := range tokens {
		var who string
		if err := a.Store.DB().QueryRow(`SELECT shopper FROM tokens WHERE id = ?`, id).Scan(&who); err != nil || who != shopper {
			t.Errorf("token %s replied to %s: ledger says %q (%v)", id, shopper, who, err)
		}
	}
	for id, shopper := range orders {
		var who string
		if err := a.Store.DB().QueryRow(`SELECT shopper FROM orders WHERE id = ?`, id).Scan(&who); err != nil || who != shopper {
			t.Errorf("order %s replied to %s: view says %q (%v)", id, shopper, who, err)
		}
	}
	rep := runAudit(t, a)
	for _, s := range rep.Sales {
		if s.Sale.ID == "race" && (s.Redeemed != 200 || s.Issued != 240) {
			t.Errorf("audit figures: redeemed %d issued %d", s.Redeemed, s.Issued)
		}
	}
}

func resolvePending(t *testing.T, c *client, s *loadgen.Shopper) {
	t.Helper()
	waitFor(t, 30*time.Second, func() error {
		r := c.do("GET", "/api/v1/requests/"+s.RequestID, s.Session, nil, nil)
		if r.Status != http.StatusOK || r.str("status") == "pending" {
			return fmt.Errorf("request %s still %d %s", s.RequestID, r.Status, r.Raw)
		}
		switch r.str("status") {
		case "issued":
			s.TokenStatus, s.TokenID, s.Token = http.StatusCreated, r.str("tokenId"), r.str("token")
		case "accepted":
			s.OrderID = r.str("orderId")
		case "refused":
			if s.TokenStatus == http.StatusAccepted {
				s.TokenStatus, s.TokenErr = int(r.Body["httpStatus"].(float64)), r.str("error")
			}
		}
		return nil
	})
}

// TestBadInput: each bad request gets its documented status and changes
// nothing.
func TestBadInput(t *testing.T) {
	clk := &clock{}
	a := startApp(t, app.Config{Now: clk.Now})
	c := newClient(t, a)
	admin := a.AdminToken
	c.createSale(admin, map[string]any{"id": "s", "stock": 5, "tokenTTL": "1s"})
	c.createSale(admin, map[string]any{"id": "other", "stock": 5})
	c.createSale(admin, map[string]any{"id": "later", "stock": 5, "opensAt": clk.Now().Add(time.Hour).Format(time.RFC3339)})
	alice, aliceS := c.session()
	_, bobS := c.session()
	tok := c.do("POST", "/api/v1/sales/s/tokens", aliceS, nil, nil)
	if tok.Status != http.StatusCreated {
		t.Fatalf("token: %d %s", tok.Status, tok.Raw)
	}
	again := c.do("POST", "/api/v1/sales/s/tokens", aliceS, nil, nil)
	if again.Status != http.StatusOK || again.str("status") != "already_issued" || again.str("token") != tok.str("token") {
		t.Fatalf("asking again: %d %s", again.Status, again.Raw)
	}
	otherTok := c.do("POST", "/api/v1/sales/other/tokens", aliceS, nil, nil)
	token := tok.str("token")
	parts := strings.Split(token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	altered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(bytes.Replace(payload, []byte(alice), []byte(strings.Repeat("X", len(alice))), 1)) + "." + parts[2]
	forged := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	before := c.do("GET", "/api/v1/admin/sales/s", admin, nil, nil)

	buy := func(session, tok string) reply {
		return c.do("POST", "/api/v1/sales/s/purchases", session, map[string]string{"X-Purchase-Token": tok}, nil)
	}
	cases := []struct {
		name   string
		do     func() reply
		status int
		code   string
	}{
		{"malformed JSON", func() reply { return c.do("POST", "/api/v1/admin/sales", admin, nil, []byte(`{"id":`)) }, 400, "bad_request"},
		{"unknown field", func() reply {
			return c.do("POST", "/api/v1/admin/sales", admin, nil, map[string]any{"id": "x", "stock": 1, "stok": 2})
		}, 400, "invalid_field"},
		{"bad stock", func() reply {
			return c.do("POST", "/api/v1/admin/sales", admin, nil, map[string]any{"id": "x", "stock": 0})
		}, 400, "invalid_field"},
		{"bad ttl", func() reply {
			return c.do("POST", "/api/v1/admin/sales", admin, nil, map[string]any{"id": "x", "stock": 1, "tokenTTL": "1ms"})
		}, 400, "invalid_field"},
		{"bad id", func() reply {
			return c.do("POST", "/api/v1/admin/sales", admin, nil, map[string]any{"id": "A.B", "stock": 1})
		}, 400, "invalid_field"},
		{"sale exists", func() reply {
			return c.do("POST", "/api/v1/admin/sales", admin, nil, map[string]any{"id": "s", "stock": 1})
		}, 409, "sale_exists"},
		{"no admin token", func() reply {
			return c.do("POST", "/api/v1/admin/sales", "", nil, map[string]any{"id": "y", "stock": 1})
		}, 401, "unauthenticated"},
		{"wrong admin token", func() reply { return c.do("GET", "/api/v1/admin/sales", "nope", nil, nil) }, 401, "unauthenticated"},
		{"huge body", func() reply {
			return c.do("POST", "/api/v1/admin/sales", admin, nil, bytes.Repeat([]byte("x"), 70<<10))
		}, 413, "body_too_large"},
		{"unknown sale", func() reply { return c.do("POST", "/api/v1/sales/nosuch/tokens", aliceS, nil, nil) }, 404, "sale_not_found"},
		{"unknown sale view", func() reply { return c.do("GET", "/api/v1/sales/nosuch", "", nil, nil) }, 404, "sale_not_found"},
		{"no session", func() reply { return c.do("POST", "/api/v1/sales/s/tokens", "", nil, nil) }, 401, "unauthenticated"},
		{"forged session", func() reply { return c.do("POST", "/api/v1/sales/s/tokens", token, nil, nil) }, 401, "unauthenticated"},
		{"not open yet", func() reply { return c.do("POST", "/api/v1/sales/later/tokens", aliceS, nil, nil) }, 425, "not_open"},
		{"no purchase token", func() reply { return buy(aliceS, "") }, 401, "token_required"},
		{"forged token", func() reply { return buy(aliceS, forged) }, 401, "token_invalid"},
		{"altered token", func() reply { return buy(aliceS, altered) }, 401, "token_invalid"},
		{"alg none token", func() reply { return buy(aliceS, none) }, 401, "token_invalid"},
		{"garbage token", func() reply { return buy(aliceS, "garbage") }, 401, "token_invalid"},
		{"another shopper's token", func() reply { return buy(bobS, token) }, 403, "token_not_yours"},
		{"another sale's token", func() reply { return buy(aliceS, otherTok.str("token")) }, 403, "token_wrong_sale"},
		{"unknown route", func() reply { return c.do("GET", "/api/v1/nope", "", nil, nil) }, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.do()
			if r.Status != tc.status || r.str("error") != tc.code || r.str("message") == "" {
				t.Fatalf("got %d %s, want %d %q with a message", r.Status, r.Raw, tc.status, tc.code)
			}
		})
	}
	after := c.do("GET", "/api/v1/admin/sales/s", admin, nil, nil)
	for _, k := range []string{"tokensIssued", "sold", "batchVersion", "stockLeft"} {
		if before.Body[k] != after.Body[k] {
			t.Errorf("bad input changed %s: %v -> %v", k, before.Body[k], after.Body[k])
		}
	}

	// Replayed token: the second use gets 409 with the order of the first.
	first := buy(aliceS, token)
	if first.Status != http.StatusAccepted || first.str("orderId") == "" {
		t.Fatalf("purchase: %d %s", first.Status, first.Raw)
	}
	replay := buy(aliceS, token)
	if replay.Status != http.StatusConflict || replay.str("error") != "token_used" || replay.str("orderId") != first.str("orderId") {
		t.Fatalf("replayed token: %d %s", replay.Status, replay.Raw)
	}
	waitFor(t, 10*time.Second, func() error {
		o := c.do("GET", "/api/v1/orders/"+first.str("orderId"), aliceS, nil, nil)
		// The embedded default sends orders to an in-process fake provider.
		if o.Status != http.StatusOK || o.str("status") != "confirmed" || !strings.HasPrefix(o.str("reference"), "P-") {
			return fmt.Errorf("order: %d %s", o.Status, o.Raw)
		}
		return nil
	})
	if o := c.do("GET", "/api/v1/orders/"+first.str("orderId"), bobS, nil, nil); o.Status != http.StatusNotFound {
		t.Errorf("another shopper's order: %d %s", o.Status, o.Raw)
	}
	// Expired token (TTL 1 s; the clock moves on).
	bobTok := c.do("POST", "/api/v1/sales/s/tokens", bobS, nil, nil)
	if bobTok.Status != http.StatusCreated {
		t.Fatalf("bob token: %d %s", bobTok.Status, bobTok.Raw)
	}
	clk.Advance(3 * time.Second)
	if r := buy(bobS, bobTok.str("token")); r.Status != http.StatusUnauthorized || r.str("error") != "token_expired" {
		t.Fatalf("expired token: %d %s", r.Status, r.Raw)
	}
	// The writer reclaims the expired token: its quota comes back once.
	waitFor(t, 10*time.Second, func() error {
		s := c.do("GET", "/api/v1/admin/sales/s", admin, nil, nil)
		if s.Body["tokensExpired"] != float64(1) || s.Body["tokensOutstanding"] != float64(0) {
			return fmt.Errorf("sale after expiry: %s", s.Raw)
		}
		return nil
	})
	runAudit(t, a)
}

// TestConcurrentTokenRequestsOfOneShopper: two requests at once never give
// two tokens.
func TestConcurrentTokenRequestsOfOneShopper(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 50})
	for i := 0; i < 20; i++ {
		_, sess := c.session()
		var wg sync.WaitGroup
		ids := make([]string, 8)
		for j := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[j] = c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil).str("tokenId")
			}()
		}
		wg.Wait()
		for _, id := range ids {
			if id == "" || id != ids[0] {
				t.Fatalf("one shopper got tokens %v", ids)
			}
		}
	}
	runAudit(t, a)
}

// TestRestartKeepsEverything: a clean stop and start on the same data keeps
// sales, tokens (still valid) and orders.
func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, app.Config{Data: dir})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 3})
	_, sess := c.session()
	tok := c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil)
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b := startApp(t, app.Config{Data: dir})
	c = newClient(t, b)
	if b.AdminToken != a.AdminToken {
		t.Errorf("admin token changed over a restart")
	}
	again := c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil)
	if again.Status != http.StatusOK || again.str("token") != tok.str("token") {
		t.Fatalf("after restart: %d %s", again.Status, again.Raw)
	}
	r := c.do("POST", "/api/v1/sales/s/purchases", sess, map[string]string{"X-Purchase-Token": tok.str("token")}, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("purchase after restart: %d %s", r.Status, r.Raw)
	}
	runAudit(t, b)
}

// TestStartFailsCleanly: a start that cannot complete returns its error (and
// releases what it took) instead of panicking.
func TestStartFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	startApp(t, app.Config{Data: dir})
	_, err := app.Start(context.Background(), app.Config{Data: dir, HTTP: "127.0.0.1:0", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !errors.Is(err, app.ErrLocked) {
		t.Fatalf("second start on a data directory in use: %v, want ErrLocked", err)
	}
	_, err = app.Start(context.Background(), app.Config{Data: t.TempDir(), HTTP: "256.0.0.1:80", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("bad listen address: %v", err)
	}
}

// TestSleepingSaleWakes: a sale whose writer fell asleep (--writer-idle)
// answers its next shoppers as before: a token request and a purchase each
// wake a new writer, which loads the sale; a token issued before the sleep
// is still known and redeemable, and the audit holds.
func TestSleepingSaleWakes(t *testing.T) {
	// A decision wait long enough for a wake on a busy machine: a 202 would
	// not say whether the sale woke.
	a := startApp(t, app.Config{WriterIdle: 300 * time.Millisecond, DecisionWait: 20 * time.Second})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 3})
	_, first := c.session()
	tok := c.do("POST", "/api/v1/sales/s/tokens", first, nil, nil)
	if tok.Status != http.StatusCreated {
		t.Fatalf("token: %d %s", tok.Status, tok.Raw)
	}
	asleep := func() error {
		if s := a.Asleep(); len(s) != 1 || s[0] != "s" {
			return fmt.Errorf("asleep: %v", s)
		}
		return nil
	}
	waitFor(t, 10*time.Second, asleep)
	_, second := c.session()
	if r := c.do("POST", "/api/v1/sales/s/tokens", second, nil, nil); r.Status != http.StatusCreated {
		t.Fatalf("token for a sleeping sale: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 10*time.Second, asleep)
	r := c.do("POST", "/api/v1/sales/s/purchases", first, map[string]string{"X-Purchase-Token": tok.str("token")}, nil)
	if r.Status != http.StatusAccepted || r.str("status") != "accepted" || r.str("orderId") == "" {
		t.Fatalf("purchase with a token issued before the sleep: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 10*time.Second, asleep)
	if again := c.do("POST", "/api/v1/sales/s/tokens", first, nil, nil); again.Status != http.StatusConflict || again.str("error") != "limit_reached" {
		t.Fatalf("a token for a shopper who bought: %d %s, want 409 limit_reached", again.Status, again.Raw)
	}
	waitFor(t, 10*time.Second, func() error { // readiness keeps its answer for a second
		r := c.do("GET", "/readyz", "", nil, nil)
		if checks, _ := r.Body["checks"].(map[string]any); !strings.Contains(fmt.Sprint(checks["writers"]), "1 of them asleep") {
			return fmt.Errorf("readiness does not count the sleeping writer: %s", r.Raw)
		}
		return nil
	})
	runAudit(t, a)
}
