package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/queue"
)

// The waiting room over HTTP: joins, polls, leaves, the flow from the queue
// to a purchase for many shoppers, and the event stream.

func queueSale(id string, stock int64, q map[string]any, extra map[string]any) map[string]any {
	q["enabled"] = true
	s := map[string]any{"id": id, "stock": stock, "queue": q}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

func (r reply) num(k string) (float64, bool) { f, ok := r.Body[k].(float64); return f, ok }

// TestQueueJoinPollLeave: a shopper joins (201, a ticket), joins again (200,
// the same ticket), polls the position, leaves; nobody sees another's
// ticket; tokens of a queue sale come only from the queue.
func TestQueueJoinPollLeave(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	// One admission at once, then one every 100 s: the first joiner is let
	// in, the others wait.
	c.createSale(a.AdminToken, queueSale("q", 5, map[string]any{"admissionRate": 0.01}, nil))
	_, sa := c.session()
	_, sb := c.session()
	_, sc := c.session()
	join := func(session string) reply {
		t.Helper()
		return c.do("POST", "/api/v1/sales/q/queue", session, nil, nil)
	}

	ra := join(sa)
	if ra.Status != http.StatusCreated || ra.str("ticket") == "" {
		t.Fatalf("join: %d %s", ra.Status, ra.Raw)
	}
	if ra.str("status") != queue.Admitted || ra.Body["token"] != nil {
		t.Errorf("the first joiner: %s; want admitted, the token not handed over by the join", ra.Raw)
	}
	if again := join(sa); again.Status != http.StatusOK || again.str("ticket") != ra.str("ticket") {
		t.Fatalf("join again: %d %s, want 200 with ticket %s", again.Status, again.Raw, ra.str("ticket"))
	}
	// A join answered 202 is polled like any request: it names the ticket.
	if r := c.do("GET", "/api/v1/requests/"+ra.Header.Get("X-Request-Id"), sa, nil, nil); r.str("status") != "joined" || r.str("ticket") != ra.str("ticket") {
		t.Errorf("the join polled as a request: %d %s", r.Status, r.Raw)
	}
	rb, rc := join(sb), join(sc)
	if rb.Status != http.StatusCreated || rc.Status != http.StatusCreated {
		t.Fatalf("joins: %d %s / %d %s", rb.Status, rb.Raw, rc.Status, rc.Raw)
	}
	if p, _ := rb.num("position"); rb.str("status") != queue.Waiting || p != 1 {
		t.Errorf("second joiner: %s, want waiting at position 1", rb.Raw)
	}
	tb, tc := rb.str("ticket"), rc.str("ticket")
	g := c.do("GET", "/api/v1/sales/q/queue/"+tc, sc, nil, nil)
	p, _ := g.num("position")
	ahead, _ := g.num("ahead")
	eta, _ := g.num("etaSeconds")
	if g.Status != http.StatusOK || g.str("status") != queue.Waiting || p != 2 || ahead != 1 || eta != 100 {
		t.Errorf("poll: %d %s; want waiting, position 2, ahead 1, eta 100 s (1 ahead at 0.01/s)", g.Status, g.Raw)
	}

	// Nobody sees or leaves another's ticket.
	for _, m := range []string{"GET", "DELETE"} {
		if r := c.do(m, "/api/v1/sales/q/queue/"+tb, sc, nil, nil); r.Status != http.StatusNotFound || r.str("error") != "ticket_not_found" {
			t.Errorf("%s another's ticket: %d %s", m, r.Status, r.Raw)
		}
	}
	if r := c.do("GET", "/api/v1/sales/q/queue/nope", sc, nil, nil); r.Status != http.StatusNotFound {
		t.Errorf("an unknown ticket: %d %s", r.Status, r.Raw)
	}
	if r := c.do("DELETE", "/api/v1/sales/q/queue/"+tb, sb, nil, nil); r.Status != http.StatusOK || r.str("status") != queue.Left {
		t.Fatalf("leave: %d %s", r.Status, r.Raw)
	}
	if r := c.do("GET", "/api/v1/sales/q/queue/"+tb, sb, nil, nil); r.str("status") != queue.Left {
		t.Errorf("after leaving: %s", r.Raw)
	}
	if r := c.do("GET", "/api/v1/sales/q/queue/"+tc, sc, nil, nil); r.Body["position"] != 1.0 {
		t.Errorf("behind the one who left: %s, want position 1", r.Raw)
	}

	// Tokens only from the queue.
	if r := c.do("POST", "/api/v1/sales/q/tokens", sc, nil, nil); r.Status != http.StatusForbidden || r.str("error") != "queue_required" {
		t.Errorf("token request on a queue sale: %d %s, want 403 queue_required", r.Status, r.Raw)
	}
	// The admitted shopper takes the token and buys with it.
	g = c.do("GET", "/api/v1/sales/q/queue/"+ra.str("ticket"), sa, nil, nil)
	if g.str("status") != queue.Admitted || g.str("token") == "" || g.str("claimBy") == "" || g.str("tokenId") != ra.str("ticket") {
		t.Fatalf("the admitted ticket: %s", g.Raw)
	}
	if r := c.do("POST", "/api/v1/sales/q/purchases", sa, map[string]string{"X-Purchase-Token": g.str("token")}, nil); r.Status != http.StatusAccepted {
		t.Fatalf("buy with the queue's token: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 5*time.Second, func() error {
		if r := c.do("GET", "/api/v1/sales/q/queue/"+ra.str("ticket"), sa, nil, nil); r.str("status") != queue.Claimed || r.str("reason") != "bought" {
			return fmt.Errorf("after the purchase: %s", r.Raw)
		}
		return nil
	})

	// The sale's JSON shows the room; the metrics count it.
	s := c.do("GET", "/api/v1/sales/q", "", nil, nil)
	qj, _ := s.Body["queue"].(map[string]any)
	if qj == nil || qj["waiting"] != 1.0 || qj["admitted"] != 1.0 || qj["claimWindow"] != "2m0s" || qj["idleTimeout"] != "1m0s" {
		t.Errorf("sale JSON: %s", s.Raw)
	}
	m := c.do("GET", "/metrics", "", nil, nil)
	for _, want := range []string{`flashgate_queue_waiting{sale="q"} 1`, `flashgate_queue_admitted{sale="q"} 1`, "flashgate_queue_streams 0"} {
		if !strings.Contains(m.Raw, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A sale without a queue has none to join.
	c.createSale(a.AdminToken, map[string]any{"id": "plain", "stock": 1})
	if r := join(sa); r.Status != http.StatusConflict || r.str("error") != "limit_reached" {
		t.Errorf("join again after buying the limit: %d %s, want 409 limit_reached", r.Status, r.Raw)
	}
	if r := c.do("POST", "/api/v1/sales/plain/queue", sa, nil, nil); r.Status != http.StatusNotFound || r.str("error") != "queue_not_enabled" {
		t.Errorf("join a sale without a queue: %d %s", r.Status, r.Raw)
	}

	// The pre-queue: joins before the opening wait without a place; before
	// the pre-queue opens, 425 with both times.
	now := time.Now().UTC()
	c.createSale(a.AdminToken, queueSale("pre", 5, map[string]any{"preQueueOpensAt": now.Add(-time.Minute).Format(time.RFC3339Nano)},
		map[string]any{"opensAt": now.Add(time.Hour).Format(time.RFC3339Nano)}))
	r := c.do("POST", "/api/v1/sales/pre/queue", sb, nil, nil)
	if r.Status != http.StatusCreated || r.str("status") != queue.Waiting || r.Body["position"] != nil || r.Body["etaSeconds"] != nil {
		t.Errorf("pre-queue join: %d %s; want waiting, position and eta null", r.Status, r.Raw)
	}
	c.createSale(a.AdminToken, queueSale("later", 5, map[string]any{"preQueueOpensAt": now.Add(time.Hour).Format(time.RFC3339Nano)},
		map[string]any{"opensAt": now.Add(2 * time.Hour).Format(time.RFC3339Nano)}))
	r = c.do("POST", "/api/v1/sales/later/queue", sb, nil, nil)
	if r.Status != http.StatusTooEarly || r.str("error") != "not_open" || r.str("preQueueOpensAt") == "" || r.str("opensAt") == "" {
		t.Errorf("join before the pre-queue: %d %s", r.Status, r.Raw)
	}
}

// TestQueueFlow: 200 shoppers join a sale of 20 (quota 24) whose room lets
// 50 a second in and gives each 2 s to take the token. Two thirds poll
// until admitted and buy; one third join and walk away. Exactly 20 are
// sold, every turn a walker was given is reclaimed, everyone else is told
// sold out, and the audit passes.
func TestQueueFlow(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, queueSale("flow", 20, map[string]any{"admissionRate": 50, "claimWindow": "2s", "idleTimeout": "1m"},
		map[string]any{"quotaBuffer": 1.2}))
	const shoppers = 200
	type result struct {
		walker         bool
		ticket, status string // the ticket's last status seen
		buy            int    // the purchase's HTTP status (0: none)
		buyErr         string
		err            error
	}
	results := make([]result, shoppers)
	hc := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for i := range shoppers {
		wg.Go(func() {
			res := &results[i]
			res.walker = i%3 == 2
			res.err = func() error {
				r, err := try(hc, a.URL, "POST", "/api/v1/session", "", nil)
				if err != nil || r.Status != http.StatusCreated {
					return fmt.Errorf("session: %v %s", err, r.Raw)
				}
				session := r.str("session")
				r, err = try(hc, a.URL, "POST", "/api/v1/sales/flow/queue", session, nil)
				if err != nil || (r.Status != http.StatusCreated && r.Status != http.StatusGone) {
					return fmt.Errorf("join: %v %d %s", err, r.Status, r.Raw)
				}
				if r.Status == http.StatusGone {
					res.status = r.str("error") // sold out before joining
					return nil
				}
				res.ticket, res.status = r.str("ticket"), r.str("status")
				if res.walker {
					return nil // the tab is closed: never polls, never takes the token
				}
				deadline := time.Now().Add(20 * time.Second)
				for res.status == queue.Waiting || res.status == queue.Admitted {
					if time.Now().After(deadline) {
						return fmt.Errorf("ticket %s still %s after 20 s", res.ticket, res.status)
					}
					r, err = try(hc, a.URL, "GET", "/api/v1/sales/flow/queue/"+res.ticket, session, nil)
					if err != nil || r.Status != http.StatusOK {
						return fmt.Errorf("poll: %v %d %s", err, r.Status, r.Raw)
					}
					res.status = r.str("status")
					if res.status == queue.Admitted {
						b, err := try(hc, a.URL, "POST", "/api/v1/sales/flow/purchases", session, map[string]string{"X-Purchase-Token": r.str("token")})
						if err != nil {
							return err
						}
						res.buy, res.buyErr = b.Status, b.str("error")
						return nil
					}
					time.Sleep(100 * time.Millisecond)
				}
				return nil
			}()
		})
	}
	wg.Wait()
	bought, soldOut := 0, 0
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("shopper %d: %v", i, r.err)
		case r.walker:
		case r.buy == http.StatusAccepted:
			bought++
		case r.buy == http.StatusGone && r.buyErr == "sold_out", r.buy == 0 && r.status == queue.SoldOut:
			soldOut++
		default:
			t.Errorf("shopper %d: ended %s, purchase %d %s", i, r.status, r.buy, r.buyErr)
		}
	}
	t.Logf("%d bought, %d told sold out", bought, soldOut)
	if bought != 20 {
		t.Errorf("%d purchases accepted, want exactly the stock 20", bought)
	}
	if s := c.do("GET", "/api/v1/admin/sales/flow", a.AdminToken, nil, nil); s.Body["sold"] != 20.0 {
		t.Errorf("the sale: %s", s.Raw)
	}
	// Every turn a walker was given ends unclaimed (within the 2 s window).
	reclaimed := 0
	waitFor(t, 10*time.Second, func() error {
		reclaimed = 0
		for i, r := range results {
			if !r.walker || r.ticket == "" {
				continue
			}
			v, ok := a.Front.QueueTicket("flow", r.ticket)
			switch {
			case !ok:
				return fmt.Errorf("walker %d: ticket %s unknown", i, r.ticket)
			case v.Status == queue.Expired && v.Reason == "unclaimed":
				reclaimed++
			case v.Status == queue.SoldOut:
			default:
				return fmt.Errorf("walker %d: ticket %s is %s (%s)", i, r.ticket, v.Status, v.Reason)
			}
		}
		return nil
	})
	if reclaimed == 0 {
		t.Error("no walker was ever admitted: the test did not test reclaiming")
	}
	t.Logf("%d walkers' turns reclaimed unclaimed", reclaimed)
	runAudit(t, a)
}

