package app_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
)

// TestOperatorOpensAndCloses: open and close are decided by the writer in
// stream order, survive a restart, and pass the audit.
func TestOperatorOpensAndCloses(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, app.Config{Data: dir})
	c := newClient(t, a)
	admin := a.AdminToken
	c.createSale(admin, map[string]any{"id": "s", "stock": 3, "opensAt": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	_, sess := c.session()
	if r := c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil); r.Status != http.StatusTooEarly {
		t.Fatalf("before opening: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/v1/admin/sales/s/open", "", nil, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("open without the admin token: %d", r.Status)
	}
	r := c.do("POST", "/api/v1/admin/sales/s/open", admin, nil, nil)
	if r.Status != http.StatusOK || r.str("state") != "open" {
		t.Fatalf("open: %d %s", r.Status, r.Raw)
	}
	tok := c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil)
	if tok.Status != http.StatusCreated {
		t.Fatalf("token after open: %d %s", tok.Status, tok.Raw)
	}
	if r := c.do("POST", "/api/v1/admin/sales/s/close", admin, nil, nil); r.Status != http.StatusOK || r.str("state") != "closed" || r.Body["closesAt"] == nil {
		t.Fatalf("close: %d %s", r.Status, r.Raw)
	}
	_, other := c.session()
	if r := c.do("POST", "/api/v1/sales/s/tokens", other, nil, nil); r.Status != http.StatusGone || r.str("error") != "sale_closed" {
		t.Fatalf("token after close: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/v1/sales/s/purchases", sess, map[string]string{"X-Purchase-Token": tok.str("token")}, nil); r.Status != http.StatusGone {
		t.Fatalf("purchase after close: %d %s", r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/v1/admin/sales/nosuch/close", admin, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("close unknown sale: %d", r.Status)
	}
	list := c.do("GET", "/api/v1/sales", "", nil, nil)
	sales, _ := list.Body["sales"].([]any)
	if list.Status != 200 || len(sales) != 1 || sales[0].(map[string]any)["state"] != "closed" {
		t.Fatalf("public list: %d %s", list.Status, list.Raw)
	}
	waitFor(t, 10*time.Second, func() error {
		var closes string
		if err := a.Store.DB().QueryRow(`SELECT closes_at FROM sales WHERE id = 's'`).Scan(&closes); err != nil || closes == "" {
			return errorf("projection closes_at %q %v", closes, err)
		}
		return nil
	})
	runAudit(t, a)
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b := startApp(t, app.Config{Data: dir})
	if r := newClient(t, b).do("GET", "/api/v1/sales/s", "", nil, nil); r.str("state") != "closed" {
		t.Fatalf("after a restart the sale is %s: %s", r.str("state"), r.Raw)
	}
}

// TestAdminEventStream: the operator's feed sends every sale's figures.
func TestAdminEventStream(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 2})
	for i := 0; i < 4; i++ {
		_, sess := c.session()
		c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil)
	}
	if r := c.do("GET", "/api/v1/admin/events", "", nil, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("feed without the admin token: %d", r.Status)
	}
	req, _ := http.NewRequest("GET", a.URL+"/api/v1/admin/events", nil)
	req.Header.Set("Authorization", "Bearer "+a.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for sc.Scan() && time.Now().Before(deadline) {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		var msg struct {
			Sales []struct {
				ID           string
				TokensIssued int64
				Decisions    map[string]int64
				Batches      struct{ Count int64 }
			}
		}
		if err := json.Unmarshal([]byte(line[6:]), &msg); err != nil {
			t.Fatalf("figures are not JSON: %v", err)
		}
		if len(msg.Sales) == 1 && msg.Sales[0].Decisions["TokenIssued"] == 3 && msg.Sales[0].Decisions["TokenDenied:quota_exhausted"] == 1 {
			if msg.Sales[0].TokensIssued != 3 || msg.Sales[0].Batches.Count == 0 {
				t.Fatalf("figures %+v", msg.Sales[0])
			}
			return
		}
	}
	t.Fatal("no figures with the sale's decisions in the feed")
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// TestAdminStreamsAreBoundedAndEndAtShutdown: at most 32 admin streams; a
// shutdown ends the open ones at once instead of waiting for them.
func TestAdminStreamsAreBoundedAndEndAtShutdown(t *testing.T) {
	a := startApp(t, app.Config{})
	open := func() (*http.Response, error) {
		req, _ := http.NewRequest("GET", a.URL+"/api/v1/admin/events", nil)
		req.Header.Set("Authorization", "Bearer "+a.AdminToken)
		return (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	}
	var streams []*http.Response
	defer func() {
		for _, r := range streams {
			r.Body.Close()
		}
	}()
	for i := 0; i < 32; i++ {
		r, err := open()
		if err != nil || r.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %v %v", i, r, err)
		}
		streams = append(streams, r)
	}
	r, err := open()
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("the 33rd stream: %d, want 503 with Retry-After", r.StatusCode)
	}
	ended := make(chan struct{})
	go func() {
		for _, s := range streams {
			_, _ = io.Copy(io.Discard, s.Body) // returns when the server ends the stream
		}
		close(ended)
	}()
	start := time.Now()
	if err := a.Shutdown(); err != nil {
		t.Fatalf("shutdown with 32 streams open: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("streams still open after shutdown")
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("shutdown took %v with streams open", d)
	}
}
