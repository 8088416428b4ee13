package handlers

import (
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func testSale() Sale {
	return Sale{ID: "s1", Stock: 2, Quota: 3, QuotaBuffer: 1.5, PerUserLimit: 1, TokenTTL: 5 * time.Minute,
		OpensAt: t0, ClosesAt: t0.Add(time.Hour)}
}

var seq int

func req(shopper string, data any) events.Event {
	seq++
	typ := events.TypeTokenRequested
	if _, ok := data.(*events.PurchaseRequested); ok {
		typ = events.TypePurchaseRequested
	}
	return events.Event{ID: fmt.Sprintf("01JREQ%020d", seq), Type: typ, Version: events.SchemaVersion, Sale: "s1", Time: t0, Shopper: shopper, Data: data}
}

func tokenReq(shopper string) events.Event { return req(shopper, &events.TokenRequested{}) }
func buyReq(shopper, token string) events.Event {
	return req(shopper, &events.PurchaseRequested{TokenID: token})
}

// issue gives shopper a token at t and returns its id.
func issue(t *testing.T, s *State, shopper string, at time.Time) string {
	t.Helper()
	out := s.Decide(at, []events.Event{tokenReq(shopper)})
	d, ok := out[len(out)-1].Data.(*events.TokenIssued)
	if !ok {
		t.Fatalf("issue to %s: got %s %+v", shopper, out[len(out)-1].Type, out[len(out)-1].Data)
	}
	return d.TokenID
}

func buy(t *testing.T, s *State, shopper, token string, at time.Time) {
	t.Helper()
	out := s.Decide(at, []events.Event{buyReq(shopper, token)})
	if out[len(out)-1].Type != events.TypePurchaseAccepted {
		t.Fatalf("buy by %s: got %s %+v", shopper, out[len(out)-1].Type, out[len(out)-1].Data)
	}
}

func reasonOf(e events.Event) string {
	switch d := e.Data.(type) {
	case *events.TokenDenied:
		return d.Reason
	case *events.PurchaseRefused:
		return d.Reason
	}
	return ""
}

func TestDecide(t *testing.T) {
	open := t0.Add(time.Minute)
	cases := []struct {
		name    string
		setup   func(t *testing.T, s *State) events.Event // returns the request to decide
		at      time.Time
		typ     events.Type
		reason  string
		check   func(t *testing.T, s *State, d events.Event)
		counter events.Head // expected Issued/Expired/Redeemed after
	}{
		{name: "token before opening", at: t0.Add(-time.Second),
			setup: func(t *testing.T, s *State) events.Event { return tokenReq("a") },
			typ:   events.TypeTokenDenied, reason: events.ReasonNotOpen},
		{name: "token at opening", at: t0,
			setup: func(t *testing.T, s *State) events.Event { return tokenReq("a") },
			typ:   events.TypeTokenIssued, counter: events.Head{Issued: 1},
			check: func(t *testing.T, s *State, d events.Event) {
				x := d.Data.(*events.TokenIssued)
				if !x.ExpiresAt.Equal(t0.Add(5*time.Minute)) || x.AlreadyIssued || x.TokenID != d.Request {
					t.Errorf("issued %+v", x)
				}
			}},
		{name: "token while open, expiry rounded up to the second", at: open.Add(300 * time.Millisecond),
			setup: func(t *testing.T, s *State) events.Event { return tokenReq("a") },
			typ:   events.TypeTokenIssued, counter: events.Head{Issued: 1},
			check: func(t *testing.T, s *State, d events.Event) {
				if x := d.Data.(*events.TokenIssued); !x.ExpiresAt.Equal(open.Add(5*time.Minute + time.Second)) {
					t.Errorf("expiresAt %v", x.ExpiresAt)
				}
			}},
		{name: "token asked again returns the same token", at: open,
			setup: func(t *testing.T, s *State) events.Event { issue(t, s, "a", open); return tokenReq("a") },
			typ:   events.TypeTokenIssued, counter: events.Head{Issued: 1},
			check: func(t *testing.T, s *State, d events.Event) {
				if x := d.Data.(*events.TokenIssued); !x.AlreadyIssued || x.TokenID == d.Request {
					t.Errorf("repeat %+v", x)
				}
			}},
		{name: "token after the shopper bought the limit", at: open,
			setup: func(t *testing.T, s *State) events.Event {
				buy(t, s, "a", issue(t, s, "a", open), open)
				return tokenReq("a")
			},
			typ: events.TypeTokenDenied, reason: events.ReasonLimitReached, counter: events.Head{Issued: 1, Redeemed: 1}},
		{name: "token when quota is held", at: open,
			setup: func(t *testing.T, s *State) events.Event {
				issue(t, s, "a", open)
				issue(t, s, "b", open)
				issue(t, s, "c", open)
				return tokenReq("d")
			},
			typ: events.TypeTokenDenied, reason: events.ReasonQuotaExhausted, counter: events.Head{Issued: 3}},
		{name: "redeemed token gives no quota back", at: open,
			setup: func(t *testing.T, s *State) events.Event {
				buy(t, s, "a", issue(t, s, "a", open), open)
				issue(t, s, "b", open)
				issue(t, s, "c", open)
				return tokenReq("d")
			},
			typ: events.TypeTokenDenied, reason: events.ReasonQuotaExhausted, counter: events.Head{Issued: 3, Redeemed: 1}},
		{name: "expired token gives quota back", at: open.Add(5*time.Minute + time.Second),
			setup: func(t *testing.T, s *State) events.Event {
				issue(t, s, "a", open)
				issue(t, s, "b", open)
				issue(t, s, "c", open)
				return tokenReq("d")
			},
			typ: events.TypeTokenIssued, counter: events.Head{Issued: 4, Expired: 3}},
		{name: "token when sold out", at: open,
			setup: func(t *testing.T, s *State) events.Event {
				buy(t, s, "a", issue(t, s, "a", open), open)
				buy(t, s, "b", issue(t, s, "b", open), open)
				return tokenReq("c")
			},
			typ: events.TypeTokenDenied, reason: events.ReasonSoldOut, counter: events.Head{Issued: 2, Redeemed: 2}},
		{name: "token after closing", at: t0.Add(time.Hour),
			setup: func(t *testing.T, s *State) events.Event { return tokenReq("a") },
			typ:   events.TypeTokenDenied, reason: events.ReasonClosed},
		{name: "purchase before opening", at: t0.Add(-time.Second),
			setup: func(t *testing.T, s *State) events.Event { return buyReq("a", "01JNOSUCHTOKEN00000000000") },
			typ:   events.TypePurchaseRefused, reason: events.ReasonNotOpen},
		{name: "purchase with a valid token", at: open,
			setup: func(t *testing.T, s *State) events.Event { return buyReq("a", issue(t, s, "a", open)) },
			typ:   events.TypePurchaseAccepted, counter: events.Head{Issued: 1, Redeemed: 1},
			check: func(t *testing.T, s *State, d events.Event) {
				if x := d.Data.(*events.PurchaseAccepted); x.OrderID != d.Request || x.Units != 1 {
					t.Errorf("accepted %+v", x)
				}
			}},
		{name: "purchase with a token no longer held (reclaimed)", at: open,
			setup: func(t *testing.T, s *State) events.Event { return buyReq("a", "01JNOSUCHTOKEN00000000000") },
			typ:   events.TypePurchaseRefused, reason: events.ReasonTokenExpired},
		{name: "purchase with another shopper's token", at: open,
			setup: func(t *testing.T, s *State) events.Event { return buyReq("b", issue(t, s, "a", open)) },
			typ:   events.TypePurchaseRefused, reason: events.ReasonTokenNotYours, counter: events.Head{Issued: 1}},
		{name: "purchase with a used token names the order", at: open,
			setup: func(t *testing.T, s *State) events.Event {
				tok := issue(t, s, "a", open)
				buy(t, s, "a", tok, open)
				return buyReq("a", tok)
			},
			typ: events.TypePurchaseRefused, reason: events.ReasonTokenUsed, counter: events.Head{Issued: 1, Redeemed: 1},
			check: func(t *testing.T, s *State, d events.Event) {
				if x := d.Data.(*events.PurchaseRefused); x.OrderID == "" {
					t.Errorf("token_used without order: %+v", x)
				}
			}},
		{name: "used token after closing still names the order", at: t0.Add(2 * time.Hour),
			setup: func(t *testing.T, s *State) events.Event {
				tok := issue(t, s, "a", open)
				buy(t, s, "a", tok, open)
				return buyReq("a", tok)
			},
			typ: events.TypePurchaseRefused, reason: events.ReasonTokenUsed, counter: events.Head{Issued: 1, Redeemed: 1}},
		{name: "purchase with an expired token", at: open.Add(5 * time.Minute),
			setup: func(t *testing.T, s *State) events.Event { return buyReq("a", issue(t, s, "a", open)) },
			typ:   events.TypePurchaseRefused, reason: events.ReasonTokenExpired, counter: events.Head{Issued: 1, Expired: 1}},
		{name: "purchase one instant before expiry", at: open.Add(5*time.Minute - time.Nanosecond),
			setup: func(t *testing.T, s *State) events.Event { return buyReq("a", issue(t, s, "a", open)) },
			typ:   events.TypePurchaseAccepted, counter: events.Head{Issued: 1, Redeemed: 1}},
		{name: "purchase when sold out", at: open,
			setup: func(t *testing.T, s *State) events.Event {
				tok := issue(t, s, "c", open)
				buy(t, s, "a", issue(t, s, "a", open), open)
				buy(t, s, "b", issue(t, s, "b", open), open)
				return buyReq("c", tok)
			},
			typ: events.TypePurchaseRefused, reason: events.ReasonSoldOut, counter: events.Head{Issued: 3, Redeemed: 2}},
		{name: "purchase after closing", at: t0.Add(time.Hour),
			setup: func(t *testing.T, s *State) events.Event { return buyReq("a", issue(t, s, "a", open)) },
			typ:   events.TypePurchaseRefused, reason: events.ReasonClosed, counter: events.Head{Issued: 1, Expired: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewState(testSale())
			r := tc.setup(t, s)
			out := s.Decide(tc.at, []events.Event{r})
			d := out[len(out)-1]
			if d.Type != tc.typ || reasonOf(d) != tc.reason {
				t.Fatalf("got %s %q, want %s %q", d.Type, reasonOf(d), tc.typ, tc.reason)
			}
			if d.Request != r.ID || d.Shopper != r.Shopper || d.Sale != "s1" || !d.Time.Equal(tc.at) {
				t.Errorf("decision envelope %+v does not answer %s", d, r.ID)
			}
			h := s.Head
			if h.Issued != tc.counter.Issued || h.Expired != tc.counter.Expired || h.Redeemed != tc.counter.Redeemed {
				t.Errorf("counters issued/expired/redeemed = %d/%d/%d, want %d/%d/%d",
					h.Issued, h.Expired, h.Redeemed, tc.counter.Issued, tc.counter.Expired, tc.counter.Redeemed)
			}
			if tc.check != nil {
				tc.check(t, s, d)
			}
			checkInvariants(t, s)
		})
	}
}

func checkInvariants(t *testing.T, s *State) {
	t.Helper()
	h := s.Head
	if h.Redeemed > h.Stock || h.Issued-h.Expired > h.Quota || h.Outstanding() < 0 {
		t.Fatalf("invariant broken: %+v", h)
	}
	tokens, _, expiring := s.Sizes()
	if int64(expiring) != h.Outstanding() || int64(tokens) != h.Outstanding()+h.Redeemed {
		t.Fatalf("state sizes tokens=%d expiring=%d disagree with head %+v", tokens, expiring, h)
	}
}

// TestDecideIsDeterministic re-runs a random workload and checks the second
// run gives byte-identical events, and that Apply rebuilds the same state.
func TestDecideIsDeterministic(t *testing.T) {
	sale := testSale()
	sale.Stock, sale.Quota, sale.TokenTTL = 50, 60, 3*time.Second
	var batches [][]events.Event
	var times []time.Time
	held := map[string]string{}
	for b := 0; b < 200; b++ {
		var reqs []events.Event
		for i := 0; i < 7; i++ {
			sh := fmt.Sprintf("shopper%d", (b*7+i*13)%97)
			if tok, ok := held[sh]; ok && (b+i)%3 == 0 {
				reqs = append(reqs, buyReq(sh, tok))
			} else {
				reqs = append(reqs, tokenReq(sh))
			}
		}
		batches = append(batches, reqs)
		times = append(times, t0.Add(time.Duration(b)*150*time.Millisecond))
		// learn tokens from a scratch run so purchases reference real ones
		s := NewState(sale)
		for i := range batches {
			for _, d := range s.Decide(times[i], batches[i]) {
				if x, ok := d.Data.(*events.TokenIssued); ok {
					held[d.Shopper] = x.TokenID
				}
			}
		}
	}
	run := func(viaCodec bool) ([][]byte, *State) {
		s := NewState(sale)
		var out [][]byte
		for i := range batches {
			reqs := batches[i]
			if viaCodec { // as the auditor sees them: encoded, stored, decoded
				b, err := events.EncodeRequests(events.RequestBatch{Requests: reqs})
				if err != nil {
					t.Fatal(err)
				}
				rb, err := events.DecodeRequests(b)
				if err != nil {
					t.Fatal(err)
				}
				reqs = rb.Requests
			}
			for _, d := range s.Decide(times[i], reqs) {
				b, err := events.EncodeEvent(d)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, b)
			}
			checkInvariants(t, s)
		}
		return out, s
	}
	a, sa := run(false)
	b, _ := run(true)
	if len(a) != len(b) {
		t.Fatalf("re-run gave %d events, first run %d", len(b), len(a))
	}
	for i := range a {
		if string(a[i]) != string(b[i]) {
			t.Fatalf("event %d differs:\n%s\n%s", i, a[i], b[i])
		}
	}
	if sa.Head.Redeemed == 0 || sa.Head.Expired == 0 {
		t.Fatalf("workload too weak: %+v", sa.Head)
	}
	// Apply rebuilds the same head from the decisions alone.
	s, rebuilt := NewState(sale), NewState(sale)
	for i := range batches {
		ds := s.Decide(times[i], batches[i])
		h := s.Head
		h.Version = uint64(i + 1)
		s.Head = h
		if err := rebuilt.Apply(events.DecisionBatch{Sale: "s1", DecidedAt: times[i], Head: h, Events: ds}); err != nil {
			t.Fatal(err)
		}
	}
	if rebuilt.Head != s.Head {
		t.Fatalf("rebuilt head %+v, decided %+v", rebuilt.Head, s.Head)
	}
	ta, sha, ea := s.Sizes()
	tb, shb, eb := rebuilt.Sizes()
	if ta != tb || sha != shb || ea != eb {
		t.Fatalf("rebuilt sizes %d/%d/%d, decided %d/%d/%d", tb, shb, eb, ta, sha, ea)
	}
}