// try is one API call that reports failures instead of failing the test
// (for goroutines).
func try(hc *http.Client, base, method, path, bearer string, hdr map[string]string) (reply, error) {
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		return reply{}, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r, nil
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name, id string
	data     map[string]any
}

// eventStream reads a text/event-stream answer.
type eventStream struct {
	t      *testing.T
	status int
	header http.Header
	events chan sseEvent
	cancel context.CancelFunc
}

func openEvents(t *testing.T, base, path, session, lastID string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+session)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	s := &eventStream{t: t, status: resp.StatusCode, header: resp.Header, events: make(chan sseEvent, 64), cancel: cancel}
	t.Cleanup(s.close)
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		close(s.events)
		return s
	}
	go func() {
		defer resp.Body.Close()
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data bytes.Buffer
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if data.Len() > 0 {
					_ = json.Unmarshal(data.Bytes(), &ev.data)
					s.events <- ev
				}
				ev, data = sseEvent{}, bytes.Buffer{}
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data.WriteString(strings.TrimPrefix(line, "data: "))
			}
		}
	}()
	return s
}

func (s *eventStream) close() { s.cancel() }

// next returns the next event; ok=false when the stream ended.
func (s *eventStream) next(timeout time.Duration) (sseEvent, bool) {
	s.t.Helper()
	select {
	case ev, ok := <-s.events:
		return ev, ok
	case <-time.After(timeout):
		s.t.Fatalf("no event in %v", timeout)
	}
	return sseEvent{}, false
}

