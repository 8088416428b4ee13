package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/bench/internal/redisproc"
)

// clock is a settable clock for the server under test.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time               { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration)          { c.ns.Add(int64(d)) }
func newClock(t time.Time) *clock             { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) after(d time.Duration) string { return c.now().Add(d).UTC().Format(time.RFC3339Nano) }

// startRedis runs a private redis-server for the test, or skips the test
// when there is none on PATH.
func startRedis(t *testing.T) *redisproc.Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not on PATH, so the Redis-Lua reference's scripts are not tested (Debian: apt-get install redis-server; make bench installs it)")
	}
	rs, err := redisproc.Start(context.Background(), redisproc.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Stop)
	return rs
}

// refClient talks to a reference server under test.
type refClient struct {
	t     *testing.T
	url   string
	admin string
}

func newRef(t *testing.T, now func() time.Time) *refClient {
	t.Helper()
	rs := startRedis(t)
	s, err := newRedisServer(context.Background(), redisConfig{Addr: rs.Addr, Pool: 64, AdminToken: "admin", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return &refClient{t: t, url: hs.URL, admin: "admin"}
}

// do makes a request and decodes the JSON answer into a map.
func (c *refClient) do(method, path, bearer string, hdr map[string]string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		c.t.Errorf("%s %s: status %d, body not JSON: %v", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

func (c *refClient) createSale(body map[string]any) {
	c.t.Helper()
	if code, out := c.do("POST", "/api/v1/admin/sales", c.admin, nil, body); code != http.StatusCreated {
		c.t.Fatalf("create sale: %d %v", code, out)
	}
}

func (c *refClient) session() (shopper, session string) {
	c.t.Helper()
	code, out := c.do("POST", "/api/v1/session", "", nil, nil)
	if code != http.StatusCreated {
		c.t.Fatalf("session: %d %v", code, out)
	}
	return out["shopper"].(string), out["session"].(string)
}

type figures struct {
	Stock, Quota, Sold, TokensIssued, TokensExpired, TokensOutstanding int64
}

func (c *refClient) figures(sale string) figures {
	c.t.Helper()
	code, out := c.do("GET", "/api/v1/admin/sales/"+sale, c.admin, nil, nil)
	if code != http.StatusOK {
		c.t.Fatalf("figures: %d %v", code, out)
	}
	b, _ := json.Marshal(out)
	var f figures
	_ = json.Unmarshal(b, &f)
	return f
}

type answer struct {
	code     int
	shopper  string
	tokenID  string
	token    string
	orderID  string
	errCode  string
	response map[string]any
}

func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

// TestScriptsUnderConcurrency races 200 shoppers, three requests each at
// once, for 60 tokens (stock 50 x the default buffer 1.2), then every holder
// buys twice at once: no shopper gets two tokens, no more tokens than the
// quota, no more sales than the stock.
func TestScriptsUnderConcurrency(t *testing.T) {
	c := newRef(t, nil)
	c.createSale(map[string]any{"id": "race", "stock": 50})
	const shoppers, tries = 200, 3
	type shopper struct{ id, session string }
	ss := make([]shopper, shoppers)
	for i := range ss {
		ss[i].id, ss[i].session = c.session()
	}
	answers := make(chan answer, shoppers*tries)
	var wg sync.WaitGroup
	for _, s := range ss {
		for range tries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, out := c.do("POST", "/api/v1/sales/race/tokens", s.session, nil, nil)
				answers <- answer{code: code, shopper: s.id, tokenID: str(out, "tokenId"), token: str(out, "token"), errCode: str(out, "error"), response: out}
			}()
		}
	}
	wg.Wait()
	close(answers)
	tokenOf := map[string]string{} // shopper -> token id
	ownerOf := map[string]string{} // token id -> shopper
	tokens := map[string]string{}  // shopper -> token
	counts := map[int]int{}
	for a := range answers {
		counts[a.code]++
		switch a.code {
		case http.StatusCreated, http.StatusOK:
			if prev, ok := tokenOf[a.shopper]; ok && prev != a.tokenID {
				t.Errorf("shopper %s got two tokens: %s and %s", a.shopper, prev, a.tokenID)
			}
			if o, ok := ownerOf[a.tokenID]; ok && o != a.shopper {
				t.Errorf("token %s given to %s and %s", a.tokenID, o, a.shopper)
			}
			tokenOf[a.shopper], ownerOf[a.tokenID], tokens[a.shopper] = a.tokenID, a.shopper, a.token
			want := "issued"
			if a.code == http.StatusOK {
				want = "already_issued"
			}
			if got := str(a.response, "status"); got != want {
				t.Errorf("status %d with status %q", a.code, got)
			}
		case http.StatusGone:
			if a.errCode != "quota_exhausted" {
				t.Errorf("410 %q, want quota_exhausted", a.errCode)
			}
		default:
			t.Errorf("token answer %d %v", a.code, a.response)
		}
	}
	if counts[http.StatusCreated] != 60 || len(tokenOf) != 60 {
		t.Errorf("201 x%d to %d shoppers, want 60 (the quota): %v", counts[http.StatusCreated], len(tokenOf), counts)
	}
	f := c.figures("race")
	if f.Stock != 50 || f.Quota != 60 || f.TokensIssued != 60 || f.TokensOutstanding != 60 || f.Sold != 0 {
		t.Errorf("after the token race: %+v", f)
	}

	// Every holder buys twice at once.
	buys := make(chan answer, 2*len(tokens))
	for id, tok := range tokens {
		var session string
		for _, s := range ss {
			if s.id == id {
				session = s.session
			}
		}
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, out := c.do("POST", "/api/v1/sales/race/purchases", session, map[string]string{"X-Purchase-Token": tok}, nil)
				buys <- answer{code: code, shopper: id, orderID: str(out, "orderId"), errCode: str(out, "error"), response: out}
			}()
		}
	}
	wg.Wait()
	close(buys)
	orders := map[string]string{} // shopper -> order
	counts = map[int]int{}
	for a := range buys {
		counts[a.code]++
		switch {
		case a.code == http.StatusAccepted:
			if prev, ok := orders[a.shopper]; ok {
				t.Errorf("shopper %s bought twice: %s and %s", a.shopper, prev, a.orderID)
			}
			orders[a.shopper] = a.orderID
		case a.code == http.StatusConflict && a.errCode == "token_used":
		case a.code == http.StatusGone && a.errCode == "sold_out":
		default:
			t.Errorf("purchase answer %d %v", a.code, a.response)
		}
	}
	if len(orders) != 50 {
		t.Errorf("%d orders, want 50 (the stock): %v", len(orders), counts)
	}
	f = c.figures("race")
	if f.Sold != 50 || f.TokensOutstanding != 10 || f.TokensIssued != 60 {
		t.Errorf("after the purchases: %+v", f)
	}
	// A buyer at their limit, and a newcomer after the sale sold out.
	for _, s := range ss {
		if _, ok := orders[s.id]; ok {
			if code, out := c.do("POST", "/api/v1/sales/race/tokens", s.session, nil, nil); code != http.StatusConflict || str(out, "error") != "limit_reached" {
				t.Errorf("a buyer asks again: %d %v, want 409 limit_reached", code, out)
			}
			break
		}
	}
	_, session := c.session()
	if code, out := c.do("POST", "/api/v1/sales/race/tokens", session, nil, nil); code != http.StatusGone || str(out, "error") != "sold_out" {
		t.Errorf("after the sale sold out: %d %v, want 410 sold_out", code, out)
	}
}