func TestApplyRefusesAHeadThatDisagrees(t *testing.T) {
	s := NewState(testSale())
	ds := s.Decide(t0, []events.Event{tokenReq("a")})
	bad := s.Head
	bad.Version, bad.Issued = 1, 2
	if err := NewState(testSale()).Apply(events.DecisionBatch{Sale: "s1", Head: bad, Events: ds}); err == nil {
		t.Fatal("Apply accepted a head whose counters its decisions do not give")
	}
}

func TestQuota(t *testing.T) {
	for _, c := range []struct {
		stock  int64
		buffer float64
		want   int64
	}{{200, 1.2, 240}, {100, 1.2, 120}, {1, 1.2, 2}, {3, 1.0, 3}, {7, 1.5, 11}, {100, 1.1, 110}, {3, 1.1, 4}, {1000, 1.001, 1001}, {10, 1.2345675, 13}} {
		if got := Quota(c.stock, c.buffer); got != c.want {
			t.Errorf("Quota(%d, %v) = %d, want %d", c.stock, c.buffer, got, c.want)
		}
	}
}

func TestStatusAt(t *testing.T) {
	s := testSale()
	fresh := events.Head{Stock: 2, Quota: 3}
	sold := events.Head{Stock: 2, Quota: 3, Issued: 2, Redeemed: 2}
	for _, c := range []struct {
		at   time.Time
		h    events.Head
		want Status
	}{
		{t0.Add(-time.Nanosecond), fresh, StatusScheduled},
		{t0, fresh, StatusOpen},
		{t0, sold, StatusSoldOut},
		{t0.Add(time.Hour), fresh, StatusClosed},
		{t0.Add(time.Hour), sold, StatusClosed},
	} {
		if got := s.StatusAt(c.at, c.h); got != c.want {
			t.Errorf("StatusAt(%v, %+v) = %s, want %s", c.at, c.h, got, c.want)
		}
	}
}