// TestQueueEvents: a shopper's stream shows the position move, then the
// admission with a token that buys; a reconnect after the admission (with
// Last-Event-ID) gets the token again; the stream ends after the purchase;
// a full server refuses another stream.
func TestQueueEvents(t *testing.T) {
	a := startApp(t, app.Config{MaxQueueStreams: 2})
	c := newClient(t, a)
	// One admission a second, the first at once.
	c.createSale(a.AdminToken, queueSale("ev", 5, map[string]any{"admissionRate": 1, "claimWindow": "10s"}, nil))
	var sessions []string
	var tickets []string
	for range 3 {
		_, s := c.session()
		r := c.do("POST", "/api/v1/sales/ev/queue", s, nil, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("join: %d %s", r.Status, r.Raw)
		}
		sessions, tickets = append(sessions, s), append(tickets, r.str("ticket"))
	}
	path := "/api/v1/sales/ev/queue/" + tickets[2] + "/events"
	if r := c.do("GET", path, sessions[1], nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("another shopper's stream: %d %s", r.Status, r.Raw)
	}
	st := openEvents(t, a.URL, path, sessions[2], "")
	if st.status != http.StatusOK || !strings.HasPrefix(st.header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %v", st.status, st.header)
	}
	var positions []float64
	var admitted sseEvent
	lastPosAt := time.Time{}
	for admitted.name == "" {
		ev, ok := st.next(10 * time.Second)
		if !ok {
			t.Fatal("the stream ended before the admission")
		}
		if _, err := strconv.ParseUint(ev.id, 10, 64); err != nil {
			t.Errorf("event %s has id %q, want the batch version", ev.name, ev.id)
		}
		switch ev.name {
		case "position":
			if ev.data["status"] != queue.Waiting {
				t.Errorf("position event %v", ev.data)
			}
			// At least a second apart when sent; as received, a late read
			// of the first can bring them closer.
			if !lastPosAt.IsZero() && time.Since(lastPosAt) < 500*time.Millisecond {
				t.Errorf("two position events %v apart", time.Since(lastPosAt))
			}
			lastPosAt = time.Now()
			p, _ := ev.data["position"].(float64)
			positions = append(positions, p)
		case "admitted":
			admitted = ev
		default:
			t.Fatalf("unexpected event %s %v", ev.name, ev.data)
		}
	}
	if len(positions) < 2 || positions[0] != 2 || positions[len(positions)-1] != 1 {
		t.Errorf("positions seen %v, want from 2 down to 1", positions)
	}
	token, _ := admitted.data["token"].(string)
	if admitted.data["status"] != queue.Admitted || token == "" || admitted.data["claimBy"] == nil || admitted.data["tokenId"] != tickets[2] {
		t.Fatalf("admitted event %v", admitted.data)
	}
	st.close()
	waitFor(t, 5*time.Second, func() error {
		if m := c.do("GET", "/metrics", "", nil, nil); !strings.Contains(m.Raw, "flashgate_queue_streams 0") {
			return fmt.Errorf("the closed stream still counts")
		}
		return nil
	})

	// Reconnect: the token again, at once.
	st2 := openEvents(t, a.URL, path, sessions[2], admitted.id)
	ev, ok := st2.next(5 * time.Second)
	if !ok || ev.name != "admitted" || ev.data["token"] != token {
		t.Fatalf("after a reconnect: %s %v, want the admitted event with the same token", ev.name, ev.data)
	}
	// Two streams open (MaxQueueStreams 2): a third is refused.
	st3 := openEvents(t, a.URL, "/api/v1/sales/ev/queue/"+tickets[1]+"/events", sessions[1], "")
	if st3.status != http.StatusOK {
		t.Fatalf("second stream: %d", st3.status)
	}
	full := openEvents(t, a.URL, "/api/v1/sales/ev/queue/"+tickets[0]+"/events", sessions[0], "")
	if full.status != http.StatusServiceUnavailable || full.header.Get("Retry-After") != "5" {
		t.Errorf("a stream beyond the bound: %d, Retry-After %q; want 503, 5", full.status, full.header.Get("Retry-After"))
	}
	m := c.do("GET", "/metrics", "", nil, nil)
	if !strings.Contains(m.Raw, "flashgate_queue_streams 2") {
		t.Error("metrics do not count the 2 open streams")
	}
	// The token buys; the stream says so and ends.
	if r := c.do("POST", "/api/v1/sales/ev/purchases", sessions[2], map[string]string{"X-Purchase-Token": token}, nil); r.Status != http.StatusAccepted {
		t.Fatalf("buy with the streamed token: %d %s", r.Status, r.Raw)
	}
	ev, ok = st2.next(5 * time.Second)
	if !ok || ev.name != "done" || ev.data["status"] != queue.Claimed || ev.data["reason"] != "bought" {
		t.Fatalf("after the purchase: %s %v, want done claimed/bought", ev.name, ev.data)
	}
	if _, ok := st2.next(5 * time.Second); ok {
		t.Error("the stream goes on after done")
	}
	// The server stopping ends the streams.
	done := make(chan struct{})
	go func() {
		for range st3.events {
		}
		close(done)
	}()
	go func() { _ = a.Shutdown() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a stream outlived the server's shutdown by 10 s")
	}
}

