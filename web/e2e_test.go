package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/web"
)

// The browser tests run the real service in-process (app.Start) with the
// pages wired in as the binary does (app.Config.Pages = web.Handler()), so
// the pages run against the real API on the same origin.
//
// FLASHGATE_SHOTS=DIR also writes screenshots of the pages to DIR
// (shot-shop.png at phone width, shot-admin.png, ...).

// waitTimeout bounds every wait on the page.
const waitTimeout = 20 * time.Second

type stack struct {
	app   *app.App
	pages string // base URL of the pages and the API
	hc    *http.Client
}

func startStack(t *testing.T) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Start(ctx, app.Config{Data: t.TempDir(), HTTP: "127.0.0.1:0", SessionRate: -1,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Pages: web.Handler()})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	return &stack{app: a, pages: a.URL, hc: &http.Client{Timeout: 15 * time.Second}}
}

type reply struct {
	Status int
	Body   map[string]any
	Raw    string
}

func (r reply) str(k string) string { s, _ := r.Body[k].(string); return s }

func (r reply) num(k string) int64 { f, _ := r.Body[k].(float64); return int64(f) }

// do calls the service's API directly.
func (s *stack) do(t *testing.T, method, path, bearer string, hdr map[string]string, body any) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.app.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

func (s *stack) createSale(t *testing.T, body map[string]any) {
	t.Helper()
	if r := s.do(t, "POST", "/api/v1/admin/sales", s.app.AdminToken, nil, body); r.Status != http.StatusCreated {
		t.Fatalf("create sale: %d %s", r.Status, r.Raw)
	}
}

func (s *stack) adminSale(t *testing.T, id string) reply {
	t.Helper()
	r := s.do(t, "GET", "/api/v1/admin/sales/"+id, s.app.AdminToken, nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("admin sale: %d %s", r.Status, r.Raw)
	}
	return r
}

// shopper is a shopper driven over HTTP.
type shopper struct{ session, token string }

func (s *stack) newShopper(t *testing.T) *shopper {
	t.Helper()
	r := s.do(t, "POST", "/api/v1/session", "", nil, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("session: %d %s", r.Status, r.Raw)
	}
	return &shopper{session: r.str("session")}
}

// getToken asks for a purchase token and returns the answer's status and error code.
func (s *stack) getToken(t *testing.T, sh *shopper, sale string) (int, string) {
	t.Helper()
	r := s.do(t, "POST", "/api/v1/sales/"+sale+"/tokens", sh.session, nil, nil)
	sh.token = r.str("token")
	return r.Status, r.str("error")
}

func (s *stack) buy(t *testing.T, sh *shopper, sale string) (int, string) {
	t.Helper()
	r := s.do(t, "POST", "/api/v1/sales/"+sale+"/purchases", sh.session, map[string]string{"X-Purchase-Token": sh.token}, nil)
	return r.Status, r.str("error")
}

// startBrowser starts headless Chromium and returns a context that holds it.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no chromium, chromium-browser or google-chrome on PATH: CI must have one (Debian: apt-get install chromium)")
		}
		t.Skip("no chromium, chromium-browser or google-chrome on PATH; install one to run the browser tests")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// Start the browser on its own context: the first Run binds the browser's
	// life to the context it gets. Chromium's start is bounded by chromedp.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return browser
}

// tab is one page in its own browser context (its own storage), with the
// page's console collected.
type tab struct {
	ctx     context.Context // bounded by waitTimeout
	t       *testing.T
	mu      sync.Mutex
	console []string
}

func newTab(t *testing.T, browser context.Context, width, height int64) *tab {
	t.Helper()
	tctx, cancelTab := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	// Open the tab on its own context (it lives as long as the context of its
	// first Run), then bound everything else.
	if err := chromedp.Do(tctx, chromedp.EmulateViewport(width, height)); err != nil {
		cancelTab()
		t.Fatalf("open a tab: %v", err)
	}
	ctx, cancel := context.WithTimeout(tctx, waitTimeout)
	tb := &tab{ctx: ctx, t: t}
	artifacts := t.ArtifactDir()
	t.Cleanup(func() {
		if t.Failed() {
			sctx, scancel := context.WithTimeout(tctx, 5*time.Second)
			if buf, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)); err != nil {
				t.Logf("screenshot: %v", err)
			} else {
				p := filepath.Join(artifacts, "final.png")
				if err := os.WriteFile(p, buf, 0o644); err == nil {
					t.Logf("screenshot of the final state: %s (kept with go test -artifacts -outputdir DIR)", p)
				}
			}
			scancel()
			tb.mu.Lock()
			t.Logf("page console:\n%s", strings.Join(tb.console, "\n"))
			tb.mu.Unlock()
		}
		cancel()
		cancelTab()
	})
	console := chromedp.Console(tctx) // subscribes now, before any navigation
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.console = append(tb.console, fmt.Sprintf("%s: %s", m.Type, m.Text))
			tb.mu.Unlock()
		}
	}()
	return tb
}

