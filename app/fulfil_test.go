package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/fulfil"
	"github.com/flashgate/flashgate/provider/fake"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// startProvider runs a fake provider on loopback and returns its URL and a
// file holding its client secret.
func startProvider(t *testing.T, c fake.Config) (*fake.Provider, string, string) {
	t.Helper()
	c.ClientID, c.ClientSecret = app.DefaultProviderClientID, "s3cret"
	p, err := fake.New(c)
	if err != nil {
		t.Fatal(err)
	}
	u, stop, err := fake.Listen(context.Background(), "127.0.0.1:0", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	return p, u, secretFile(t, "s3cret")
}

func secretFile(t *testing.T, secret string) string {
	f := filepath.Join(t.TempDir(), "provider-secret")
	if err := os.WriteFile(f, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// buyOne takes a session, a token and buys on c; it returns the session and
// the order id.
func buyOne(t *testing.T, c *client, sale string) (session, order string) {
	t.Helper()
	_, session = c.session()
	tok := c.do("POST", "/api/v1/sales/"+sale+"/tokens", session, nil, nil)
	if tok.Status != http.StatusCreated {
		t.Errorf("token: %d %s", tok.Status, tok.Raw)
		return session, ""
	}
	r := c.do("POST", "/api/v1/sales/"+sale+"/purchases", session, map[string]string{"X-Purchase-Token": tok.str("token")}, nil)
	if r.Status != http.StatusAccepted || r.str("orderId") == "" {
		t.Errorf("purchase: %d %s", r.Status, r.Raw)
		return session, ""
	}
	return session, r.str("orderId")
}

// orderOutcomes reads every order outcome event of the installation.
func orderOutcomes(t *testing.T, js jetstream.JetStream) map[string][]events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]events.Event{}
	last, err := st.GetLastMsgForSubject(ctx, events.SubjectOrdAll)
	if err != nil {
		t.Fatalf("no order outcome: %v", err)
	}
	err = stream.Read(ctx, st, events.SubjectOrdAll, 1, last.Sequence, func(m *jetstream.RawStreamMsg) error {
		e, err := events.DecodeEvent(m.Data)
		if err != nil {
			return err
		}
		out[e.Request] = append(out[e.Request], e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFulfilmentStormTwoProcesses is the renewal storm with two flashgate
// processes: 500 orders bought at once on both, the provider's tokens live
// 2 s and each renewal revokes the last, 5% of its answers are spurious
// 401s and 5% are 503s. No ban, the token requests within the budget (1/s
// for the whole installation), every order confirmed exactly once, and the
// audit passes.
func TestFulfilmentStormTwoProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("a 500-order storm")
	}
	ns := startNATS(t)
	p, url, secret := startProvider(t, fake.Config{TokenTTL: 2 * time.Second, RevokeOnRenew: true, Unauthorized: 0.05, FailShare: 0.05, Seed: 11})
	cfg := app.Config{NATSURL: ns.ClientURL(), ProviderURL: url, ProviderSecretFile: secret}
	a := startApp(t, cfg)
	b := startPeer(t, a, ns.ClientURL(), cfg)
	ca, cb := newClient(t, a), newClient(t, b)
	ca.createSale(a.AdminToken, map[string]any{"id": "storm", "stock": 500, "tokenTTL": "10m"})
	waitFor(t, 10*time.Second, func() error { // b learns of the sale from the stream
		if _, ok := b.Front.Sale("storm"); !ok {
			return errors.New("b does not know the sale yet")
		}
		return nil
	})
	start := time.Now()
	const n = 500
	orders := make([]string, n)
	sessions := make([]string, n)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				c := ca
				if i%2 == 1 {
					c = cb
				}
				sessions[i], orders[i] = buyOne(t, c, "storm")
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	st, err := a.JS.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 120*time.Second, func() error {
		left := 0
		for _, o := range orders {
			s, err := fulfil.ReadState(context.Background(), st, "storm", o)
			if err != nil {
				return err
			}
			if s.Status != fulfil.StatusConfirmed {
				left++
			}
		}
		if left > 0 {
			return fmt.Errorf("%d of %d orders not confirmed; provider %+v", left, n, p.Stats())
		}
		return nil
	})
	elapsed := time.Since(start)
	stats := p.Stats()
	t.Logf("%d orders through two processes in %v: %+v", n, elapsed.Round(time.Millisecond), stats)
	if stats.Bans != 0 || stats.TokenRequestsDuringBan != 0 || stats.OrderCallsDuringBan != 0 {
		t.Fatalf("the provider banned us: %+v", stats)
	}
	if limit := int(elapsed.Seconds()) + 2; stats.TokenRequests > limit {
		t.Fatalf("%d token requests in %v: over the budget of 1/s", stats.TokenRequests, elapsed)
	}
	if stats.MaxInWindow > stats.Quota/2 {
		t.Fatalf("%d token requests in one window (quota %d): the budget's margin is gone", stats.MaxInWindow, stats.Quota)
	}
	if stats.SpuriousUnauthorized == 0 || stats.Failures == 0 || stats.TokensIssued < 3 {
		t.Fatalf("no storm: %+v", stats)
	}
	if stats.OrdersAccepted != n {
		t.Fatalf("the provider has %d orders, want %d", stats.OrdersAccepted, n)
	}
	out := orderOutcomes(t, a.JS)
	taken := p.Orders()
	for _, o := range orders {
		confirmed := 0
		for _, e := range out[o] {
			if e.Type == events.TypeOrderConfirmed {
				confirmed++
				if ref := e.Data.(*events.OrderConfirmed).Reference; taken[o].Reference != ref {
					t.Fatalf("order %s confirmed as %s, the provider says %s", o, ref, taken[o].Reference)
				}
			}
		}
		if confirmed != 1 {
			t.Fatalf("order %s confirmed %d times", o, confirmed)
		}
	}
	// The shopper sees it on either process.
	if r := cb.do("GET", "/api/v1/orders/"+orders[0], sessions[0], nil, nil); r.Status != http.StatusOK || r.str("status") != "confirmed" || r.str("reference") != taken[orders[0]].Reference {
		t.Fatalf("order on the other process: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 30*time.Second, func() error { // the views have caught up
		c, err := a.Store.OrderCounts(context.Background(), "storm")
		if err != nil || c.Confirmed != n {
			return fmt.Errorf("orders view: %+v %v", c, err)
		}
		return nil
	})
	rep := runAudit(t, a)
	if len(rep.Sales) == 0 {
		t.Fatal("the audit saw no sale")
	}
}

// sseEvents reads the order events of an SSE answer until it ends or the
// deadline.
func sseEvents(t *testing.T, url, session string, deadline time.Duration, each func(map[string]any) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("order events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "order":
			var m map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m); err != nil {
				t.Fatalf("order event %q: %v", line, err)
			}
			if !each(m) {
				return
			}
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("the order stream did not end within %v", deadline)
	}
}

// TestOrderEventsThroughABan: the provider bans; the shopper's order stream
// says delayed (with the ban's end), no token request is made meanwhile, and
// the stream carries the confirmation after it and ends.
func TestOrderEventsThroughABan(t *testing.T) {
	p, url, secret := startProvider(t, fake.Config{})
	p.Ban(3 * time.Second)
	a := startApp(t, app.Config{ProviderURL: url, ProviderSecretFile: secret})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 5, "tokenTTL": "10m"})
	session, order := buyOne(t, c, "s")
	if order == "" {
		t.FailNow()
	}
	var seen []string
	sseEvents(t, a.URL+"/api/v1/orders/"+order+"/events", session, 30*time.Second, func(m map[string]any) bool {
		status, _ := m["status"].(string)
		if len(seen) == 0 || seen[len(seen)-1] != status {
			seen = append(seen, status)
		}
		if status == "delayed" {
			if until, _ := m["delayedUntil"].(string); until == "" {
				t.Errorf("delayed without its end: %v", m)
			}
			if s := p.Stats(); s.TokenRequestsDuringBan > 1 {
				t.Errorf("%d token requests during the ban", s.TokenRequestsDuringBan)
			}
		}
		if status == "confirmed" && !strings.HasPrefix(fmt.Sprint(m["reference"]), "P-") {
			t.Errorf("confirmed without a reference: %v", m)
		}
		return true // the stream ends after the confirmation
	})
	if !strings.Contains(strings.Join(seen, ","), "delayed") || seen[len(seen)-1] != "confirmed" {
		t.Fatalf("statuses seen %v, want delayed then confirmed", seen)
	}
	if s := p.Stats(); s.TokenRequestsDuringBan != 1 || s.OrdersAccepted != 1 {
		t.Fatalf("provider: %+v", s)
	}
	// Another shopper's order is not theirs to watch.
	_, other := c.session()
	if r := c.do("GET", "/api/v1/orders/"+order+"/events", other, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("another shopper's order stream: %d %s", r.Status, r.Raw)
	}
}