// TestQueueSurvivesRestart: a restarted process rebuilds its room from the
// decision history: every ticket and position is where it was.
func TestQueueSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, app.Config{Data: dir})
	c := newClient(t, a)
	c.createSale(a.AdminToken, queueSale("r", 5, map[string]any{"admissionRate": 0.01}, nil))
	type joined struct{ session, ticket, status string }
	var js []joined
	for range 4 {
		_, s := c.session()
		r := c.do("POST", "/api/v1/sales/r/queue", s, nil, nil)
		if r.Status != http.StatusCreated {
			t.Fatalf("join: %d %s", r.Status, r.Raw)
		}
		js = append(js, joined{s, r.str("ticket"), r.str("status")})
	}
	if r := c.do("DELETE", "/api/v1/sales/r/queue/"+js[1].ticket, js[1].session, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("leave: %d %s", r.Status, r.Raw)
	}
	before := map[string]string{}
	for _, j := range js {
		before[j.ticket] = c.do("GET", "/api/v1/sales/r/queue/"+j.ticket, j.session, nil, nil).Raw
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	b := startApp(t, app.Config{Data: dir})
	c = newClient(t, b)
	for _, j := range js {
		got := c.do("GET", "/api/v1/sales/r/queue/"+j.ticket, j.session, nil, nil)
		if j.ticket == js[0].ticket {
			// The admitted ticket's token is signed anew: compare the rest.
			if got.str("status") != queue.Admitted || got.str("tokenId") != j.ticket {
				t.Errorf("admitted ticket after a restart: %s", got.Raw)
			}
			continue
		}
		if got.Raw != before[j.ticket] {
			t.Errorf("ticket %s: before the restart %s, after %s", j.ticket, before[j.ticket], got.Raw)
		}
	}
	if s := c.do("GET", "/api/v1/sales/r", "", nil, nil); !strings.Contains(s.Raw, `"waiting":2`) || !strings.Contains(s.Raw, `"admitted":1`) {
		t.Errorf("sale after a restart: %s", s.Raw)
	}
}

