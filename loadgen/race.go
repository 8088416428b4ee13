package loadgen

// The race: every one of Config.Shoppers asks once for a token (then, with
// Buy, buys with it), and the Result keeps each shopper's answers. It is
// not a benchmark (see Bench for that); the app's end-to-end test uses it
// to check every single answer against the ledger.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes a race.
type Config struct {
	URL         string // base URL of the server
	AdminToken  string // to create the sale and read its figures
	Sale        string // sale to race for; "" creates bench-<time>
	Stock       int64  // stock of a created sale
	Shoppers    int    // distinct shoppers, each asks for a token once
	Concurrency int    // requests in flight
	Buy         bool   // shoppers who got a token then buy with it
	Client      *http.Client
}

// Shopper is one virtual shopper and what it got.
type Shopper struct {
	ID, Session      string
	TokenStatus      int
	TokenID, Token   string
	RequestID        string // for a 202 pending answer
	PurchaseStatus   int
	OrderID          string
	TokenErr, BuyErr string
}

// Phase is the figures of one timed phase.
type Phase struct {
	Name     string
	Requests int
	Duration time.Duration
	Latency  Latencies
	Status   map[int]int
	Errors   int
}

// Rate is the phase's requests per second.
func (p Phase) Rate() float64 {
	if p.Duration <= 0 {
		return 0
	}
	return float64(p.Requests) / p.Duration.Seconds()
}

// Result is a whole race.
type Result struct {
	Sale     string
	Shoppers []*Shopper
	Phases   []Phase
	// Server's figures after the run.
	Stock, Quota, Sold, Issued, Expired, Outstanding int64
	Verdict                                          []string // empty: correct
}

// Run runs a race: sessions first (not timed), then every shopper's token
// request, then (with Buy) every token holder's purchase, each phase timed.
func Run(ctx context.Context, c Config) (*Result, error) {
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: c.Concurrency * 2, MaxIdleConnsPerHost: c.Concurrency * 2, IdleConnTimeout: time.Minute,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		}}
	}
	c.URL = strings.TrimRight(c.URL, "/")
	r := &Result{Sale: c.Sale}
	if r.Sale == "" {
		r.Sale = fmt.Sprintf("bench-%d", time.Now().UnixNano())
		stock := c.Stock
		if stock <= 0 {
			stock = int64(c.Shoppers)
		}
		var out map[string]any
		if code, err := call(ctx, c.Client, "POST", c.URL+"/api/v1/admin/sales", c.AdminToken, nil,
			map[string]any{"id": r.Sale, "stock": stock}, &out); err != nil || code != http.StatusCreated {
			return nil, fmt.Errorf("create sale: status %d: %v %v", code, err, out)
		}
	}
	r.Shoppers = make([]*Shopper, c.Shoppers)
	for i := range r.Shoppers {
		r.Shoppers[i] = &Shopper{}
	}
	// Sessions: set-up, not measured.
	_, err := each(ctx, "sessions", r.Shoppers, c.Concurrency, func(ctx context.Context, s *Shopper) (int, error) {
		var out struct{ Shopper, Session string }
		code, err := call(ctx, c.Client, "POST", c.URL+"/api/v1/session", "", nil, nil, &out)
		if err == nil && code != http.StatusCreated {
			err = fmt.Errorf("session: status %d", code)
		}
		s.ID, s.Session = out.Shopper, out.Session
		return code, err
	})
	if err != nil {
		return nil, err
	}
	ph, err := each(ctx, "tokens", r.Shoppers, c.Concurrency, func(ctx context.Context, s *Shopper) (int, error) {
		var out struct{ Token, TokenID, RequestID, Error string }
		code, err := call(ctx, c.Client, "POST", c.URL+"/api/v1/sales/"+r.Sale+"/tokens", s.Session, nil, nil, &out)
		s.TokenStatus, s.Token, s.TokenID, s.RequestID, s.TokenErr = code, out.Token, out.TokenID, out.RequestID, out.Error
		return code, err
	})
	if err != nil {
		return nil, err
	}
	r.Phases = append(r.Phases, ph)
	if c.Buy {
		var holders []*Shopper
		for _, s := range r.Shoppers {
			if s.Token != "" {
				holders = append(holders, s)
			}
		}
		ph, err := each(ctx, "purchases", holders, c.Concurrency, func(ctx context.Context, s *Shopper) (int, error) {
			var out struct{ OrderID, RequestID, Error string }
			code, err := call(ctx, c.Client, "POST", c.URL+"/api/v1/sales/"+r.Sale+"/purchases", s.Session,
				map[string]string{"X-Purchase-Token": s.Token}, nil, &out)
			s.PurchaseStatus, s.OrderID, s.BuyErr = code, out.OrderID, out.Error
			if s.RequestID == "" {
				s.RequestID = out.RequestID
			}
			return code, err
		})
		if err != nil {
			return nil, err
		}
		r.Phases = append(r.Phases, ph)
	}
	if err := r.verdict(ctx, c); err != nil {
		return nil, err
	}
	return r, nil
}

