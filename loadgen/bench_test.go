package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fake is a stand-in flashgate: sessions, tokens (the same one when a
// shopper asks again), purchases with a token of the shopper's own, and
// the admin figures from what it answered.
type fake struct {
	*httptest.Server
	sessions, tokens, purchases atomic.Int64
	block                       chan struct{} // token requests wait for it to close
	release                     sync.Once     // closes block 500 ms after the first token request
	delay                       time.Duration // of every token answer
}

func newFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/session", func(w http.ResponseWriter, r *http.Request) {
		n := f.sessions.Add(1)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"expiresAt":"2030-01-01T00:00:00Z","session":"sess-%d","shopper":"shopper-%d"}`, n, n)
	})
	session := func(w http.ResponseWriter, r *http.Request) (string, bool) {
		s, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"unauthenticated"}`)
		}
		return s, ok
	}
	mux.HandleFunc("POST /api/v1/admin/sales", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{}`)
	})
	mux.HandleFunc("POST /api/v1/sales/{sale}/tokens", func(w http.ResponseWriter, r *http.Request) {
		s, ok := session(w, r)
		if !ok {
			return
		}
		if f.block != nil {
			f.release.Do(func() { time.AfterFunc(500*time.Millisecond, func() { close(f.block) }) })
			<-f.block
		}
		time.Sleep(f.delay)
		f.tokens.Add(1)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"expiresAt":"2030-01-01T00:00:00Z","status":"issued","token":"tok-%s","tokenId":"id-%s"}`, s, s)
	})
	mux.HandleFunc("POST /api/v1/sales/{sale}/purchases", func(w http.ResponseWriter, r *http.Request) {
		s, ok := session(w, r)
		if !ok {
			return
		}
		if r.Header.Get("X-Purchase-Token") != "tok-"+s {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"token_invalid"}`)
			return
		}
		n := f.purchases.Add(1)
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"orderId":"order-%d","status":"accepted"}`, n)
	})
	mux.HandleFunc("GET /api/v1/admin/sales/{sale}", func(w http.ResponseWriter, r *http.Request) {
		// The fake issues the too-fast shopper's token again each time: count
		// it once, as flashgate does.
		fmt.Fprintf(w, `{"stock":1000000,"quota":1200000,"sold":%d,"tokensIssued":%d,"tokensExpired":0,"tokensOutstanding":0}`,
			f.purchases.Load(), f.tokens.Load())
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func bench(t *testing.T, o Options) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Bench(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestClosedExactRequests: with Requests, the measured phase is exactly
// that many iterations, after a warm-up that is not counted.
func TestClosedExactRequests(t *testing.T) {
	f := newFake(t)
	rep := bench(t, Options{URL: f.URL, AdminToken: "admin", VUs: 8, Requests: 137, Warmup: 30 * time.Millisecond})
	if rep.Requests != 137 || rep.Iterations != 137 || rep.Status[201] != 137 || rep.Errors != 0 || rep.Model != "closed" {
		t.Fatalf("requests %d iterations %d status %v errors %d model %s", rep.Requests, rep.Iterations, rep.Status, rep.Errors, rep.Model)
	}
	if got := f.tokens.Load(); got != rep.Shoppers.Used || got < 137 {
		t.Errorf("the server answered %d token requests, the run used %d shoppers", got, rep.Shoppers.Used)
	}
	var inSeries int64
	for _, s := range rep.Series {
		inSeries += s.Requests
	}
	if inSeries != 137 {
		t.Errorf("the series holds %d requests", inSeries)
	}
	if !rep.Verdict.Checked || !rep.Verdict.OK || rep.Figures == nil {
		t.Errorf("verdict %+v", rep.Verdict)
	}
	if rep.Throughput <= 0 || rep.Latency.Count != 137 || rep.Latency.P50 <= 0 || rep.DurationSeconds <= 0 {
		t.Errorf("figures: %+v", rep)
	}
}

// TestClosedDuration: a timed closed run stops on time.
func TestClosedDuration(t *testing.T) {
	f := newFake(t)
	f.delay = 2 * time.Millisecond // 4 users make at most 600 requests in 300 ms
	rep := bench(t, Options{URL: f.URL, AdminToken: "admin", VUs: 4, Duration: 300 * time.Millisecond, Shoppers: 1500})
	// The measured phase ends at 300 ms and the answers in flight then.
	if rep.DurationSeconds < 0.3 || rep.DurationSeconds > 3 || rep.Requests == 0 || rep.Shoppers.Exhausted {
		t.Errorf("duration %v s, %d requests", rep.DurationSeconds, rep.Requests)
	}
}

// TestPoolRunsOut: a run whose shoppers run out ends there and says so.
func TestPoolRunsOut(t *testing.T) {
	f := newFake(t)
	rep := bench(t, Options{URL: f.URL, AdminToken: "admin", VUs: 4, Requests: 100, Shoppers: 40})
	if rep.Requests != 40 || !rep.Shoppers.Exhausted || len(rep.Notes) == 0 || !strings.Contains(rep.Notes[0], "ran out") {
		t.Errorf("requests %d, shoppers %+v, notes %q", rep.Requests, rep.Shoppers, rep.Notes)
	}
}

// TestOpenRate: the open model starts exactly the iterations due in the
// measured phase, at the rate asked for.
func TestOpenRate(t *testing.T) {
	f := newFake(t)
	rep := bench(t, Options{URL: f.URL, AdminToken: "admin", Rate: 400, Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond})
	if rep.Model != "open" || rep.Schedule == nil || rep.Schedule.Started != 200 || rep.Requests != 200 || rep.Schedule.Dropped != 0 {
		t.Fatalf("model %s schedule %+v requests %d", rep.Model, rep.Schedule, rep.Requests)
	}
	if rep.Throughput <= 0 || rep.Throughput > 410 { // below 400 only when answers come late (a busy machine)
		t.Errorf("throughput %v, want at most about 400", rep.Throughput)
	}
	if rep.ServiceTime == nil || rep.ServiceTime.Count != 200 || rep.Schedule.Lag.Count != 200 {
		t.Errorf("service time %+v lag %+v", rep.ServiceTime, rep.Schedule.Lag)
	}
	if got := f.tokens.Load(); got != 240 {
		t.Errorf("the server answered %d token requests, want 40 of the warm-up and 200", got)
	}
}

// TestOpenMaxInFlight: when the server answers nothing, the open model
// stops at max-in-flight, counts the starts it dropped, says so, and the
// latency of what it did start includes the wait.
func TestOpenMaxInFlight(t *testing.T) {
	f := newFake(t)
	f.block = make(chan struct{})
	rep := bench(t, Options{URL: f.URL, AdminToken: "admin", Sale: "s", SkipVerdict: true,
		Rate: 2000, Duration: 200 * time.Millisecond, MaxInFlight: 5})
	s := rep.Schedule
	if s == nil || s.Started != 5 || s.Started+s.Dropped != 400 {
		t.Fatalf("schedule %+v, want 5 started of 400; kinds %+v, errors %v", s, rep.Kinds["token"], rep.FirstErrors)
	}
	if !strings.Contains(rep.Bottleneck, "max-in-flight") {
		t.Errorf("bottleneck %q", rep.Bottleneck)
	}
	if rep.Latency.Count != 5 || rep.Latency.P50 < 400 {
		t.Errorf("latency %+v: the wait is not in it", rep.Latency)
	}
	if rep.Verdict.Checked {
		t.Errorf("verdict checked though skipped")
	}
}

// TestMixed: the abusive share is exact, each class is recorded apart and
// the too-fast shopper's same token does not count as two.
func TestMixed(t *testing.T) {
	f := newFake(t)
	rep := bench(t, Options{URL: f.URL, AdminToken: "admin", Scenario: ScenarioMixed, Abusive: 0.3, VUs: 4, Requests: 100})
	want := map[string]struct {
		n      int64
		status int
	}{"token": {70, 201}, "purchase": {70, 202}, "no-session": {10, 401}, "bad-token": {10, 401}, "too-fast": {10, 201}}
	for k, w := range want {
		kr := rep.Kinds[k]
		if kr == nil || kr.Requests != w.n || kr.Status[w.status] != w.n {
			t.Errorf("%s: %+v, want %d x %d", k, kr, w.n, w.status)
		}
	}
	if rep.MainKind != "purchase" || rep.Requests != 70 || rep.Orders != 70 {
		t.Errorf("main %s requests %d orders %d", rep.MainKind, rep.Requests, rep.Orders)
	}
	// The fake counts the too-fast shopper's token each time it is asked.
	if !rep.Verdict.Checked || !rep.Verdict.OK {
		t.Errorf("verdict %+v", rep.Verdict)
	}
}

func TestClassOf(t *testing.T) {
	r := &runner{o: Options{Abusive: 0.3}}
	counts := map[class]int{}
	for i := range int64(1000) {
		counts[r.classOf(i)]++
	}
	if counts[classHonest] != 700 || counts[classNoSession] != 100 || counts[classBadToken] != 100 || counts[classTooFast] != 100 {
		t.Errorf("classes %v", counts)
	}
	if c := (&runner{}).classOf(5); c != classHonest {
		t.Errorf("no abuse: class %v", c)
	}
}

// TestBadTokenTurns: the bad-token client uses its sessions and forged
// tokens evenly whatever the abusive share (it once chose by iteration
// number, and with a share of 0.3 used only half of its sessions).
func TestBadTokenTurns(t *testing.T) {
	for _, share := range []float64{0.3, 0.5, 0.1, 0.9} {
		p := &pool{honest: 100, auth: make([]string, 100+abusiveSessions)}
		for i := range p.auth {
			p.auth[i] = fmt.Sprintf("Bearer s%d", i)
		}
		r := &runner{o: Options{Abusive: share}, pool: p}
		sessions, tokens := map[string]int{}, map[string]int{}
		n := 0
		for i := range int64(24 * 40 * 10) {
			if r.classOf(i) != classBadToken {
				continue
			}
			if turn := r.abusiveTurn(i); turn != int64(n) {
				t.Fatalf("share %v: bad-token iteration %d has turn %d, want %d", share, i, turn, n)
			}
			n++
			auth, tok := r.badToken(i)
			if auth == p.auth[p.tooFastSession()] || slices.Index(p.auth, auth) < 100 {
				t.Fatalf("share %v: bad-token iteration %d uses session %q, not one of its own", share, i, auth)
			}
			sessions[auth]++
			tokens[tok]++
		}
		if len(sessions) != badTokenSessions {
			t.Errorf("share %v: %d sessions used, want %d: %v", share, len(sessions), badTokenSessions, sessions)
		}
		for s, c := range sessions {
			if c != n/badTokenSessions {
				t.Errorf("share %v: session %q used %d times of %d", share, s, c, n)
			}
		}
		if len(tokens) != len(forgedTokens) {
			t.Errorf("share %v: forged tokens used %v", share, tokens)
		}
	}
}

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name           string
		o              Options
		shoppers, warm int
	}{
		{"open", Options{Rate: 1000, Warmup: 2 * time.Second, Duration: 10 * time.Second}, 13201, 2200},
		{"closed", Options{VUs: 64, Warmup: 2 * time.Second, Duration: 10 * time.Second}, 200000, 33333},
		{"requests", Options{VUs: 64, Warmup: 2 * time.Second, Requests: 1000}, 250 + 1001, 250},
		{"requests, no warm-up", Options{VUs: 64, Requests: 1000}, 1001, 0},
		{"mixed", Options{VUs: 8, Scenario: ScenarioMixed, Abusive: 0.5, Requests: 100}, 51 + 8, 0}, // a virtual user each of slack
		{"given", Options{VUs: 8, Requests: 100, Warmup: time.Second, Shoppers: 150}, 150, 25},
	} {
		p := planFor(tc.o)
		if p.shoppers != tc.shoppers || p.warmupShoppers != tc.warm || p.stock != int64(tc.shoppers) {
			t.Errorf("%s: %+v, want %d shoppers (%d for the warm-up)", tc.name, p, tc.shoppers, tc.warm)
		}
	}
}

func TestJSONString(t *testing.T) {
	b := []byte(`{"status":"issued", "token" : "abc.def", "tokenId":"01J","note":"the \"token\" key","esc":"a\"b\u0041"}`)
	for key, want := range map[string]string{"token": "abc.def", "tokenId": "01J", "status": "issued", "esc": `a"bA`, "nope": ""} {
		if got := jsonString(b, key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if got := jsonString([]byte(`{"token":12}`), "token"); got != "" {
		t.Errorf("a number read as %q", got)
	}
	if got := jsonString([]byte(`{"x":"token","token":"t"}`), "token"); got != "t" {
		t.Errorf("a value like the key: %q", got)
	}
}

// TestEndsInWarmup: a run whose shoppers run out in its warm-up has an
// empty measured phase, not a broken one.
func TestEndsInWarmup(t *testing.T) {
	f := newFake(t)
	rep := bench(t, Options{URL: f.URL, AdminToken: "admin", Rate: 1000, Duration: time.Second, Warmup: 5 * time.Second, Shoppers: 20})
	if rep.Requests != 0 || rep.DurationSeconds < 0 || rep.DurationSeconds > 1 || !rep.Shoppers.Exhausted || !strings.Contains(rep.Notes[0], "during the warm-up") {
		t.Errorf("requests %d duration %v shoppers %+v notes %q", rep.Requests, rep.DurationSeconds, rep.Shoppers, rep.Notes)
	}
}