// TestQueueReopened: an operator closes a queue sale, then opens it again:
// the ticket still waiting reads closed, then waiting again in its place;
// a new join waits behind it; the process keeps telling the writer its
// shopper is there.
func TestQueueReopened(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, queueSale("re", 5, map[string]any{"admissionRate": 0.01, "idleTimeout": "10s"}, nil))
	join := func(session string) reply {
		t.Helper()
		return c.do("POST", "/api/v1/sales/re/queue", session, nil, nil)
	}
	_, sa := c.session()
	_, sb := c.session()
	_, sc := c.session()
	if r := join(sa); r.str("status") != queue.Admitted {
		t.Fatalf("the first joiner: %d %s", r.Status, r.Raw)
	}
	rb := join(sb)
	if rb.Status != http.StatusCreated || rb.str("status") != queue.Waiting {
		t.Fatalf("the second joiner: %d %s", rb.Status, rb.Raw)
	}
	ticket := "/api/v1/sales/re/queue/" + rb.str("ticket")
	status := func(want string, position float64) func() error {
		return func() error {
			r := c.do("GET", ticket, sb, nil, nil)
			if p, _ := r.num("position"); r.str("status") != want || p != position {
				return fmt.Errorf("ticket: %d %s, want %s at position %v", r.Status, r.Raw, want, position)
			}
			return nil
		}
	}
	if r := c.do("POST", "/api/v1/admin/sales/re/close", a.AdminToken, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("close: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 5*time.Second, status(queue.Closed, 0))
	if r := c.do("POST", "/api/v1/admin/sales/re/open", a.AdminToken, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("open: %d %s", r.Status, r.Raw)
	}
	waitFor(t, 5*time.Second, status(queue.Waiting, 1))
	if r := join(sc); r.Status != http.StatusCreated || r.str("status") != queue.Waiting || r.Body["position"] != 2.0 {
		t.Errorf("a join after reopening: %d %s, want 201 waiting at position 2", r.Status, r.Raw)
	}
	if s := c.do("GET", "/api/v1/sales/re", "", nil, nil); !strings.Contains(s.Raw, `"waiting":2`) {
		t.Errorf("the sale after reopening: %s, want 2 waiting", s.Raw)
	}
	// The presence pings go on: the writer hears that b is there.
	seen := a.Front.SaleStats("re").Decisions["QueueSeen"]
	waitFor(t, 5*time.Second, func() error {
		c.do("GET", ticket, sb, nil, nil)
		if n := a.Front.SaleStats("re").Decisions["QueueSeen"]; n == seen {
			return fmt.Errorf("no presence ping since the reopening")
		}
		return nil
	})
}

// TestQueueTicketNotFoldedYet: a ticket another process took the join of,
// which this process has not folded yet, is waited for (it is young), not
// answered 404; an old unknown ticket is 404 at once.
func TestQueueTicketNotFoldedYet(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, queueSale("lag", 5, map[string]any{"admissionRate": 0.01}, nil))
	shopper, session := c.session()
	now := time.Now().UTC()
	id := events.NewIDs().New(now)
	got := make(chan reply, 1)
	go func() {
		r, err := try(&http.Client{Timeout: 10 * time.Second}, a.URL, "GET", "/api/v1/sales/lag/queue/"+id, session, nil)
		if err != nil {
			r.Raw = err.Error()
		}
		got <- r
	}()
	// The join, as another process appends it, a moment later.
	time.Sleep(300 * time.Millisecond)
	data, err := events.EncodeRequests(events.RequestBatch{Requests: []events.Event{{ID: id, Type: events.TypeQueueJoinRequested,
		Version: events.SchemaVersion, Sale: "lag", Time: now, Shopper: shopper, Data: &events.QueueJoinRequested{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.JS.Publish(context.Background(), events.RequestSubject("lag"), data); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.Status != http.StatusOK || r.str("ticket") != id || r.str("status") != queue.Admitted {
		t.Fatalf("a ticket joined elsewhere a moment ago: %d %s, want 200 admitted", r.Status, r.Raw)
	}
	old := events.NewIDs().New(now.Add(-time.Hour))
	start := time.Now()
	if r := c.do("GET", "/api/v1/sales/lag/queue/"+old, session, nil, nil); r.Status != http.StatusNotFound || time.Since(start) > 1800*time.Millisecond { // a young one waits DecisionWait (2 s)
		t.Errorf("an old unknown ticket: %d %s after %v, want 404 at once", r.Status, r.Raw, time.Since(start))
	}
}

// TestQueueStreamsPerShopper: one shopper holds at most two streams (two
// tabs); a third is 429 rate_limited with Retry-After 5, until one closes.
func TestQueueStreamsPerShopper(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, queueSale("ps", 5, map[string]any{"admissionRate": 0.01}, nil))
	_, first := c.session()
	c.do("POST", "/api/v1/sales/ps/queue", first, nil, nil)
	_, s := c.session()
	r := c.do("POST", "/api/v1/sales/ps/queue", s, nil, nil)
	if r.Status != http.StatusCreated || r.str("status") != queue.Waiting {
		t.Fatalf("join: %d %s", r.Status, r.Raw)
	}
	path := "/api/v1/sales/ps/queue/" + r.str("ticket") + "/events"
	var open []*eventStream
	for i := range 2 {
		st := openEvents(t, a.URL, path, s, "")
		if st.status != http.StatusOK {
			t.Fatalf("stream %d: %d", i, st.status)
		}
		if ev, ok := st.next(5 * time.Second); !ok || ev.name != "position" {
			t.Fatalf("stream %d: %s %v", i, ev.name, ev.data)
		}
		open = append(open, st)
	}
	third := c.do("GET", path, s, map[string]string{"Accept": "text/event-stream"}, nil)
	if third.Status != http.StatusTooManyRequests || third.str("error") != "rate_limited" || third.Header.Get("Retry-After") != "5" {
		t.Fatalf("a third stream: %d %s, Retry-After %q; want 429 rate_limited, 5", third.Status, third.Raw, third.Header.Get("Retry-After"))
	}
	open[0].close()
	waitFor(t, 5*time.Second, func() error {
		st := openEvents(t, a.URL, path, s, "")
		defer st.close()
		if st.status != http.StatusOK {
			return fmt.Errorf("a stream after one closed: %d", st.status)
		}
		return nil
	})
}

// TestQueueSettingsRefused: an admission rate below 0.01 a second and an
// idle timeout below 10 s are refused, naming the field.
func TestQueueSettingsRefused(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	for i, tc := range []struct {
		q     map[string]any
		field string
	}{
		{map[string]any{"admissionRate": 0.001}, "queue.admissionRate"},
		{map[string]any{"admissionRate": 0}, "queue.admissionRate"},
		{map[string]any{"idleTimeout": "5s"}, "queue.idleTimeout"},
		{map[string]any{"idleTimeout": "9.9s"}, "queue.idleTimeout"},
	} {
		r := c.do("POST", "/api/v1/admin/sales", a.AdminToken, nil, queueSale(fmt.Sprint("bad", i), 5, tc.q, nil))
		if r.Status != http.StatusBadRequest || r.str("field") != tc.field {
			t.Errorf("queue %v: %d %s, want 400 naming %s", tc.q, r.Status, r.Raw, tc.field)
		}
	}
	c.createSale(a.AdminToken, queueSale("ok", 5, map[string]any{"admissionRate": 0.01, "idleTimeout": "10s"}, nil))
}

// TestQueueRejoinAfterClaim: a claimed ticket whose token has not bought
// stays the shopper's: joining again answers the same ticket (admitted; the
// join does not hand the token over), reading it hands the same token over
// again, and leaving gives the token back.
func TestQueueRejoinAfterClaim(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, queueSale("rj", 5, map[string]any{"admissionRate": 0.01}, nil))
	_, s := c.session()
	r := c.do("POST", "/api/v1/sales/rj/queue", s, nil, nil)
	if r.Status != http.StatusCreated || r.str("status") != queue.Admitted {
		t.Fatalf("join: %d %s", r.Status, r.Raw)
	}
	ticket := r.str("ticket")
	g := c.do("GET", "/api/v1/sales/rj/queue/"+ticket, s, nil, nil)
	if g.str("token") == "" {
		t.Fatalf("the admitted ticket: %s", g.Raw)
	}
	waitFor(t, 5*time.Second, func() error {
		if v, _ := a.Front.QueueTicket("rj", ticket); v.Status != queue.Claimed {
			return fmt.Errorf("ticket %s is %s, want claimed", ticket, v.Status)
		}
		return nil
	})
	again := c.do("POST", "/api/v1/sales/rj/queue", s, nil, nil)
	if again.Status != http.StatusOK || again.str("ticket") != ticket || again.str("status") != queue.Admitted || again.Body["token"] != nil {
		t.Fatalf("join again with the token unused: %d %s, want 200, the same ticket, admitted, no token", again.Status, again.Raw)
	}
	if g2 := c.do("GET", "/api/v1/sales/rj/queue/"+ticket, s, nil, nil); g2.str("token") == "" || g2.str("tokenId") != g.str("tokenId") {
		t.Errorf("the ticket read again: %s, want the same token", g2.Raw)
	}
	if l := c.do("DELETE", "/api/v1/sales/rj/queue/"+ticket, s, nil, nil); l.Status != http.StatusOK || l.str("status") != queue.Left {
		t.Fatalf("leave with the token unused: %d %s", l.Status, l.Raw)
	}
	waitFor(t, 5*time.Second, func() error {
		if r := c.do("GET", "/api/v1/admin/sales/rj", a.AdminToken, nil, nil); r.Body["tokensOutstanding"] != 0.0 {
			return fmt.Errorf("after leaving: %s, want the token given back", r.Raw)
		}
		return nil
	})
}
