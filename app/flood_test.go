package app_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
)

var floodFor = flag.Duration("flood", 2*time.Second, "how long TestBotFlood floods")

// TestBotFlood: while bots flood the front from a few addresses — one
// shopper hammering the token route, requests without a session, a script
// minting a session per request — 100 real shoppers, each from an address
// of their own (through a trusted proxy's X-Forwarded-For), still get their
// token and buy. The bots' refusals are cheap: they never reach the stream.
// It logs the rate the flood is refused at (go test -run TestBotFlood -v
// ./app/ -args -flood 10s for a longer run).
func TestBotFlood(t *testing.T) {
	a := startApp(t, app.Config{RateLimit: app.RateLimitOn, TrustedProxies: []string{"127.0.0.1"}})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "flood", "stock": 100})

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	type answer struct {
		status int
		body   map[string]any
	}
	send := func(method, path, session, from string, hdr map[string]string) (answer, error) {
		req, err := http.NewRequest(method, a.URL+path, nil)
		if err != nil {
			return answer{}, err
		}
		req.Header.Set("X-Forwarded-For", from)
		if session != "" {
			req.Header.Set("Authorization", "Bearer "+session)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return answer{}, err
		}
		defer resp.Body.Close()
		var ans answer
		ans.status = resp.StatusCode
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &ans.body)
		return ans, nil
	}

	// The bot with a session.
	bot, err := send("POST", "/api/v1/session", "", "198.51.100.7", nil)
	if err != nil || bot.status != http.StatusCreated {
		t.Fatalf("bot session: %v %+v", err, bot)
	}
	botSession := bot.body["session"].(string)

	// The flood lasts -flood, and longer if the shoppers are not done by
	// then (a loaded runner): the allowances below use its real length.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	floodStart := time.Now()
	var (
		mu       sync.Mutex
		statuses = map[string]map[int]int{} // bot kind -> status -> count
		sent     atomic.Int64
		wg       sync.WaitGroup
	)
	count := func(kind string, status int) {
		mu.Lock()
		if statuses[kind] == nil {
			statuses[kind] = map[int]int{}
		}
		statuses[kind][status]++
		mu.Unlock()
	}
	bots := []struct {
		kind, path, session, from string
	}{
		{"hammer", "/api/v1/sales/flood/tokens", botSession, "198.51.100.7"},
		{"no-session", "/api/v1/sales/flood/tokens", "", "198.51.100.8"},
		{"session-mint", "/api/v1/session", "", "198.51.100.9"},
	}
	for _, b := range bots {
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					ans, err := send("POST", b.path, b.session, b.from, nil)
					if err != nil {
						continue
					}
					sent.Add(1)
					count(b.kind, ans.status)
				}
			}()
		}
	}

	// The real shoppers, each from an address of their own, during the flood.
	time.Sleep(100 * time.Millisecond) // let the flood start (it runs for seconds)
	var bought atomic.Int64
	var failures sync.Map
	var shoppers sync.WaitGroup
	for i := range 100 {
		shoppers.Add(1)
		go func() {
			defer shoppers.Done()
			from := fmt.Sprintf("203.0.113.%d", i+1)
			s, err := send("POST", "/api/v1/session", "", from, nil)
			if err != nil || s.status != http.StatusCreated {
				failures.Store(i, fmt.Sprintf("session: %v %+v", err, s))
				return
			}
			sess := s.body["session"].(string)
			tk, err := send("POST", "/api/v1/sales/flood/tokens", sess, from, nil)
			if err != nil || tk.status != http.StatusCreated {
				failures.Store(i, fmt.Sprintf("token: %v %+v", err, tk))
				return
			}
			p, err := send("POST", "/api/v1/sales/flood/purchases", sess, from, map[string]string{"X-Purchase-Token": tk.body["token"].(string)})
			if err != nil || p.status != http.StatusAccepted {
				failures.Store(i, fmt.Sprintf("purchase: %v %+v", err, p))
				return
			}
			bought.Add(1)
		}()
	}
	shoppers.Wait()
	if d := *floodFor - time.Since(floodStart); d > 0 {
		time.Sleep(d)
	}
	cancel()
	wg.Wait()
	elapsed := time.Since(floodStart)
	failures.Range(func(k, v any) bool { t.Errorf("shopper %v: %v", k, v); return true })
	if bought.Load() != 100 {
		t.Fatalf("%d of 100 real shoppers bought during the flood", bought.Load())
	}

	refused := 0
	for kind, st := range statuses {
		t.Logf("%-12s %v", kind, st)
		for code, n := range st {
			if code == http.StatusTooManyRequests || code == http.StatusUnauthorized {
				refused += n
			}
		}
	}
	t.Logf("flood: %d bot requests in %v, %d refused (429/401): %.0f refusals/s, while 100 shoppers bought",
		sent.Load(), elapsed, refused, float64(refused)/elapsed.Seconds())
	if ham := statuses["hammer"]; ham[http.StatusTooManyRequests] == 0 {
		t.Errorf("the hammering bot was never refused: %v", ham)
	}
	if mint := statuses["session-mint"]; mint[http.StatusCreated] > 20+int(elapsed.Seconds())+1 {
		t.Errorf("the session-minting bot got %d sessions from one address", mint[http.StatusCreated])
	}

	// The requests that reached the stream: the shoppers' 200 and, of the
	// bots', only the hammering bot's allowance (the burst of
	// tokens-shopper plus its refill). The audit checks every invariant.
	rep := runAudit(t, a)
	var reqs int64 = -1
	for _, s := range rep.Sales {
		if s.Sale.ID == "flood" {
			reqs = s.Requests
		}
	}
	allowance := int64(10 + 2*(elapsed.Seconds()+1))
	if reqs < 200 || reqs > 200+allowance {
		t.Errorf("%d requests reached the stream; want 200 from the shoppers + at most the bot's %d", reqs, allowance)
	}
	t.Logf("requests in the stream: %d (200 from the shoppers)", reqs)
}
