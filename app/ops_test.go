package app_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads and parses /metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	return fams
}

// value finds the sample of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsAfterAScriptedSale(t *testing.T) {
	a := startApp(t, app.Config{})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 5}) // quota 6
	var tokens []reply
	var sessions []string
	for i := 0; i < 8; i++ {
		_, sess := c.session()
		r := c.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil)
		if r.Status == http.StatusCreated {
			tokens, sessions = append(tokens, r), append(sessions, sess)
		}
	}
	if len(tokens) != 6 {
		t.Fatalf("%d tokens, want the quota 6", len(tokens))
	}
	for i := 0; i < 3; i++ {
		if r := c.do("POST", "/api/v1/sales/s/purchases", sessions[i], map[string]string{"X-Purchase-Token": tokens[i].str("token")}, nil); r.Status != http.StatusAccepted {
			t.Fatalf("purchase: %d %s", r.Status, r.Raw)
		}
	}
	waitFor(t, 10*time.Second, func() error {
		fams := scrape(t, a.MetricsURL)
		if v, _ := value(fams, "flashgate_projection_lag_messages", nil); v != 0 {
			return fmt.Errorf("projection lag %v", v)
		}
		return nil
	})
	fams := scrape(t, a.MetricsURL)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"flashgate_http_requests_total", map[string]string{"route": "POST /api/v1/sales/{sale}/tokens", "code": "201"}, 6},
		{"flashgate_http_requests_total", map[string]string{"route": "POST /api/v1/sales/{sale}/tokens", "code": "410"}, 2},
		{"flashgate_http_requests_total", map[string]string{"route": "POST /api/v1/sales/{sale}/purchases", "code": "202"}, 3},
		{"flashgate_http_requests_total", map[string]string{"route": "POST /api/v1/session", "code": "201"}, 8},
		{"flashgate_http_request_duration_seconds", map[string]string{"route": "POST /api/v1/sales/{sale}/tokens"}, 8},
		{"flashgate_decisions_total", map[string]string{"sale": "s", "type": "TokenIssued", "reason": ""}, 6},
		{"flashgate_decisions_total", map[string]string{"sale": "s", "type": "TokenDenied", "reason": "quota_exhausted"}, 2},
		{"flashgate_decisions_total", map[string]string{"sale": "s", "type": "PurchaseAccepted", "reason": ""}, 3},
		{"flashgate_sale_stock_left", map[string]string{"sale": "s"}, 2},
		{"flashgate_sale_tokens_outstanding", map[string]string{"sale": "s"}, 3},
		{"flashgate_sale_tokens_issued", map[string]string{"sale": "s"}, 6},
		{"flashgate_sale_quota_left", map[string]string{"sale": "s"}, 0},
		{"flashgate_nats_connected", nil, 1},
		{"flashgate_request_answers_total", map[string]string{"kind": "token", "outcome": "decided"}, 8},
		{"flashgate_request_answers_total", map[string]string{"kind": "purchase", "outcome": "decided"}, 3},
		{"flashgate_requests_in_flight", nil, 0},
	} {
		if got, ok := value(fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// Group commit: every decided request counted in a batch.
	var sum float64
	for _, m := range fams["flashgate_commit_batch_requests"].GetMetric() {
		sum += m.GetHistogram().GetSampleSum()
	}
	if sum != 11 {
		t.Errorf("requests in committed batches: %v, want 11", sum)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	// Label cardinality: no raw paths, no ids.
	for _, m := range fams["flashgate_http_requests_total"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "route" && strings.Contains(l.GetValue(), "01") {
				t.Errorf("raw path in a label: %s", l.GetValue())
			}
		}
	}
}

func TestReadinessFollowsNATS(t *testing.T) {
	dir := t.TempDir()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	ns, err := embed.Start(embed.Options{Dir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown() }()
	a := startApp(t, app.Config{NATSURL: ns.ClientURL()})
	c := newClient(t, a)
	ready := func(want bool) func() error {
		return func() error {
			r := c.do("GET", "/readyz", "", nil, nil)
			if (r.Status == 200) != want {
				return fmt.Errorf("readyz %d %s", r.Status, r.Raw)
			}
			return nil
		}
	}
	waitFor(t, 10*time.Second, ready(true))
	ns.Shutdown()
	waitFor(t, 10*time.Second, ready(false))
	r := c.do("GET", "/readyz", "", nil, nil)
	checks, _ := r.Body["checks"].(map[string]any)
	if checks["nats"] == "ok" || r.Header.Get("Retry-After") == "" {
		t.Errorf("not ready, but it does not say NATS: %s", r.Raw)
	}
	if h := c.do("GET", "/healthz", "", nil, nil); h.Status != 200 {
		t.Errorf("healthz while NATS is away: %d (the process is alive)", h.Status)
	}
	ns, err = embed.Start(embed.Options{Dir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, ready(true))
}

func TestNATSListenerAndDebug(t *testing.T) {
	a := startApp(t, app.Config{NATSListen: "127.0.0.1:0", DebugAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"})
	if !strings.HasPrefix(a.NATSPublic, "nats://flashgate:") {
		t.Fatalf("NATS URL %q", a.NATSPublic)
	}
	nc, err := nats.Connect(a.NATSPublic)
	if err != nil {
		t.Fatalf("the standard tools cannot connect: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Stream(context.Background(), events.StreamName); err != nil {
		t.Fatalf("stream not visible over TCP: %v", err)
	}
	bare := strings.Replace(a.NATSPublic, a.NATSPublic[len("nats://"):strings.Index(a.NATSPublic, "@")+1], "", 1)
	if nc2, err := nats.Connect(bare); err == nil {
		nc2.Close()
		t.Fatalf("connected to %s without credentials", bare)
	}
	c := newClient(t, a)
	if r := c.do("GET", "/debug/pprof/", "", nil, nil); r.Status != http.StatusNotFound {
		t.Errorf("pprof on the public listener: %d", r.Status)
	}
	if r := c.do("GET", "/metrics", "", nil, nil); r.Status != http.StatusNotFound {
		t.Errorf("metrics on the public listener though --metrics-addr is set: %d", r.Status)
	}
	for _, u := range []string{a.DebugURL, a.MetricsURL} {
		resp, err := http.Get(u)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("GET %s: %v %v", u, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
}

// TestReadinessAfterASaleMovesAway: a process that loses a sale to another
// live process stays ready (losing the lease is no failure), and the sale
// keeps being served.
func TestReadinessAfterASaleMovesAway(t *testing.T) {
	ns, err := embed.Start(embed.Options{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	a := startApp(t, app.Config{NATSURL: ns.ClientURL(), LeaseTTL: 2 * time.Second})
	ca := newClient(t, a)
	ca.createSale(a.AdminToken, map[string]any{"id": "s", "stock": 100000})
	_, sess := ca.session()
	if r := ca.do("POST", "/api/v1/sales/s/tokens", sess, nil, nil); r.Status != http.StatusCreated {
		t.Fatalf("token: %d %s", r.Status, r.Raw)
	}
	bdir := t.TempDir()
	b := startApp(t, app.Config{Data: bdir, NATSURL: ns.ClientURL(), LeaseTTL: 2 * time.Second, PurchaseKeyFile: filepath.Join(a.DataDir, "keys", "purchase-tokens.json"),
		SessionKeyFile: filepath.Join(a.DataDir, "keys", "sessions.json")})
	bnode, err := os.ReadFile(filepath.Join(bdir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	// Hand the sale to b: its lease now names b's node.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), events.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "s", []byte(strings.TrimSpace(string(bnode)))); err != nil {
		t.Fatal(err)
	}
	cb := newClient(t, b)
	waitFor(t, 15*time.Second, func() error {
		_, s2 := cb.session()
		if r := cb.do("POST", "/api/v1/sales/s/tokens", s2, nil, nil); r.Status != http.StatusCreated {
			return fmt.Errorf("token through b after the handover: %d %s", r.Status, r.Raw)
		}
		st, err := js.Stream(context.Background(), events.StreamName)
		if err != nil {
			return err
		}
		m, err := st.GetLastMsgForSubject(context.Background(), events.DecisionSubject("s"))
		if err != nil || !strings.Contains(string(m.Data), strings.TrimSpace(string(bnode))) {
			return fmt.Errorf("the last batch is not b's yet")
		}
		return nil
	})
	for name, c := range map[string]*client{"a (lost the sale)": ca, "b (took it)": cb} {
		waitFor(t, 10*time.Second, func() error {
			if r := c.do("GET", "/readyz", "", nil, nil); r.Status != 200 {
				return fmt.Errorf("%s: readyz %d %s", name, r.Status, r.Raw)
			}
			return nil
		})
	}
}

// TestViewsYieldToAFlood: while shoppers wait for decisions, the SQLite
// views take a small share of a core and fall behind (here far beyond
// ReadyLag); the process stays ready all along, and once the flood is over
// the views catch up and readiness is held to ReadyLag again.
func TestViewsYieldToAFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood of 3,000 token requests")
	}
	a := startApp(t, app.Config{ReadyLag: 50, FloodLag: 1_000_000, ProjectionShare: 0.01})
	c := newClient(t, a)
	c.createSale(a.AdminToken, map[string]any{"id": "flood", "stock": 1_000_000, "tokenTTL": "10m"})
	// The checks behind /readyz, uncached (it keeps an answer for a second).
	ready := func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ok, checks := a.Ready(ctx)
		return ok, checks["projections"]
	}
	waitFor(t, 10*time.Second, func() error {
		if ok, s := ready(); !ok {
			return fmt.Errorf("not ready (projections %q)", s)
		}
		return nil
	})

	const shoppers, each = 48, 64
	sessions := make([][]string, shoppers)
	for i := range sessions {
		for range each {
			_, s := c.session()
			sessions[i] = append(sessions[i], s)
		}
	}
	var wg sync.WaitGroup
	var answered atomic.Int64
	var failed []string
	var mu sync.Mutex
	for _, mine := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, session := range mine {
				// 201, or 202 pending on a runner too slow to decide within
				// the decision wait: either way stored and to be decided.
				r := c.do("POST", "/api/v1/sales/flood/tokens", session, nil, nil)
				if r.Status == http.StatusCreated || r.Status == http.StatusAccepted {
					answered.Add(1)
					continue
				}
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%d %s", r.Status, r.Raw))
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Ready at every look: during the flood and while the views catch up
	// after it, until they are within ReadyLag again.
	var notReady []string
	caughtBehind, flooding := false, true
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			flooding = false
		case <-time.After(20 * time.Millisecond):
		}
		ok, s := ready()
		if !ok {
			notReady = append(notReady, fmt.Sprintf("%s (in flight %d, answered %d)", s, a.Front.InFlight(), answered.Load()))
		}
		behind := strings.Contains(s, "behind for a flood")
		caughtBehind = caughtBehind || behind
		if !flooding && ok && !behind {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the views have not caught up 60 s after the flood: %q", s)
		}
	}
	if len(notReady) > 0 {
		t.Errorf("not ready during the flood or the catch-up: %q", notReady)
	}
	if !caughtBehind {
		t.Errorf("the views never fell more than ReadyLag (50 messages) behind during %d token requests at a 1%% share", shoppers*each)
	}
	if len(failed) > 0 {
		t.Errorf("%d token requests failed, the first: %s", len(failed), failed[0])
	}
	runAudit(t, a)
}