// TestMassExpiryIsSpreadOverBatches: however many tokens run out at the same
// second, one batch reclaims at most MaxExpiriesPerBatch; a shopper whose
// expired token is not reclaimed yet is never handed it again.
func TestMassExpiryIsSpreadOverBatches(t *testing.T) {
	sale := testSale()
	sale.Stock, sale.Quota, sale.TokenTTL = 5000, 5000, time.Second
	s := NewState(sale)
	var reqs []events.Event
	for i := 0; i < 1500; i++ {
		reqs = append(reqs, tokenReq(fmt.Sprintf("s%d", i)))
	}
	s.Decide(t0, reqs)
	later := t0.Add(2 * time.Second)
	out := s.Decide(later, nil)
	if len(out) != MaxExpiriesPerBatch || s.Head.Expired != MaxExpiriesPerBatch {
		t.Fatalf("first batch reclaimed %d (head %d), want %d", len(out), s.Head.Expired, MaxExpiriesPerBatch)
	}
	// s1499 holds an expired token not reclaimed yet: asking again reclaims it
	// inline and issues a new one.
	out = s.Decide(later, []events.Event{tokenReq("s1499")})
	last := out[len(out)-1]
	x, ok := last.Data.(*events.TokenIssued)
	if !ok || x.AlreadyIssued || !x.ExpiresAt.After(later) {
		t.Fatalf("shopper with an expired token got %s %+v", last.Type, last.Data)
	}
	if prev := out[len(out)-2]; prev.Type != events.TypeTokenExpired || prev.Shopper != "s1499" {
		t.Fatalf("no inline reclaim before the new token: %s %s", prev.Type, prev.Shopper)
	}
	for s.Head.Expired < 1500 {
		if out := s.Decide(later, nil); len(out) == 0 {
			t.Fatalf("reclaim stalled at %d", s.Head.Expired)
		}
	}
	checkInvariants(t, s)
}