// rejecter is a provider whose orders endpoint refuses every order (422)
// until told to take them.
type rejecter struct {
	take  atomic.Bool
	taken atomic.Int64
}

func (r *rejecter) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case req.URL.Path == "/oauth/token":
		fmt.Fprint(w, `{"access_token":"t","token_type":"Bearer","expires_in":3600}`)
	case req.URL.Path == "/v1/orders" && !r.take.Load():
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprint(w, `{"error":"unknown_item"}`)
	default:
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"reference":"R-%d"}`, r.taken.Add(1))
	}
}

// TestDeadLetterAdmin: an order the provider refuses lands in the
// dead-letter stream at once; the shopper sees it failed; an operator lists
// it and sends it back; it is confirmed; the audit follows.
func TestDeadLetterAdmin(t *testing.T) {
	rj := &rejecter{}
	srv := httptest.NewServer(rj)
	t.Cleanup(srv.Close)
	a := startApp(t, app.Config{ProviderURL: srv.URL, ProviderSecretFile: secretFile(t, "x")})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 5, "tokenTTL": "10m"})
	session, order := buyOne(t, c, "s")
	if order == "" {
		t.FailNow()
	}
	waitFor(t, 20*time.Second, func() error {
		r := c.do("GET", "/api/v1/orders/"+order, session, nil, nil)
		if r.str("status") != "failed" || r.str("failedReason") != "rejected" {
			return fmt.Errorf("order: %d %s", r.Status, r.Raw)
		}
		return nil
	})
	// OrderFailed is recorded before the dead-letter entry is written: the
	// entry may follow the status by a moment.
	waitFor(t, 10*time.Second, func() error {
		r := c.do("GET", "/api/v1/admin/orders/dlq?sale=s", a.AdminToken, nil, nil)
		list, _ := r.Body["orders"].([]any)
		if r.Status != http.StatusOK || r.Body["total"] != 1.0 || len(list) != 1 || list[0].(map[string]any)["orderId"] != order {
			return fmt.Errorf("dead letters: %d %s", r.Status, r.Raw)
		}
		return nil
	})
	if r := c.do("GET", "/api/v1/admin/orders/dlq?limit=0", a.AdminToken, nil, nil); r.Status != http.StatusBadRequest {
		t.Fatalf("limit 0: %d %s", r.Status, r.Raw)
	}
	if r := c.do("GET", "/api/v1/admin/orders/dlq", session, nil, nil); r.Status != http.StatusUnauthorized && r.Status != http.StatusForbidden {
		t.Fatalf("a shopper lists the dead letters: %d", r.Status)
	}
	rj.take.Store(true)
	if r := c.do("POST", "/api/v1/admin/orders/dlq/"+order+"/retry", a.AdminToken, nil, nil); r.Status != http.StatusOK || r.Body["requeued"] != 1.0 {
		t.Fatalf("retry: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/v1/admin/orders/dlq/"+order+"/retry", a.AdminToken, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("retry again: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 20*time.Second, func() error {
		r := c.do("GET", "/api/v1/orders/"+order, session, nil, nil)
		if r.str("status") != "confirmed" || r.str("reference") != "R-1" {
			return fmt.Errorf("order: %d %s", r.Status, r.Raw)
		}
		return nil
	})
	if r := c.do("GET", "/api/v1/admin/orders/dlq", a.AdminToken, nil, nil); r.Body["total"] != 0.0 {
		t.Fatalf("dead letters after the retry: %s", r.Raw)
	}
	evs := orderOutcomes(t, a.JS)[order]
	var types []string
	for _, e := range evs {
		types = append(types, string(e.Type))
	}
	if got := strings.Join(types, ","); got != "OrderFailed,OrderRequeued,OrderConfirmed" {
		t.Fatalf("outcomes %s", got)
	}
	waitFor(t, 30*time.Second, func() error {
		o, err := a.Store.Order(context.Background(), order)
		if err != nil || o.Status != "confirmed" {
			return fmt.Errorf("orders view: %+v %v", o, err)
		}
		return nil
	})
	runAudit(t, a)
}
