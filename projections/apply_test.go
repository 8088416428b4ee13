package projections

import (
	"context"
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
	// a normal tail
	msgs2, _ := benchWorkload(t, 3)
	base := uint64(len(msgs))
	for _, m := range msgs2 {
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
	}
}