// each runs fn for every shopper with n in flight and times it.
func each(ctx context.Context, name string, ss []*Shopper, n int, fn func(context.Context, *Shopper) (int, error)) (Phase, error) {
	p := Phase{Name: name, Requests: len(ss), Status: map[int]int{}}
	lat := make([]time.Duration, len(ss))
	codes := make([]int, len(ss))
	var next atomic.Int64
	var firstErr error
	var errs atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range min(n, max(len(ss), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ss) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				code, err := fn(ctx, ss[i])
				lat[i], codes[i] = time.Since(t0), code
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	p.Duration = time.Since(start)
	p.Errors = int(errs.Load())
	for _, c := range codes {
		p.Status[c]++
	}
	p.Latency = NewLatencies(lat)
	if ctx.Err() != nil {
		return p, ctx.Err()
	}
	if name == "sessions" && firstErr != nil {
		return p, fmt.Errorf("%s: %d errors, first: %w", name, p.Errors, firstErr)
	}
	return p, nil
}

func (r *Result) verdict(ctx context.Context, c Config) error {
	var s struct {
		Stock, Quota, Sold, TokensIssued, TokensExpired, TokensOutstanding int64
	}
	code, err := call(ctx, c.Client, "GET", c.URL+"/api/v1/admin/sales/"+r.Sale, c.AdminToken, nil, nil, &s)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("read sale figures: status %d: %v", code, err)
	}
	r.Stock, r.Quota, r.Sold, r.Issued, r.Expired, r.Outstanding = s.Stock, s.Quota, s.Sold, s.TokensIssued, s.TokensExpired, s.TokensOutstanding
	if r.Sold > r.Stock {
		r.Verdict = append(r.Verdict, fmt.Sprintf("oversold: %d > stock %d", r.Sold, r.Stock))
	}
	if r.Issued-r.Expired > r.Quota {
		r.Verdict = append(r.Verdict, fmt.Sprintf("quota exceeded: %d > %d", r.Issued-r.Expired, r.Quota))
	}
	tokens := map[string]string{}
	for _, sh := range r.Shoppers {
		if sh.TokenID == "" {
			continue
		}
		if other, ok := tokens[sh.TokenID]; ok && other != sh.ID {
			r.Verdict = append(r.Verdict, fmt.Sprintf("token %s given to two shoppers", sh.TokenID))
		}
		tokens[sh.TokenID] = sh.ID
	}
	return nil
}

// call makes one JSON request and decodes a JSON answer into out.
func call(ctx context.Context, hc *http.Client, method, url, bearer string, hdr map[string]string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: status %d, body not JSON: %w", method, url, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, nil
}

// Latencies holds a phase's latencies, sorted.
type Latencies []time.Duration

// NewLatencies sorts ds (in place) into Latencies.
func NewLatencies(ds []time.Duration) Latencies {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return Latencies(ds)
}

// Quantile returns the q-quantile (0..1) by the nearest-rank method.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	if q <= 0 {
		return l[0]
	}
	rank := int(q*float64(len(l)) + 0.999999999)
	return l[min(max(rank, 1), len(l))-1]
}

// Write prints the result for people.
func (r *Result) Write(w io.Writer) {
	fmt.Fprintf(w, "sale %s: %d shoppers\n", r.Sale, len(r.Shoppers))
	for _, p := range r.Phases {
		fmt.Fprintf(w, "%-9s %6d requests in %v: %.0f req/s; latency p50 %v p90 %v p99 %v max %v; errors %d\n",
			p.Name, p.Requests, p.Duration.Round(time.Millisecond), p.Rate(), p.Latency.Quantile(0.5).Round(time.Microsecond),
			p.Latency.Quantile(0.9).Round(time.Microsecond), p.Latency.Quantile(0.99).Round(time.Microsecond),
			p.Latency.Quantile(1).Round(time.Microsecond), p.Errors)
		codes := make([]int, 0, len(p.Status))
		for c := range p.Status {
			codes = append(codes, c)
		}
		sort.Ints(codes)
		parts := make([]string, len(codes))
		for i, c := range codes {
			parts[i] = fmt.Sprintf("%d x%d", c, p.Status[c])
		}
		fmt.Fprintf(w, "          status: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "server: stock %d, quota %d, sold %d, tokens issued %d, expired %d, outstanding %d\n",
		r.Stock, r.Quota, r.Sold, r.Issued, r.Expired, r.Outstanding)
	if len(r.Verdict) == 0 {
		fmt.Fprintln(w, "verdict: correct (sold <= stock, tokens held <= quota, no token given twice)")
	} else {
		fmt.Fprintf(w, "verdict: WRONG: %s\n", strings.Join(r.Verdict, "; "))
	}
}
