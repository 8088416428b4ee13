package projections

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
)

// anomalyWorkload is messages with anomalies of every kind the fold
// records (repeated requests, decisions and tokens among them), then a few
// rounds of benchWorkload. Split into transactions, the repeats fall within
// one transaction and across two.
func anomalyWorkload(t *testing.T) []Msg {
	var msgs []Msg
	add := func(subject string, b []byte, err error) uint64 {
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(len(msgs) + 1)
		msgs = append(msgs, Msg{Seq: seq, Subject: subject, Data: b})
		return seq
	}
	s := newSale("s2")
	reqs := func(evs ...events.Event) uint64 {
		b, err := events.EncodeRequests(events.RequestBatch{Requests: evs})
		s.cursor = add(events.RequestSubject(s.id), b, err)
		return s.cursor
	}
	dec := func(h events.Head, evs ...events.Event) uint64 {
		b, err := events.EncodeDecisions(s.batch(h, evs...))
		return add(events.DecisionSubject(s.id), b, err)
	}
	// requests before the sale exists
	early := s.tokenReq("early")
	reqs(early)
	b, err := events.EncodeEvent(s.created(5))
	add(events.SaleSubject(s.id), b, err)
	h := events.Head{Stock: 5, Quota: 7}
	a, bb := s.tokenReq("alice"), s.tokenReq("bob <&> \"ü\"\u2028")
	reqs(a, bb)
	add(events.RequestSubject("s2"), []byte("{not json"), nil)
	ia, ib := s.issued(a), s.issued(bb)
	dec(h, ia, ib)
	dec(h, s.denied(a, events.ReasonLimitReached))
	buy := s.purchaseReq("bob <&> \"ü\"\u2028", "01JZZZZZZZZZZZZZZZZZZZZZZZ")
	reqs(buy)
	dec(h, s.accepted(buy))
	ghost := s.tokenReq("ghost")
	dec(h, s.denied(ghost, events.ReasonSoldOut))
	dec(h, s.expired(bb.ID))
	dec(h, s.expired(bb.ID))
	s.version--
	dec(h)
	c := s.tokenReq("carol")
	reqs(c)
	reqs(c)
	reqs(c, c)
	ic := s.issued(c)
	dec(h, ic)
	// the same decision id again, same tx and later
	dec(h, ic, ic)
	ca := s.tokenReq("carol")
	reqs(ca)
	dec(h, s.reissued(ca, ic))
	// buy with carol's token twice; the second refused and accepted again
	p1, p2 := s.purchaseReq("carol", c.ID), s.purchaseReq("mallory", c.ID)
	reqs(p1, p2)
	dec(h, s.accepted(p1))
	dec(h, s.accepted(p2))
	// expire a redeemed token
	dec(h, s.expired(c.ID))
	d := s.tokenReq("dave")
	reqs(d)
	id := s.issued(d)
	id.Data.(*events.TokenIssued).TokenID = "other-token"
	dec(h, id)
	id2 := s.issued(d)
	dec(h, id2)
	// a request answered by the wrong type, other shopper
	e := s.tokenReq("erin")
	reqs(e)
	acc := s.decision(events.TypePurchaseAccepted, &e, &events.PurchaseAccepted{TokenID: "", OrderID: "x", Units: 1})
	acc.Shopper = "frank"
	dec(h, acc)
	// a token issued in a zone other than UTC, at odd times
	f := s.tokenReq("fay")
	f.Time = f.Time.In(time.FixedZone("X", 5*3600+1800))
	reqs(f)
	ifa := s.issued(f)
	ifa.Data.(*events.TokenIssued).ExpiresAt = time.Date(2030, 1, 2, 10, 0, 0, 120000, time.FixedZone("Y", -3600))
	dec(h, ifa)
	// another sale, then decisions naming the wrong sale
	s3 := newSale("s3")
	b, err = events.EncodeEvent(s3.created(3))
	add(events.SaleSubject("s3"), b, err)
	g := s3.tokenReq("gus")
	b, err = events.EncodeRequests(events.RequestBatch{Requests: []events.Event{g}})
	add(events.RequestSubject("s2"), b, err)
	dec(h, s.issued(g))
	add("fg.other.x", []byte("x"), nil)
	// order events: honest, refused, and for an order never accepted
	ord := func(e events.Event) uint64 {
		b, err := events.EncodeEvent(e)
		return add(events.OrderSubject(e.Sale, e.Request), b, err)
	}
	ord(s.attemptFailed(p1, 1))
	ord(s.requeued(p1))
	ord(s.confirmed(p1, "P-1", 2))
	ord(s.confirmed(p1, "P-1", 2))
	ord(s.failed(p2, events.OrderFailedRejected, 1, "provider: 400 \"bad\" <x>"))
	ord(s.requeued(p2))
	ord(s.confirmed(ghost, "P-2", 1))
	// a normal tail: more orders in one transaction than a buffer holds,
	// then their outcomes
	msgs2, _ := benchWorkload(t, 4)
	base := uint64(len(msgs))
	for _, m := range withOutcomes(t, msgs2) {
		m.Seq += base
		msgs = append(msgs, m)
	}
	return msgs
}