func updateReq(action string) events.Event {
	return req("operator", &events.SaleUpdateRequested{Action: action})
}

// TestOpenAndClose: an operator's open and close are decided in order, change
// what the next requests get, and are rebuilt by Apply.
func TestOpenAndClose(t *testing.T) {
	sale := testSale()
	sale.OpensAt, sale.ClosesAt = t0.Add(time.Hour), time.Time{}
	s := NewState(sale)
	at := t0
	// Scheduled: a token request in the same batch before the open is
	// refused, the one after it is served.
	out := s.Decide(at, []events.Event{tokenReq("a"), updateReq(events.ActionOpen), tokenReq("b")})
	if reasonOf(out[0]) != events.ReasonNotOpen || out[1].Type != events.TypeSaleUpdated || out[2].Type != events.TypeTokenIssued {
		t.Fatalf("open: %s %q, %s, %s", out[0].Type, reasonOf(out[0]), out[1].Type, out[2].Type)
	}
	if u := out[1].Data.(*events.SaleUpdated); !u.OpensAt.Equal(at) || !u.ClosesAt.IsZero() {
		t.Fatalf("open: schedule %+v", u)
	}
	at = at.Add(time.Minute)
	out = s.Decide(at, []events.Event{updateReq(events.ActionClose), tokenReq("c"), buyReq("b", out[2].Data.(*events.TokenIssued).TokenID)})
	if u := out[0].Data.(*events.SaleUpdated); !u.ClosesAt.Equal(at) || reasonOf(out[1]) != events.ReasonClosed || reasonOf(out[2]) != events.ReasonClosed {
		t.Fatalf("close: %+v, then %q and %q", u, reasonOf(out[1]), reasonOf(out[2]))
	}
	if got := s.Sale.StatusAt(at, s.Head); got != StatusClosed {
		t.Fatalf("status after close: %s", got)
	}
	at = at.Add(time.Minute)
	out = s.Decide(at, []events.Event{updateReq(events.ActionOpen), tokenReq("c")})
	if u := out[0].Data.(*events.SaleUpdated); !u.ClosesAt.IsZero() || out[1].Type != events.TypeTokenIssued {
		t.Fatalf("reopen: %+v then %s %q", u, out[1].Type, reasonOf(out[1]))
	}
	opens, closes, ok := Schedule(s.Head)
	if !ok || !opens.Equal(t0) || !closes.IsZero() {
		t.Fatalf("head schedule %v %v %v", opens, closes, ok)
	}
	// Apply rebuilds the schedule from the decisions alone.
	r := NewState(sale)
	if err := r.Apply(events.DecisionBatch{Sale: "s1", Head: func() events.Head { h := s.Head; h.Version = 1; return h }(),
		Events: append(append([]events.Event{}, s.Decide(at, nil)...), events.Event{Type: events.TypeSaleUpdated,
			Data: &events.SaleUpdated{OpensAt: t0}}, events.Event{Type: events.TypeTokenIssued, Shopper: "b",
			Data: &events.TokenIssued{TokenID: "tb", ExpiresAt: at.Add(time.Hour)}}, events.Event{Type: events.TypeTokenIssued, Shopper: "c",
			Data: &events.TokenIssued{TokenID: "tc", ExpiresAt: at.Add(time.Hour)}})}); err != nil {
		t.Fatal(err)
	}
	if !r.Sale.OpensAt.Equal(t0) || !r.Sale.ClosesAt.IsZero() {
		t.Fatalf("rebuilt schedule %v %v", r.Sale.OpensAt, r.Sale.ClosesAt)
	}
}