func (b *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *tab) eval(what, js string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (b *tab) disabled(id string) bool {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](fmt.Sprintf(`document.getElementById(%q).disabled`, id)))
	if err != nil {
		b.t.Fatalf("read #%s: %v", id, err)
	}
	return v
}

// waitFor polls a JavaScript expression until it is truthy and returns it as text.
func (b *tab) waitFor(what, js string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Poll[string](`((v) => v ? String(v) : null)(`+js+`)`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
	return v
}

// checkConsole fails on uncaught exceptions and CSP violations in the page.
func (b *tab) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		if strings.HasPrefix(m, "exception") || strings.Contains(m, "Content Security Policy") {
			b.t.Errorf("page console: %s", m)
		}
	}
}

// shot writes a screenshot to $FLASHGATE_SHOTS/name, if set.
func (b *tab) shot(name string) {
	b.t.Helper()
	dir := os.Getenv("FLASHGATE_SHOTS")
	if dir == "" {
		return
	}
	buf, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot: %v", err)
		return
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		b.t.Error(err)
	}
	b.t.Logf("wrote %s", p)
}

const messageText = `(document.getElementById('message').textContent || '')`

func TestBrowser(t *testing.T) {
	browser := startBrowser(t)
	s := startStack(t)

	// A: a sale opening 3 s from now: the countdown shows, the button is
	// locked until opening, then the shopper buys and sees the order.
	t.Run("CountdownThenBuy", func(t *testing.T) {
		opens := time.Now().Add(3 * time.Second)
		s.createSale(t, map[string]any{"id": "a", "stock": 5, "opensAt": opens.UTC().Format(time.RFC3339Nano)})
		p := newTab(t, browser, 375, 812)
		p.do("open the sale", chromedp.Navigate(s.pages+"/sales/a"), chromedp.WaitVisible(chromedp.ID("countdown")))
		if !p.disabled("buy") {
			t.Fatal("the buy button is enabled before opening")
		}
		if time.Now().After(opens) {
			t.Fatal("the page took more than 3 s to show; the check before opening did not happen")
		}
		p.waitFor("a countdown figure", `document.getElementById('cd-seconds').textContent !== '00'`)
		p.shot("shot-shop-countdown.png")

		p.do("wait for opening", chromedp.WaitEnabled(chromedp.ID("buy")))
		unlocked := time.Now()
		if early := opens.Sub(unlocked); early > 300*time.Millisecond {
			t.Errorf("the button unlocked %v before opening", early)
		}
		if late := unlocked.Sub(opens); late > 2*time.Second {
			t.Errorf("the button unlocked %v after opening", late)
		}
		if v := p.eval("countdown", `String(document.getElementById('countdown-box').hidden)`); v != "true" {
			t.Errorf("the countdown still shows after opening")
		}

		p.do("buy", chromedp.Click(chromedp.ID("buy")))
		order := p.waitFor("the order", `document.getElementById('order-id').textContent.trim()`)
		msg := p.waitFor("the order message", messageText+`.includes('Order placed') && `+messageText)
		if !strings.Contains(msg, order) {
			t.Errorf("message %q does not name order %s", msg, order)
		}
		if v := p.eval("order box", `String(!document.getElementById('order').hidden)`); v != "true" {
			t.Error("the order box is hidden")
		}
		if r := s.adminSale(t, "a"); r.num("sold") != 1 || r.num("stockLeft") != 4 {
			t.Errorf("after the purchase: %s; want sold 1, stockLeft 4", r.Raw)
		}
		p.waitFor("the figures", `document.getElementById('stock-left').textContent === '4'`)
		if !p.disabled("buy") {
			t.Error("the buy button is enabled after buying the per-shopper limit")
		}
		p.shot("shot-shop.png")
		p.checkConsole()
	})

	// H: a sale with the proof-of-work check at the default difficulty: the
	// browser solves the puzzle in a worker and buys; the solving time is
	// reported (the target is about a second).
	t.Run("HumanCheckThenBuy", func(t *testing.T) {
		s.createSale(t, map[string]any{"id": "h", "stock": 3, "challenge": map[string]any{"kind": "pow"}})
		p := newTab(t, browser, 375, 812)
		p.do("open the sale", chromedp.Navigate(s.pages+"/sales/h"), chromedp.WaitEnabled(chromedp.ID("buy")))
		p.do("buy", chromedp.Click(chromedp.ID("buy")))
		p.waitFor("the order", `document.getElementById('order-id').textContent.trim()`)
		solved := p.eval("the solving time", `JSON.stringify(globalThis.flashgatePowLast || null)`)
		var last struct {
			Tries, Difficulty int
			Ms                float64
		}
		if err := json.Unmarshal([]byte(solved), &last); err != nil || last.Tries == 0 {
			t.Fatalf("no puzzle solved in the page: %s", solved)
		}
		t.Logf("the browser solved a difficulty %d puzzle in %d tries, %.0f ms (%.0f thousand hashes/s)",
			last.Difficulty, last.Tries, last.Ms, float64(last.Tries)/last.Ms)
		if r := s.adminSale(t, "h"); r.num("sold") != 1 {
			t.Errorf("after the purchase: %s; want sold 1", r.Raw)
		}
		p.checkConsole()
	})

	// Q: a sale with a waiting room (no human check). A shopper over HTTP
	// takes the first turn; the page joins, shows its place while it waits
	// (one admission every 2 s), is let in, buys with the admission's token
	// and shows the order.
	t.Run("QueueThenBuy", func(t *testing.T) {
		s.createSale(t, map[string]any{"id": "q", "stock": 3, "queue": map[string]any{"enabled": true, "admissionRate": 0.5}})
		first := s.newShopper(t)
		if r := s.do(t, "POST", "/api/v1/sales/q/queue", first.session, nil, nil); r.Status != http.StatusCreated || r.str("status") != "admitted" {
			t.Fatalf("the first shopper's join: %d %s", r.Status, r.Raw)
		}
		p := newTab(t, browser, 375, 812)
		p.do("open the sale", chromedp.Navigate(s.pages+"/sales/q"), chromedp.WaitEnabled(chromedp.ID("buy")))
		if v := p.eval("the button", `document.getElementById('buy').textContent`); v != "Join the queue" {
			t.Errorf("the button reads %q on a queue sale", v)
		}
		p.do("join", chromedp.Click(chromedp.ID("buy")))
		msg := p.waitFor("the queue", `!document.getElementById('queue').hidden && `+messageText+`.includes('You are in the queue') && `+messageText)
		if !strings.Contains(msg, "you are next") {
			t.Errorf("queue message %q; want 'you are next' (one ahead, admitted)", msg)
		}
		if v := p.eval("position", `document.getElementById('queue-position').textContent`); v != "1" {
			t.Errorf("the place shows %q, want 1", v)
		}
		p.shot("shot-shop-queue.png")
		order := p.waitFor("the order", `document.getElementById('order-id').textContent.trim()`)
		msg = p.waitFor("the order message", messageText+`.includes('Order placed') && `+messageText)
		if !strings.Contains(msg, order) {
			t.Errorf("message %q does not name order %s", msg, order)
		}
		if v := p.eval("queue box", `String(document.getElementById('queue').hidden)`); v != "true" {
			t.Error("the queue box still shows after the purchase")
		}
		if r := s.adminSale(t, "q"); r.num("sold") != 1 {
			t.Errorf("after the purchase: %s; want sold 1", r.Raw)
		}
		p.checkConsole()
	})

	// O: the order goes to the provider (the in-process fake): the page
	// follows its stream and shows it confirmed with the provider's
	// reference, the one the API gives.
	t.Run("OrderConfirmed", func(t *testing.T) {
		s.createSale(t, map[string]any{"id": "o", "stock": 3})
		p := newTab(t, browser, 375, 812)
		p.do("open the sale", chromedp.Navigate(s.pages+"/sales/o"), chromedp.WaitEnabled(chromedp.ID("buy")))
		p.do("buy", chromedp.Click(chromedp.ID("buy")))
		order := p.waitFor("the order", `document.getElementById('order-id').textContent.trim()`)
		line := p.waitFor("the confirmation", orderState+`.startsWith('Confirmed') && `+orderState)
		if !regexp.MustCompile(`^Confirmed — reference P-\d+$`).MatchString(line) {
			t.Errorf("status line %q; want Confirmed — reference P-…", line)
		}
		session := p.eval("the session", `JSON.parse(localStorage.getItem('flashgate.session')).session`)
		r := s.do(t, "GET", "/api/v1/orders/"+order, session, nil, nil)
		if r.str("status") != "confirmed" || line != "Confirmed — reference "+r.str("reference") {
			t.Errorf("the page shows %q; GET /api/v1/orders/%s: %d %s", line, order, r.Status, r.Raw)
		}
		if v := p.eval("details", `document.getElementById('order-detail').textContent`); !strings.HasPrefix(v, "1 unit · placed") {
			t.Errorf("order details %q", v)
		}
		p.shot("shot-shop-order.png")
		p.checkConsole()
	})

	// B: a fresh browser context on a sale bought out over HTTP sees the
	// sold-out message and a disabled button.
	t.Run("SoldOut", func(t *testing.T) {
		s.createSale(t, map[string]any{"id": "b", "stock": 1})
		sh := s.newShopper(t)
		if st, code := s.getToken(t, sh, "b"); st != http.StatusCreated {
			t.Fatalf("token: %d %s", st, code)
		}
		if st, code := s.buy(t, sh, "b"); st != http.StatusAccepted {
			t.Fatalf("buy: %d %s", st, code)
		}
		p := newTab(t, browser, 375, 812)
		p.do("open the sale", chromedp.Navigate(s.pages+"/sales/b"))
		msg := p.waitFor("the sold-out message", messageText+`.includes('Sold out') && `+messageText)
		if !strings.Contains(msg, "Every unit has been sold") {
			t.Errorf("message %q gives no next step", msg)
		}
		if !p.disabled("buy") {
			t.Error("the buy button is enabled on a sold-out sale")
		}
		if v := p.eval("badge", `document.getElementById('sale-state').textContent`); v != "Sold out" {
			t.Errorf("state badge %q", v)
		}
		p.checkConsole()
	})

	// C: the operator's page shows the figures the API reports, from the
	// SSE stream.
	t.Run("AdminFigures", func(t *testing.T) {
		if st := probe(t, s.app.URL+"/api/v1/admin/events", s.app.AdminToken); st == http.StatusNotFound {
			t.Fatal("GET /api/v1/admin/events answers 404: the figures stream is not wired into the API")
		}
		// Stock 2, quota 3: three tokens, a fourth shopper refused
		// (quota_exhausted), two purchases, a third refused (sold_out).
		s.createSale(t, map[string]any{"id": "c", "stock": 2, "quotaBuffer": 1.2})
		var holders []*shopper
		for i := range 4 {
			sh := s.newShopper(t)
			st, code := s.getToken(t, sh, "c")
			switch {
			case i < 3 && st == http.StatusCreated:
				holders = append(holders, sh)
			case i == 3 && code == "quota_exhausted":
			default:
				t.Fatalf("shopper %d token: %d %s", i, st, code)
			}
		}
		for i, sh := range holders {
			st, code := s.buy(t, sh, "c")
			if want := i < 2; want != (st == http.StatusAccepted) || (!want && code != "sold_out") {
				t.Fatalf("shopper %d buy: %d %s", i, st, code)
			}
		}
		want := s.adminSale(t, "c")

		p := newTab(t, browser, 1280, 900)
		p.do("open the page", chromedp.Navigate(s.pages+"/admin"), chromedp.WaitVisible(chromedp.ID("admin-token")))
		p.shot("shot-admin-login.png")
		p.do("sign in",
			chromedp.SendKeys(chromedp.ID("admin-token"), s.app.AdminToken),
			chromedp.Click(chromedp.ID("login-submit")),
		)
		p.waitFor("the live stream", `document.getElementById('conn').dataset.state === 'live'`)
		fields := map[string]string{
			"stockLeft":    strconv.FormatInt(want.num("stockLeft"), 10),
			"tokensIssued": strconv.FormatInt(want.num("tokensIssued"), 10),
			"sold":         strconv.FormatInt(want.num("sold"), 10),
			"rejections":   "2",
		}
		wantJSON, _ := json.Marshal(fields)
		read := `(() => {
			const c = document.querySelector('[data-sale="c"]');
			if (!c) return '{}';
			const v = {};
			for (const k of Object.keys(` + string(wantJSON) + `)) v[k] = c.querySelector('[data-field="' + k + '"]').textContent.replace(/,/g, '');
			return JSON.stringify(v);
		})()`
		if _, err := chromedp.Run(p.ctx, chromedp.Poll[string](`(`+read+` === `+strconv.Quote(string(wantJSON))+`) ? 'ok' : null`,
			chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))); err != nil {
			t.Errorf("page figures %s, want %s (GET /api/v1/admin/sales/c: %s): %v", p.eval("figures", read), wantJSON, want.Raw, err)
		}
		if v := p.eval("decisions", `document.querySelector('[data-sale="c"] [data-field="decisions"]').textContent`); !strings.Contains(v, "TokenDenied:quota_exhausted") {
			t.Errorf("decisions table %q lacks TokenDenied:quota_exhausted", v)
		}

		// Create: a bad field is named next to its input; a good sale shows up.
		p.do("create with a bad id", chromedp.SetValue(chromedp.ID("f-id"), "Bad Id!"), chromedp.Click(chromedp.ID("create-submit")))
		p.waitFor("the id field's error", `document.getElementById('err-id').textContent`)
		if v := p.eval("aria-invalid", `String(document.getElementById('f-id').getAttribute('aria-invalid'))`); v != "true" {
			t.Errorf("the bad id input has aria-invalid=%s", v)
		}
		p.do("create d", chromedp.SetValue(chromedp.ID("f-id"), "d"), chromedp.SetValue(chromedp.ID("f-stock"), "7"),
			chromedp.Click(chromedp.ID("create-submit")))
		p.waitFor("sale d's card", `document.querySelector('[data-sale="d"] [data-field="stock"]')?.textContent === '7'`)
		if v := p.eval("err-id", `document.getElementById('err-id').textContent`); v != "" {
			t.Errorf("the id error %q stays after a good create", v)
		}
		if r := s.adminSale(t, "d"); r.num("stock") != 7 {
			t.Errorf("sale d: %s", r.Raw)
		}

		// Open now: a sale scheduled in an hour opens from the page.
		s.createSale(t, map[string]any{"id": "e", "stock": 3, "opensAt": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		p.waitFor("sale e's card", `document.querySelector('[data-sale="e"] [data-field="state"]')?.textContent === 'Scheduled'`)
		p.do("open e", chromedp.Click(chromedp.CSS(`[data-sale="e"] [data-action="open"]`)))
		p.waitFor("sale e open", `document.querySelector('[data-sale="e"] [data-field="state"]').textContent === 'Open'`)
		if r := s.do(t, "GET", "/api/v1/sales/e", "", nil, nil); r.str("state") != "open" {
			t.Errorf("sale e after Open now: %s", r.Raw)
		}

		if os.Getenv("FLASHGATE_SHOTS") != "" {
			time.Sleep(3 * time.Second) // a few chart samples
		}
		p.shot("shot-admin.png")
		if os.Getenv("FLASHGATE_SHOTS") != "" {
			p.do("phone width", chromedp.EmulateViewport(375, 812), chromedp.Sleep(1500*time.Millisecond))
			p.shot("shot-admin-phone.png")
		}
		p.checkConsole()
	})

	// The list at / (GET /api/v1/sales) names every sale.
	t.Run("SaleList", func(t *testing.T) {
		r := s.do(t, "GET", "/api/v1/sales", "", nil, nil)
		if r.Status == http.StatusNotFound {
			t.Fatal("GET /api/v1/sales answers 404: the sale list is not wired into the API")
		}
		sales, _ := r.Body["sales"].([]any)
		if r.Status != http.StatusOK || len(sales) == 0 {
			t.Fatalf("GET /api/v1/sales: %d %s", r.Status, r.Raw)
		}
		p := newTab(t, browser, 375, 812)
		p.do("open the list", chromedp.Navigate(s.pages+"/?all"))
		for _, x := range sales {
			id, _ := x.(map[string]any)["id"].(string)
			p.waitFor("a link to sale "+id, fmt.Sprintf(`document.querySelector('#sale-list a[href="/sales/%s"]')`, id))
		}
		p.shot("shot-list.png")
		p.checkConsole()
	})
}

// probe answers the status of a GET without reading a (streamed) body.
func probe(t *testing.T, u, bearer string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