// TestFastPathIsRowByRow applies messages full of anomalies in
// transactions of many sizes, on the fast path (Apply) and row by row, and
// wants the same views: the fast path's buffered inserts and caches change
// nothing, and a row that was already there sends the transaction row by
// row.
func TestFastPathIsRowByRow(t *testing.T) {
	ctx := context.Background()
	msgs := anomalyWorkload(t)
	var want string
	for _, split := range []int{1, 2, 3, 7, 512} {
		fast, _ := openStore(t)
		exact, _ := openStore(t)
		for i := 0; i < len(msgs); i += split {
			batch := msgs[i:min(i+split, len(msgs))]
			if err := fast.Apply(ctx, batch); err != nil {
				t.Fatal(err)
			}
			if err := exact.applyTx(ctx, batch, true); err != nil {
				t.Fatal(err)
			}
		}
		got := dump(t, fast)
		if ex := dump(t, exact); got != ex {
			t.Fatalf("transactions of %d messages: fast path\n%s\nrow by row\n%s", split, got, ex)
		}
		if want == "" {
			want = got
		} else if got != want {
			t.Errorf("transactions of %d messages differ from 1:\n%s\nwant\n%s", split, got, want)
		}
		if n := len(anomalies(t, fast)); n < 20 {
			t.Errorf("transactions of %d messages: %d anomalies, want 20 or more", split, n)
		}
		// The outcomes of the tail's 160 orders are folded.
		if c, err := fast.OrderCounts(ctx, "bench"); err != nil || c != (OrderCounts{Retrying: 40, Confirmed: 80, Pending: 40}) {
			t.Errorf("transactions of %d messages: orders of the tail %+v, %v", split, c, err)
		}
	}
}

// withOutcomes is msgs followed by fulfilment events for every order they
// accept: a quarter confirmed at once, a quarter retrying, a quarter
// confirmed after a failure, a quarter failed and requeued.
func withOutcomes(t *testing.T, msgs []Msg) []Msg {
	var orders []events.Event
	shoppers := map[string]string{}
	for _, m := range msgs {
		if rb, err := events.DecodeRequests(m.Data); err == nil {
			for _, e := range rb.Requests {
				shoppers[e.ID] = e.Shopper
			}
		}
		if db, err := events.DecodeDecisions(m.Data); err == nil {
			for _, e := range db.Events {
				if x, ok := e.Data.(*events.PurchaseAccepted); ok {
					orders = append(orders, events.Event{ID: x.OrderID, Sale: e.Sale, Shopper: shoppers[e.Request]})
				}
			}
		}
	}
	out := slices.Clone(msgs)
	ord := func(e events.Event) {
		b, err := events.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Msg{Seq: uint64(len(out) + 1), Subject: events.OrderSubject(e.Sale, e.Request), Data: b})
	}
	for i, o := range orders {
		s := newSale(o.Sale)
		switch i % 4 {
		case 0:
			ord(s.confirmed(o, "R-"+o.ID, 1))
		case 1:
			ord(s.attemptFailed(o, 1))
		case 2:
			ord(s.attemptFailed(o, 1))
			ord(s.confirmed(o, "R-"+o.ID, 2))
		case 3:
			ord(s.failed(o, events.OrderFailedDeadline, 0, ""))
			ord(s.requeued(o))
		}
	}
	return out
}

// TestOrderOutcomesFastPath folds the outcomes of more orders than a
// buffer holds in the transaction that accepted them, on the fast path and
// row by row: an outcome updates its order in the buffer or, once the
// buffer was written, in the table.
func TestOrderOutcomesFastPath(t *testing.T) {
	ctx := context.Background()
	msgs0, _ := benchWorkload(t, 4)
	msgs := withOutcomes(t, msgs0)
	var want string
	for _, split := range []int{len(msgs), 9, 1} {
		fast, _ := openStore(t)
		exact, _ := openStore(t)
		for i := 0; i < len(msgs); i += split {
			batch := msgs[i:min(i+split, len(msgs))]
			if err := fast.Apply(ctx, batch); err != nil {
				t.Fatal(err)
			}
			if err := exact.applyTx(ctx, batch, true); err != nil {
				t.Fatal(err)
			}
		}
		got := dump(t, fast)
		if ex := dump(t, exact); got != ex {
			t.Fatalf("transactions of %d messages: fast path\n%s\nrow by row\n%s", split, got, ex)
		}
		if want == "" {
			want = got
		} else if got != want {
			t.Errorf("transactions of %d messages differ:\n%s\nwant\n%s", split, got, want)
		}
		if a := anomalies(t, fast); len(a) != 0 {
			t.Errorf("anomalies: %v", a[:min(3, len(a))])
		}
		if c, err := fast.OrderCounts(ctx, "bench"); err != nil || c != (OrderCounts{Retrying: 40, Confirmed: 80, Pending: 40}) {
			t.Errorf("transactions of %d messages: orders %+v, %v", split, c, err)
		}
	}
}
