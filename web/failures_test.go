package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/flashgate/flashgate/web"
)

// fakeAPI answers the shopper's calls with scripted replies, so the page's
// handling of each failure can be driven on purpose. Each sale id is a
// scenario; a script is a list of replies taken in turn (the last repeats).
type fakeAPI struct {
	mu      sync.Mutex
	scripts map[string][]fakeReply // "sale tokens", "sale purchases", "requests id", "orders id", "events id"
	calls   map[string][]time.Time
}

type fakeReply struct {
	status int
	header map[string]string
	body   map[string]any
	drop   bool // close the connection without an answer
	// events makes the reply a 200 text/event-stream of "order" events,
	// each sent as it comes; the stream ends when the channel closes or
	// after a confirmed order.
	events <-chan map[string]any
}

func (f *fakeAPI) next(key string) (fakeReply, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[key] = append(f.calls[key], time.Now())
	s := f.scripts[key]
	if len(s) == 0 {
		return fakeReply{}, false
	}
	r := s[0]
	if len(s) > 1 {
		f.scripts[key] = s[1:]
	}
	return r, true
}

func (f *fakeAPI) count(key string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls[key]...)
}

func writeReply(w http.ResponseWriter, r fakeReply) {
	if r.drop {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
	}
	for k, v := range r.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status)
	_ = json.NewEncoder(w).Encode(r.body)
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/time", func(w http.ResponseWriter, r *http.Request) {
		writeReply(w, fakeReply{status: 200, body: map[string]any{"unixMs": time.Now().UnixMilli()}})
	})
	mux.HandleFunc("POST /api/v1/session", func(w http.ResponseWriter, r *http.Request) {
		writeReply(w, fakeReply{status: 201, body: map[string]any{"shopper": "shopper-1", "session": "session-1",
			"expiresAt": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}})
	})
	mux.HandleFunc("GET /api/v1/sales/{sale}", func(w http.ResponseWriter, r *http.Request) {
		// After the refusal, the sale reads as the refusal said.
		state, sale := "open", r.PathValue("sale")
		if after, ok := map[string]string{"closed": "closed", "soldout": "sold_out", "refusedlater": "sold_out"}[sale]; ok && len(f.count(sale+" tokens")) > 0 {
			state = after
		}
		writeReply(w, fakeReply{status: 200, body: map[string]any{"id": sale, "state": state, "stock": 10,
			"stockLeft": 7, "quota": 12, "quotaLeft": 3, "tokensOutstanding": 2, "perUserLimit": 1, "tokenTTL": "5m0s",
			"opensAt": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano), "closesAt": nil}})
	})
	scripted := func(suffix string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			key := r.PathValue("sale") + " " + suffix
			if suffix == "requests" {
				key = "requests " + r.PathValue("id")
			}
			rep, ok := f.next(key)
			if !ok {
				rep = fakeReply{status: 500, body: map[string]any{"error": "internal", "message": "no script for " + key}}
			}
			writeReply(w, rep)
		}
	}
	mux.HandleFunc("POST /api/v1/sales/{sale}/tokens", scripted("tokens"))
	mux.HandleFunc("POST /api/v1/sales/{sale}/purchases", scripted("purchases"))
	mux.HandleFunc("GET /api/v1/requests/{id}", scripted("requests"))
	mux.HandleFunc("GET /api/v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		rep, ok := f.next("orders " + r.PathValue("id"))
		if !ok {
			rep = fakeReply{status: 200, body: orderJSON(r.PathValue("id"), "accepted")}
		}
		writeReply(w, rep)
	})
	mux.HandleFunc("GET /api/v1/orders/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		rep, ok := f.next("events " + r.PathValue("id"))
		if !ok {
			rep = refused(http.StatusNotFound, "order_not_found")
		}
		if rep.events == nil {
			writeReply(w, rep)
			return
		}
		writeEvents(w, r, rep.events)
	})
	return mux
}

