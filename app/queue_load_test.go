package app_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
)

var queueJoins = flag.Int("queue-joins", 2000, "shoppers TestQueueJoinRate joins (go test -run TestQueueJoinRate -v ./app/ -args -queue-joins 20000)")

// TestQueueJoinRate: distinct shoppers join one sale's waiting room over
// HTTP, 64 at a time; every join gets a ticket, admissions follow at the
// configured rate. It logs joins and admissions per second.
func TestQueueJoinRate(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	n := *queueJoins
	c.createSale(a.AdminToken, map[string]any{"id": "jq", "stock": n, "tokenTTL": "30m",
		"queue": map[string]any{"enabled": true, "admissionRate": 5000, "claimWindow": "10m", "idleTimeout": "10m"}})
	sessions := make([]string, n)
	for i := range sessions {
		_, sessions[i] = c.session()
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var joined, failed atomic.Int64
	work := make(chan string)
	var wg sync.WaitGroup
	start := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				req, _ := http.NewRequest("POST", a.URL+"/api/v1/sales/jq/queue", nil)
				req.Header.Set("Authorization", "Bearer "+s)
				resp, err := hc.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var body map[string]any
				_ = json.Unmarshal(b, &body)
				if (resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK) && body["ticket"] != nil {
					joined.Add(1)
				} else {
					failed.Add(1)
					t.Errorf("join: %d %s", resp.StatusCode, bytes.TrimSpace(b))
				}
			}
		}()
	}
	for _, s := range sessions {
		work <- s
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	if joined.Load() != int64(n) {
		t.Fatalf("%d of %d joined, %d failed", joined.Load(), n, failed.Load())
	}
	// Admissions: wait until every ticket is admitted (rate 5,000/s).
	var admitted float64
	waitFor(t, 60*time.Second, func() error {
		r := c.do("GET", "/api/v1/sales/jq", "", nil, nil)
		q, _ := r.Body["queue"].(map[string]any)
		admitted, _ = q["admitted"].(float64)
		if int(admitted) < n {
			return errorf("admitted %v of %d", admitted, n)
		}
		return nil
	})
	admTook := time.Since(start)
	t.Logf("%d joins over HTTP (64 in flight) in %v: %.0f joins/s; all %d admitted %v after the first join (%.0f admissions/s end to end, cap 5,000/s)",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), n, admTook.Round(time.Millisecond), float64(n)/admTook.Seconds())
	runAudit(t, a)
}