// TestScriptsExpiryAndSchedule: an expired token's quota comes back to the
// next shopper and the token buys nothing; a sale answers by its schedule.
func TestScriptsExpiryAndSchedule(t *testing.T) {
	clk := newClock(time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC))
	c := newRef(t, clk.now)
	c.createSale(map[string]any{"id": "one", "stock": 1, "quotaBuffer": 1.0, "tokenTTL": "2s"})
	_, a := c.session()
	_, b := c.session()
	code, out := c.do("POST", "/api/v1/sales/one/tokens", a, nil, nil)
	if code != http.StatusCreated {
		t.Fatalf("a's token: %d %v", code, out)
	}
	aToken := str(out, "token")
	if got, want := str(out, "expiresAt"), "2030-01-01T10:00:02Z"; got != want {
		t.Errorf("expiresAt %s, want %s", got, want)
	}
	if code, out := c.do("POST", "/api/v1/sales/one/tokens", b, nil, nil); code != http.StatusGone || str(out, "error") != "quota_exhausted" {
		t.Errorf("b while a holds the only token: %d %v", code, out)
	}
	clk.add(2 * time.Second) // a's token expires
	code, out = c.do("POST", "/api/v1/sales/one/tokens", b, nil, nil)
	if code != http.StatusCreated {
		t.Fatalf("b after a's token expired: %d %v", code, out)
	}
	bToken := str(out, "token")
	if f := c.figures("one"); f.TokensIssued != 2 || f.TokensExpired != 1 || f.TokensOutstanding != 1 {
		t.Errorf("after the expiry: %+v", f)
	}
	if code, out := c.do("POST", "/api/v1/sales/one/purchases", a, map[string]string{"X-Purchase-Token": aToken}, nil); code != http.StatusUnauthorized || str(out, "error") != "token_expired" {
		t.Errorf("a buys with an expired token: %d %v", code, out)
	}
	if code, out := c.do("POST", "/api/v1/sales/one/purchases", a, map[string]string{"X-Purchase-Token": bToken}, nil); code != http.StatusForbidden || str(out, "error") != "token_not_yours" {
		t.Errorf("a buys with b's token: %d %v", code, out)
	}
	if code, out := c.do("POST", "/api/v1/sales/one/purchases", b, map[string]string{"X-Purchase-Token": bToken}, nil); code != http.StatusAccepted {
		t.Errorf("b buys: %d %v", code, out)
	}
	if code, out := c.do("POST", "/api/v1/sales/one/tokens", a, nil, nil); code != http.StatusGone || str(out, "error") != "sold_out" {
		t.Errorf("a after b bought the only unit: %d %v", code, out)
	}
	if f := c.figures("one"); f.Sold != 1 || f.TokensOutstanding != 0 {
		t.Errorf("at the end: %+v", f)
	}

	c.createSale(map[string]any{"id": "later", "stock": 5, "opensAt": clk.after(time.Hour), "closesAt": clk.after(2 * time.Hour)})
	if code, out := c.do("POST", "/api/v1/sales/later/tokens", a, nil, nil); code != http.StatusTooEarly || str(out, "error") != "not_open" {
		t.Errorf("before the opening: %d %v", code, out)
	}
	clk.add(90 * time.Minute)
	if code, out := c.do("POST", "/api/v1/sales/later/tokens", a, nil, nil); code != http.StatusCreated {
		t.Errorf("while open: %d %v", code, out)
	}
	clk.add(time.Hour)
	if code, out := c.do("POST", "/api/v1/sales/later/tokens", b, nil, nil); code != http.StatusGone || str(out, "error") != "closed" {
		t.Errorf("after the close: %d %v", code, out)
	}
	if code, out := c.do("POST", "/api/v1/sales/nope/tokens", b, nil, nil); code != http.StatusNotFound {
		t.Errorf("no such sale: %d %v", code, out)
	}
	if code, _ := c.do("POST", "/api/v1/admin/sales", "wrong", nil, map[string]any{"id": "x", "stock": 1}); code != http.StatusUnauthorized {
		t.Errorf("a wrong admin token: %d", code)
	}
	if code, out := c.do("POST", "/api/v1/admin/sales", c.admin, nil, map[string]any{"id": "one", "stock": 1}); code != http.StatusConflict {
		t.Errorf("a second sale one: %d %v", code, out)
	}
}

func TestBare(t *testing.T) {
	hs := httptest.NewServer(bareHandler())
	defer hs.Close()
	for _, path := range []string{"/api/v1/session", "/api/v1/sales/x/tokens", "/anything"} {
		resp, err := http.Post(hs.URL+path, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusCreated || out["session"] == nil || out["token"] == nil {
			t.Errorf("%s: %d %v %v", path, resp.StatusCode, out, err)
		}
	}
}