// writeEvents answers an order stream as the API does: "order" events with
// the order's JSON, ending after a confirmed one (or when events closes, or
// the page goes).
func writeEvents(w http.ResponseWriter, r *http.Request, events <-chan map[string]any) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	for seq := 1; ; seq++ {
		select {
		case ev, open := <-events:
			if !open {
				return
			}
			b, _ := json.Marshal(ev)
			if _, err := fmt.Fprintf(w, "event: order\nid: %d\ndata: %s\n\n", seq, b); err != nil || rc.Flush() != nil || ev["status"] == "confirmed" {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// orderJSON is an order as GET /api/v1/orders/{id} shows it, with status
// and the fields in kv (key, value, ...).
func orderJSON(id, status string, kv ...any) map[string]any {
	o := map[string]any{"orderId": id, "sale": "x", "status": status, "tokenId": "t", "units": 1,
		"createdAt": time.Now().UTC().Format(time.RFC3339Nano), "attempts": 0}
	for i := 0; i+1 < len(kv); i += 2 {
		o[kv[i].(string)] = kv[i+1]
	}
	return o
}

func issued() fakeReply {
	return fakeReply{status: 201, body: map[string]any{"token": "tok", "tokenId": "t1", "status": "issued",
		"expiresAt": time.Now().Add(5 * time.Minute).UTC().Format(time.RFC3339)}}
}

func accepted(order string) fakeReply {
	return fakeReply{status: 202, body: map[string]any{"orderId": order, "status": "accepted"}}
}

func refused(status int, code string, extra ...any) fakeReply {
	b := map[string]any{"error": code, "message": strings.ReplaceAll(code, "_", " ")}
	for i := 0; i+1 < len(extra); i += 2 {
		b[extra[i].(string)] = extra[i+1]
	}
	return fakeReply{status: status, body: b}
}

func busy(status int, seconds string) fakeReply {
	return fakeReply{status: status, header: map[string]string{"Retry-After": seconds},
		body: map[string]any{"error": "rate_limited", "message": "slow down"}}
}

// TestShopperFailures drives each failure a shopper can hit and checks the
// message, the next step offered, and that the page never hammers.
func TestShopperFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the page's own logic has no Go concurrency for the race detector to check")
	}
	browser := startBrowser(t)
	f := &fakeAPI{scripts: map[string][]fakeReply{}, calls: map[string][]time.Time{}}
	mux := http.NewServeMux()
	mux.Handle("/api/", f.handler())
	mux.Handle("/", web.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		sale      string
		tokens    []fakeReply
		purchases []fakeReply
		requests  map[string][]fakeReply
		message   string // the message shows this
		retry     bool   // a retry button is offered
		buyOff    bool   // the buy button stays disabled
		order     string // this order is shown
		check     func(t *testing.T)
	}{
		{sale: "quota", tokens: []fakeReply{refused(410, "quota_exhausted")},
			message: "All tokens are held right now", retry: true},
		{sale: "soldout", tokens: []fakeReply{issued()}, purchases: []fakeReply{refused(410, "sold_out")},
			message: "Sold out", buyOff: true},
		{sale: "closed", tokens: []fakeReply{refused(410, "sale_closed")},
			message: "This sale has closed", buyOff: true},
		{sale: "limit", tokens: []fakeReply{refused(409, "limit_reached")},
			message: "already bought", buyOff: true},
		{sale: "used", tokens: []fakeReply{issued()}, purchases: []fakeReply{refused(409, "token_used", "orderId", "order-used")},
			message: "Order placed", order: "order-used"},
		{sale: "expired", tokens: []fakeReply{issued()},
			purchases: []fakeReply{refused(401, "token_expired"), accepted("order-2")},
			message:   "Order placed", order: "order-2",
			check: func(t *testing.T) {
				if n := len(f.count("expired tokens")); n != 2 {
					t.Errorf("%d token requests, want 2 (a new token after the expired one)", n)
				}
			}},
		{sale: "pending",
			tokens:    []fakeReply{{status: 202, body: map[string]any{"requestId": "r1", "status": "pending"}}},
			purchases: []fakeReply{{status: 202, body: map[string]any{"requestId": "r2", "status": "pending"}}},
			requests: map[string][]fakeReply{
				"r1": {{status: 200, body: map[string]any{"requestId": "r1", "status": "pending"}},
					{status: 200, body: map[string]any{"requestId": "r1", "status": "issued", "token": "tok"}}},
				"r2": {{status: 404, body: map[string]any{"error": "request_not_found"}},
					{status: 200, body: map[string]any{"requestId": "r2", "status": "accepted", "orderId": "order-3"}}},
			},
			message: "Order placed", order: "order-3"},
		{sale: "refusedlater",
			tokens: []fakeReply{{status: 202, body: map[string]any{"requestId": "r3", "status": "pending"}}},
			requests: map[string][]fakeReply{
				"r3": {{status: 200, body: map[string]any{"requestId": "r3", "status": "refused", "error": "sold_out", "httpStatus": 410}}},
			},
			message: "Sold out", buyOff: true},
		{sale: "busyonce", tokens: []fakeReply{busy(429, "1"), issued()}, purchases: []fakeReply{accepted("order-4")},
			message: "Order placed", order: "order-4",
			check: func(t *testing.T) {
				c := f.count("busyonce tokens")
				if len(c) != 2 || c[1].Sub(c[0]) < 900*time.Millisecond {
					t.Errorf("token requests at %v: want 2, the second after Retry-After (1 s)", c)
				}
			}},
		{sale: "busy", tokens: []fakeReply{busy(503, "2")},
			message: "still too busy", retry: true,
			check: func(t *testing.T) {
				time.Sleep(500 * time.Millisecond)
				if c := f.count("busy tokens"); len(c) != 2 || c[1].Sub(c[0]) < 1900*time.Millisecond {
					t.Errorf("token requests at %v: want exactly 2 (one automatic retry after Retry-After 2 s)", c)
				}
			}},
		{sale: "offline", tokens: []fakeReply{{drop: true}},
			message: "could not reach the shop", retry: true},
	} {
		t.Run(tc.sale, func(t *testing.T) {
			t.Parallel()
			f.mu.Lock()
			f.scripts[tc.sale+" tokens"] = tc.tokens
			f.scripts[tc.sale+" purchases"] = tc.purchases
			for id, s := range tc.requests {
				f.scripts["requests "+id] = s
			}
			f.mu.Unlock()
			p := newTab(t, browser, 375, 812)
			p.do("open the sale", chromedp.Navigate(srv.URL+"/sales/"+tc.sale), chromedp.WaitEnabled(chromedp.ID("buy")))
			p.do("buy", chromedp.Click(chromedp.ID("buy")))
			// Wait for the final answer (not the intermediate "trying again" ones).
			msg := p.waitFor("the message", fmt.Sprintf(`%s.includes(%q) && !document.getElementById('buy').getAttribute('aria-busy').includes('true') && %s`,
				messageText, tc.message, messageText))
			if !strings.Contains(msg, tc.message) {
				t.Errorf("message %q", msg)
			}
			label := p.eval("label", `document.getElementById('buy').textContent`)
			if retry := strings.HasPrefix(label, "Try again"); retry != tc.retry {
				t.Errorf("button %q; want a retry button: %v (message %q)", label, tc.retry, msg)
			}
			if tc.retry {
				if !p.disabled("buy") {
					t.Error("the retry button is enabled at once: it must hold the shopper back for a while")
				}
				if tc.sale == "offline" { // a 2 s hold: then it may be pressed
					p.do("wait for the retry button", chromedp.WaitEnabled(chromedp.ID("buy")))
					if label := p.eval("label", `document.getElementById('buy').textContent`); label != "Try again" {
						t.Errorf("after the hold the button reads %q", label)
					}
				}
			}
			if tc.buyOff && !p.disabled("buy") {
				t.Error("the buy button is enabled")
			}
			if tc.order != "" {
				if got := p.eval("order", `document.getElementById('order-id').textContent`); got != tc.order {
					t.Errorf("order shown %q, want %q", got, tc.order)
				}
			}
			p.shot("shot-failure-" + tc.sale + ".png")
			if tc.check != nil {
				tc.check(t)
			}
			p.checkConsole()
		})
	}
}
