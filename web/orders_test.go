package web_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/flashgate/flashgate/web"
)

// orderState reads the order's status line (without the next step).
const orderState = `(document.getElementById('order-state').textContent || '')`

// TestOrderStatus follows a bought order on its way to the provider, with
// the fake API driving the order's stream step by step: the page shows each
// state as it comes, and polls when the stream is refused or not there yet.
func TestOrderStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the page's own logic has no Go concurrency for the race detector to check")
	}
	browser := startBrowser(t)
	f := &fakeAPI{scripts: map[string][]fakeReply{}, calls: map[string][]time.Time{}}
	mux := http.NewServeMux()
	mux.Handle("/api/", f.handler())
	mux.Handle("/", web.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections() // streams the pages left open
		srv.Close()
	})
	script := func(key string, replies ...fakeReply) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.scripts[key] = replies
	}
	// buy opens sale's page in a new tab and buys order there.
	buy := func(t *testing.T, sale, order string) *tab {
		t.Helper()
		script(sale+" tokens", issued())
		script(sale+" purchases", accepted(order))
		p := newTab(t, browser, 375, 812)
		p.do("open the sale", chromedp.Navigate(srv.URL+"/sales/"+sale), chromedp.WaitEnabled(chromedp.ID("buy")))
		p.do("buy", chromedp.Click(chromedp.ID("buy")))
		if got := p.waitFor("the order", `document.getElementById('order-id').textContent.trim()`); got != order {
			t.Fatalf("order shown %q, want %q", got, order)
		}
		return p
	}
	// shows waits until the status line starts with want and returns it.
	shows := func(p *tab, want string) string {
		p.t.Helper()
		return p.waitFor(fmt.Sprintf("the status line %q", want), fmt.Sprintf(`%s.startsWith(%q) && %s`, orderState, want, orderState))
	}

	// The stream goes accepted -> delayed (a ban) -> confirmed. Each state is
	// handed to the stream only once the page is connected and shows the one
	// before, so no step depends on timing.
	t.Run("Stream", func(t *testing.T) {
		t.Parallel()
		events := make(chan map[string]any)
		script("events order-s", fakeReply{events: events})
		p := buy(t, "stream", "order-s")
		send := func(ev map[string]any) {
			t.Helper()
			select {
			case events <- ev:
			case <-time.After(waitTimeout):
				t.Fatalf("the page did not read the order stream within %v (sending %v)", waitTimeout, ev["status"])
			}
		}
		shows(p, "Order accepted — sending it to the provider…")
		send(orderJSON("order-s", "accepted"))
		p.waitFor("the order's details", `document.getElementById('order-detail').textContent.startsWith('1 unit · placed')`)

		until := time.Now().Add(90 * time.Second).Truncate(time.Second)
		send(orderJSON("order-s", "delayed", "delayedUntil", until.UTC().Format(time.RFC3339)))
		// The time on the browser's clock face (its time zone may not be Go's).
		hms := p.eval("the delay's end", fmt.Sprintf(`((d) => [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':'))(new Date(%d))`, until.UnixMilli()))
		line := shows(p, "Delayed — the provider asks us to wait until "+hms)
		if !strings.Contains(line, "your order is safe") {
			t.Errorf("delayed line %q does not reassure", line)
		}
		if v := p.eval("status", `document.getElementById('order-status').dataset.status`); v != "delayed" {
			t.Errorf("status line data-status %q while delayed", v)
		}
		p.shot("shot-order-delayed.png")

		send(orderJSON("order-s", "retrying", "attempts", 1, "error", "provider 503", "retryAt", time.Now().Add(2*time.Second).UTC().Format(time.RFC3339)))
		shows(p, "Retrying (attempt 2)…")
		send(orderJSON("order-s", "confirmed", "reference", "P-000123"))
		shows(p, "Confirmed — reference P-000123")
		if n := len(f.count("events order-s")); n != 1 {
			t.Errorf("the order stream was opened %d times, want once (it never dropped)", n)
		}
		if n := len(f.count("orders order-s")); n != 0 {
			t.Errorf("the order was polled %d times while its stream worked", n)
		}
		if v := p.eval("role", `document.getElementById('order-status').getAttribute('role') + ' ' + document.getElementById('order-status').getAttribute('aria-live')`); v != "status polite" {
			t.Errorf("the status line is %q, want a polite status region", v)
		}
		if msg := p.eval("message", messageText); !strings.Contains(msg, "Order placed") {
			t.Errorf("message %q", msg)
		}
		p.shot("shot-order-confirmed.png")
		p.checkConsole()
	})

	// The stream is refused (503, too many streams): the page polls the
	// order every few seconds instead, shows it confirmed, and stops.
	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		script("events order-r", fakeReply{status: http.StatusServiceUnavailable, header: map[string]string{"Retry-After": "5"},
			body: map[string]any{"error": "too_many_streams", "message": "poll instead"}})
		script("orders order-r", fakeReply{status: 200, body: orderJSON("order-r", "accepted")},
			fakeReply{status: 200, body: orderJSON("order-r", "confirmed", "reference", "P-000456")})
		p := buy(t, "refused", "order-r")
		shows(p, "Confirmed — reference P-000456")
		if n := len(f.count("events order-r")); n != 1 {
			t.Errorf("the refused stream was asked %d times, want once (then poll)", n)
		}
		polls := f.count("orders order-r")
		if len(polls) != 2 {
			t.Fatalf("%d polls, want 2 (accepted, then confirmed)", len(polls))
		}
		if gap := polls[1].Sub(polls[0]); gap < 2*time.Second {
			t.Errorf("polls %v apart: want a few seconds", gap)
		}
		// Confirmed is final: no more polls. The next would come within 3.6 s.
		time.Sleep(4 * time.Second)
		if n := len(f.count("orders order-r")); n != 2 {
			t.Errorf("%d polls after confirmed, want none", n-2)
		}
		p.checkConsole()
	})

	// Right after buying the order is not known yet (404): the page tries
	// the stream again after a short pause, and follows it once it is there.
	t.Run("NotFoundYet", func(t *testing.T) {
		t.Parallel()
		events := make(chan map[string]any, 1)
		events <- orderJSON("order-n", "confirmed", "reference", "P-000789")
		script("events order-n", refused(http.StatusNotFound, "order_not_found"), refused(http.StatusNotFound, "order_not_found"),
			fakeReply{events: events})
		p := buy(t, "notyet", "order-n")
		shows(p, "Confirmed — reference P-000789")
		if n := len(f.count("events order-n")); n != 3 {
			t.Errorf("the order stream was asked %d times, want 3 (404, 404, then the stream)", n)
		}
		p.checkConsole()
	})

	// Failed: the line says so calmly and names the reason; the page keeps
	// following (support may send it again).
	t.Run("Failed", func(t *testing.T) {
		t.Parallel()
		events := make(chan map[string]any, 2)
		events <- orderJSON("order-f", "failed", "attempts", 8, "failedReason", "attempts", "error", "provider 503")
		script("events order-f", fakeReply{events: events})
		p := buy(t, "failed", "order-f")
		line := shows(p, "Failed — we could not place it (")
		if !strings.Contains(line, "support has been told") {
			t.Errorf("failed line %q", line)
		}
		if msg := p.eval("message", messageText); !strings.Contains(msg, "Order placed") {
			t.Errorf("the message %q changed: a failed delivery is not the shopper's error", msg)
		}
		events <- orderJSON("order-f", "pending")
		shows(p, "Pending — being sent again")
		p.checkConsole()
	})
}
