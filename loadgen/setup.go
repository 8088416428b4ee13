package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// pool is the shoppers' sessions, made before the run: the honest
// shoppers first (each used by one iteration), then the abusive clients'.
type pool struct {
	auth    []string // "Bearer <session>"
	shopper []string // the shopper ids the server gave
	honest  int64
	next    atomic.Int64
}

// Sessions of the mixed scenario's abusive clients.
const (
	badTokenSessions = 8
	abusiveSessions  = badTokenSessions + 1 // and one for the too-fast client
)

// take hands out the next honest shopper; false: none left.
func (p *pool) take() (int, bool) {
	i := p.next.Add(1) - 1
	if i >= p.honest {
		return -1, false
	}
	return int(i), true
}

// used is how many honest shoppers were handed out.
func (p *pool) used() int64 { return min(p.next.Load(), p.honest) }

func (p *pool) badTokenSession(n int64) int { return int(p.honest) + int(n%badTokenSessions) }
func (p *pool) tooFastSession() int         { return int(p.honest) + badTokenSessions }

// setupWorkers is how many sessions are asked for at once.
const setupWorkers = 32

// makeSessions makes honest+extra sessions at url, waiting out 429s (a
// server that limits new sessions), and shows its progress on prog.
func makeSessions(ctx context.Context, hc *http.Client, url string, honest, extra int, prog *progress) (*pool, error) {
	n := honest + extra
	p := &pool{auth: make([]string, n), shopper: make([]string, n), honest: int64(honest)}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, made, limited atomic.Int64
	var wg sync.WaitGroup
	for range min(setupWorkers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 512)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				for attempt := 0; ; attempt++ {
					req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
					if err != nil {
						cancel(err)
						return
					}
					status, wait := 0, time.Duration(0)
					resp, err := hc.Do(req)
					if err == nil {
						buf, err = readBody(resp.Body, buf[:0])
						resp.Body.Close()
						status, wait = resp.StatusCode, retryAfter(resp.Header)
					}
					if ctx.Err() != nil {
						return
					}
					if err == nil && status == http.StatusCreated {
						sess, shopper := jsonString(buf, "session"), jsonString(buf, "shopper")
						if sess == "" {
							cancel(fmt.Errorf("make sessions: 201 without a session: %.200s", buf))
							return
						}
						p.auth[i], p.shopper[i] = "Bearer "+sess, shopper
						made.Add(1)
						break
					}
					if err == nil && status == http.StatusTooManyRequests {
						limited.Add(1) // the server limits new sessions: wait as it asks
					} else {
						if attempt >= 4 {
							if err == nil {
								err = fmt.Errorf("status %d: %.200s", status, bytes.TrimSpace(buf))
							}
							cancel(fmt.Errorf("make sessions: %w", err))
							return
						}
						wait = 100 * time.Millisecond << attempt
					}
					select {
					case <-ctx.Done():
						return
					case <-time.After(wait):
					}
				}
			}
		}()
	}
	start, last, lastN := time.Now(), time.Now(), int64(0)
	stop := prog.every(func() string {
		now, m := time.Now(), made.Load()
		rate := float64(m-lastN) / now.Sub(last).Seconds()
		last, lastN = now, m
		line := fmt.Sprintf("setup: sessions %d/%d  %.0f/s  %.0fs", m, n, rate, now.Sub(start).Seconds())
		if l := limited.Load(); l > 0 {
			line += fmt.Sprintf("  (%d answered 429: the server limits new sessions; serve with --session-rate=-1 and --rate-limit=off, or shopper for the mixed scenario, to benchmark)", l)
		}
		return line
	})
	wg.Wait()
	stop()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// progress writes the live progress line: rewritten in place on a
// terminal, a line at a time otherwise. A nil progress writes nothing.
type progress struct {
	w        io.Writer
	live     bool
	interval time.Duration
}

func (r *runner) progressWriter() *progress {
	if r.o.Progress == nil {
		return nil
	}
	return &progress{w: r.o.Progress, live: r.o.ProgressLive, interval: r.o.ProgressEvery}
}

func (p *progress) show(line string) {
	if p.live {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// every shows line() every interval until stop, and once more at stop.
func (p *progress) every(line func() string) (stop func()) {
	if p == nil {
		return func() {}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(p.interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.show(line())
			}
		}
	}()
	return func() {
		close(done)
		<-exited
		if p.live {
			p.show(line())
			fmt.Fprintln(p.w)
		}
	}
}

// startProgress shows the run's progress line until the returned stop.
func (r *runner) startProgress() (stop func()) {
	t0 := r.o.now()
	last, lastReqs := t0, int64(0)
	return r.progressWriter().every(func() string {
		var reqs, errs, busy int64
		r.recMu.Lock()
		for _, rec := range r.recs {
			reqs += rec.reqs.Load()
			errs += rec.errs.Load()
			busy += rec.busy.Load()
		}
		r.recMu.Unlock()
		if r.plan.open {
			busy = r.inFlight.Load()
		}
		now := r.o.now()
		rate := float64(reqs-lastReqs) / max(now.Sub(last).Seconds(), 1e-9)
		last, lastReqs = now, reqs
		var phase string
		switch r.phase.Load() {
		case phaseWarmup:
			phase = fmt.Sprintf("warm-up %5.1fs", now.Sub(t0).Seconds())
		case phaseMeasured:
			phase = fmt.Sprintf("%5.1fs", now.Sub(r.start).Seconds())
			if r.o.Requests <= 0 {
				phase += "/" + r.o.Duration.String()
			}
		default:
			phase = "finishing"
		}
		return fmt.Sprintf("%s  requests %d  %.0f/s  errors %d  in flight %d", phase, reqs, rate, errs, busy)
	})
}

// adminCall makes an admin API call with a JSON body (if any) and returns
// the status and the answer.
func adminCall(ctx context.Context, hc *http.Client, method, url, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// maxStock is the largest stock a sale may have (api.MaxStock).
const maxStock = 100_000_000

// createSale creates the run's sale: open now, with the planned stock and,
// for the queue scenario, a waiting room.
func (r *runner) createSale(ctx context.Context) error {
	body := map[string]any{"id": r.sale, "stock": min(r.plan.stock, maxStock)}
	if r.o.Scenario == ScenarioQueue {
		body["queue"] = map[string]any{"enabled": true, "admissionRate": QueueAdmissionRate, "claimWindow": "2m", "idleTimeout": "1m"}
	}
	status, b, err := adminCall(ctx, r.hc, http.MethodPost, r.o.URL+"/api/v1/admin/sales", r.o.AdminToken, body)
	if err != nil {
		return fmt.Errorf("create sale %s: %w", r.sale, err)
	}
	if status != http.StatusCreated {
		return fmt.Errorf("create sale %s: status %d: %s", r.sale, status, bytes.TrimSpace(b))
	}
	return nil
}
